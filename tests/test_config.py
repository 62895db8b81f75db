"""Config and exit profile: validation, JSON round trips, presets, ES-to-device mapping."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grle_jax.config import SCENARIOS, Config
from grle_jax.errors import ConfigError
from grle_jax.profile import DEFAULT_PROFILE, Profile


def test_defaults_follow_model_md():
    cfg = Config()
    assert (cfg.devices, cfg.servers, cfg.slot_ms, cfg.deadline_ms, cfg.overdue, cfg.rho) == (14, 2, 20.0, 30.0, "abort", 0.0)
    assert cfg.size_kb == (50.0, 100.0) and cfg.rate_mbps == (20.0, 100.0)
    st = cfg.static()
    assert (st.n, st.m, st.e, st.options) == (14, 2, 5, 10)
    np.testing.assert_allclose(cfg.params().c, [[0.36, 0.46, 0.54, 0.71, 1.26], [0.73, 0.89, 1.06, 1.40, 2.42]], rtol=1e-6)
    np.testing.assert_allclose(cfg.params().acc, [0.8, 0.85, 0.885, 0.905, 0.935], rtol=1e-6)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_presets(name):
    cfg = Config.for_scenario(name, devices=3)
    assert cfg.scenario == name and cfg.devices == 3
    assert cfg.phi_range == SCENARIOS[name]["phi_range"]
    assert cfg.csi_range == (SCENARIOS[name]["csi_range"])


def test_csi_preset_values():
    cfg = Config.for_scenario("csi")
    assert cfg.phi_range == (0.25, 1.0) and cfg.eps_range == (0.8, 1.2) and cfg.csi_range == (0.8, 1.2)


def test_json_round_trip(tmp_path):
    cfg = Config.for_scenario("inference", devices=7, servers=3, overdue="keep", rho=0.5, p_link=0.9)
    p = tmp_path / "c.json"
    cfg.save(str(p))
    assert Config.load(str(p)) == cfg


@pytest.mark.parametrize("field,value", [
    ("devices", 0), ("servers", -1), ("devices", 2.5), ("slot_ms", 0.0), ("deadline_ms", -1.0),
    ("deadline_ms", float("nan")), ("overdue", "later"), ("scenario", "moon"), ("size_kb", (100.0, 50.0)),
    ("rate_mbps", (0.0, 10.0)), ("phi_range", (0.5, 1.5)), ("p_link", 1.01), ("p_active", -0.5),
    ("rho", -0.1), ("topology_every", 0), ("eps_range", (1.0,)),
])
def test_validation_names_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        Config(**{field: value})
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_profile_round_trip_and_es_mapping(tmp_path):
    p = tmp_path / "p.json"
    DEFAULT_PROFILE.save(str(p))
    back = Profile.load(str(p))
    assert back == DEFAULT_PROFILE
    # with more ES than device columns, ES m uses column m mod columns
    c = DEFAULT_PROFILE.c_matrix(5)
    np.testing.assert_allclose(c[2], c[0])
    np.testing.assert_allclose(c[3], c[1])
    # an explicit map with a scale
    d = DEFAULT_PROFILE.to_dict()
    d["es_map"] = [{"device": "GTX 1080 Ti", "scale": 2.0}, {"device": 0}]
    prof = Profile.from_dict(d)
    c = prof.c_matrix(3)
    np.testing.assert_allclose(c[0], np.array(DEFAULT_PROFILE.time_ms[1]) * 2.0)
    np.testing.assert_allclose(c[1], DEFAULT_PROFILE.time_ms[0])
    np.testing.assert_allclose(c[2], c[0])


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.update(acc=[0.8]), "profile.acc"),
    (lambda d: d["devices"][0].update(time_ms=[1.0]), "profile.devices[0].time_ms"),
    (lambda d: d["devices"][0]["time_ms"].__setitem__(2, -1.0), "profile.devices[0].time_ms[2]"),
    (lambda d: d["acc"].__setitem__(0, 1.5), "profile.acc[0]"),
    (lambda d: d.update(exits=[1, 3, 4, 7, 18]), "profile.exits"),
    (lambda d: d.update(devices=[]), "profile.devices"),
    (lambda d: d.update(es_map=[{"device": "TPU"}]), "profile.es_map[0].device"),
    (lambda d: d.pop("acc"), "profile.acc"),
])
def test_bad_profiles(mutate, field):
    d = json.loads(json.dumps(DEFAULT_PROFILE.to_dict()))
    mutate(d)
    with pytest.raises(ConfigError) as err:
        Profile.from_dict(d)
    assert err.value.field == field
