"""Baselines (docs/model.md section 6) against the twin, and the run metrics (section 3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_sim as ref
from grle_jax.baselines import greedy_policy, random_policy
from grle_jax.config import Config
from grle_jax.dynamics import evaluate, reachable
from grle_jax.metrics import moving, moving_mean, normalised_reward, summarise, window_sum
from grle_jax.scenario import observe, reset, sample


def _obs(cfg, key, radio=None, es=None):
    static, params = cfg.static(), cfg.params()
    state = reset(static)
    if radio is not None:
        state = state.replace(radio=jnp.asarray(radio, jnp.float32), es=jnp.asarray(es, jnp.float32))
    return static, params, observe(state, sample(key, params, state, static))


def _twin_args(cfg, params, obs):
    f = lambda x: np.asarray(x, np.float64).tolist()  # noqa: E731
    return ({"slot_ms": cfg.slot_ms, "deadline_ms": cfg.deadline_ms, "rho": cfg.rho, "overdue": cfg.overdue},
            f(params.acc), f(params.c), f(obs.radio), f(obs.es), 0.0, f(obs.s), f(obs.r_hat), f(obs.phi),
            [[int(v) for v in row] for row in np.asarray(obs.L)], [int(v) for v in np.asarray(obs.active)])


@pytest.mark.parametrize("seed", range(12))
def test_greedy_matches_twin(seed):
    scen = ["base", "capacity", "inference", "csi"][seed % 4]
    cfg = Config.for_scenario(scen, devices=3 + seed % 4, servers=1 + seed % 3, deadline_ms=[8.0, 15.0, 30.0][seed % 3],
                              p_link=[1.0, 0.6][seed % 2], p_active=[1.0, 0.7][(seed // 2) % 2],
                              overdue=["abort", "keep"][(seed // 3) % 2])
    rng = np.random.default_rng(seed)
    static, params, obs = _obs(cfg, jax.random.key(seed), rng.uniform(0, 6, cfg.devices), rng.uniform(0, 9, cfg.servers))
    ours = np.asarray(jax.jit(greedy_policy, static_argnums=1)(jax.random.key(0), static, params, obs))
    m, e = ref.greedy_decision(*_twin_args(cfg, params, obs))
    twin = np.array([mm * static.e + ee if mm >= 0 else -1 for mm, ee in zip(m, e)])
    # same decision, or (float32 near-ties) the same observed reward
    if not np.array_equal(ours, twin):
        r_ours = float(evaluate(static, params, obs, jnp.asarray(ours)).reward)
        r_twin = float(evaluate(static, params, obs, jnp.asarray(twin)).reward)
        assert r_ours == pytest.approx(r_twin, abs=1e-4), (ours, twin)


def test_random_picks_only_reachable_options_uniformly():
    cfg = Config(devices=4, servers=3, p_link=0.6, p_active=0.8)
    static, params, obs = _obs(cfg, jax.random.key(1))
    mask = np.asarray(reachable(static, obs.L))
    picks = np.asarray(jax.vmap(lambda k: random_policy(k, static, params, obs))(jax.random.split(jax.random.key(2), 4000)))
    active = np.asarray(obs.active)
    for n in range(4):
        col = picks[:, n]
        if not active[n] or not mask[n].any():
            assert (col == -1).all()
            continue
        assert mask[n][col].all()
        counts = np.bincount(col, minlength=static.options)[mask[n]]
        expected = 4000 / mask[n].sum()
        assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))


def test_random_is_the_jth_reachable_option():
    """random_policy picks option number floor(u * count) among the reachable ones (ES-major), u
    the device's uniform from the policy's key: checked against a plain numpy enumeration."""
    cfg = Config(devices=6, servers=3, p_link=0.5, p_active=0.9)
    for seed in range(20):
        static, params, obs = _obs(cfg, jax.random.key(seed))
        key = jax.random.key(100 + seed)
        pick = np.asarray(random_policy(key, static, params, obs))
        u = np.asarray(jax.random.uniform(key, (static.n,)))
        mask = np.asarray(reachable(static, obs.L))
        for n in range(static.n):
            opts = np.flatnonzero(mask[n])
            if not bool(obs.active[n]) or opts.size == 0:
                assert pick[n] == -1
            else:
                assert pick[n] == opts[min(int(np.floor(u[n] * opts.size)), opts.size - 1)]


def test_greedy_beats_random_on_average():
    cfg = Config.for_scenario("capacity", devices=10)
    static, params = cfg.static(), cfg.params()
    both = jax.jit(lambda k, obs: (evaluate(static, params, obs, greedy_policy(None, static, params, obs)).reward,
                                   evaluate(static, params, obs, random_policy(k, static, params, obs)).reward))
    g = r = 0.0
    for i in range(5):
        _, _, obs = _obs(cfg, jax.random.key(i))
        gi, ri = both(jax.random.key(i), obs)
        g, r = g + float(gi), r + float(ri)
    assert g > r


def test_metrics_by_hand():
    counts = {"tasks": np.array([2.0, 2.0, 0.0, 3.0]), "on_time": np.array([1.0, 2.0, 0.0, 3.0]),
              "acc_sum": np.array([0.9, 1.7, 0.0, 2.6]), "reward": np.array([0.9, 1.7, 0.0, 2.6])}
    s = summarise(counts, slot_ms=20.0)
    assert s["ssp"] == pytest.approx(6 / 7)
    assert s["avg_accuracy"] == pytest.approx(5.2 / 7)
    assert s["throughput_per_s"] == pytest.approx(6 / 0.08)
    assert s["throughput_per_slot"] == pytest.approx(1.5)
    assert s["mean_reward"] == pytest.approx(5.2 / 4)
    mv = moving(counts, 20.0, window=2)
    np.testing.assert_allclose(mv["ssp"], [0.5, 3 / 4, 1.0, 1.0])
    np.testing.assert_allclose(mv["throughput_per_slot"], [1.0, 1.5, 1.0, 1.5])
    np.testing.assert_allclose(window_sum(np.arange(5.0), 3), [0, 1, 3, 6, 9])
    np.testing.assert_allclose(moving_mean(np.array([1.0, 3.0, 5.0]), 2), [1.0, 2.0, 4.0])
    # the oracle runs from some slot on (NaN before): those slots are left out, no NaN after them
    np.testing.assert_allclose(moving_mean(np.array([np.nan, np.nan, 1.0, 3.0, 5.0, 7.0]), 3),
                               [np.nan, np.nan, 1.0, 2.0, 3.0, 5.0])
    np.testing.assert_allclose(moving_mean(np.array([[2.0, np.nan, 4.0]]), 2), [[2.0, 2.0, 4.0]])
    np.testing.assert_allclose(normalised_reward([1.0, 0.0, 2.0], [2.0, 0.0, 2.0]), [0.5, 1.0, 1.0])


def test_final_window():
    # docs/model.md section 3: one final window for every command: the last 10 %, at least 50 slots
    from grle_jax.metrics import final_window
    from train.experiments import Cell, sweep_rows

    assert [final_window(s) for s in (10_000, 3000, 501, 499, 50, 20, 1)] == [1000, 300, 50, 50, 50, 20, 1]
    # train.experiments' final_* columns are that window: a run whose last 300 of 3000 slots differ
    S, R = 3000, 2
    recs = {k: np.ones((R, S), np.float32) for k in ("tasks", "on_time", "acc_sum", "reward", "loss")}
    recs["acc_sum"][:, -300:] = 0.5
    recs["acc_sum"][:, -301] = 0.0  # just outside the window: must not count
    cell = Cell(experiment="devices", scenario="base", policy="greedy", n=4, t_ms=20.0, overdue="abort")
    rows = sweep_rows(cell, recs, 1.0)
    assert all(r["final_slots"] == 300 and r["final_avg_accuracy"] == 0.5 for r in rows)
