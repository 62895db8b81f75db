"""The exact oracle (grle_jax/oracle.py) against brute force, and against the other policies.

* 200 seeded random instances, N <= 5, M <= 3, both overdue rules, all four scenarios, carried
  radio and ES backlogs (some past the deadline), links down, inactive devices, and for half of
  them a random exit table (accuracies in random order, so some exits are dominated) and a random
  deadline. On every one the oracle's decision, scored by ``dynamics.score``, equals the best of
  ALL (M*E)^N decisions scored the same way (a brute force in JAX), and the optimum the oracle
  reports equals it too, within 1e-4.
* The same instances, where the plain-Python float64 twin can enumerate them quickly, against
  ``reference_sim.brute_force_best`` in absolute times.
* At N = 14 (the paper's scale) the oracle's reward is never below greedy's or any of several
  random decisions' on the same slots.
* End to end: ``python -m train.grle --policy oracle ... --trace`` writes a trace whose every slot
  the twin confirms optimal, and ``--normalise`` of the oracle against itself gives exactly 1.
"""

import csv
import functools
import itertools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grle_jax.baselines import greedy_policy, random_policy
from grle_jax.config import SCENARIOS, Config
from grle_jax.dynamics import score
from grle_jax.errors import ConfigError
from grle_jax.oracle import check_oracle_config, oracle_decision, oracle_policy
from grle_jax.types import Observation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_sim as rs  # noqa: E402

TOL = 1e-4
SCEN = list(SCENARIOS)


# --- random instances ---------------------------------------------------------------------------
def make_batch(rng, n, m, overdue, count):
    """``count`` instances of one static shape: (static, batched params, batched observations,
    list of per-instance dicts for the twin)."""
    base = Config.for_scenario("base", devices=n, servers=m, overdue=overdue)
    static, p0 = base.static(), base.params()
    e = static.e
    accs, cs, ds, obs, raw = [], [], [], [], []
    for i in range(count):
        sc = SCENARIOS[SCEN[i % 4]]
        if i % 2:  # a random exit table: any order of accuracies, times per ES, and deadline
            acc = rng.uniform(0.5, 1.0, e)
            c = rng.uniform(0.2, 3.0, (m, e))
            d = float(rng.choice([10.0, 20.0, 30.0, 40.0]))
        else:
            acc, c, d = np.asarray(p0.acc), np.asarray(p0.c), 30.0
        p_link = rng.choice([1.0, 0.7, 0.4])
        p_act = rng.choice([1.0, 0.8, 0.5])
        r = rng.uniform(20, 100, (n, m))
        o = dict(
            s=rng.uniform(50, 100, n),
            r_hat=r * rng.uniform(*sc["csi_range"], (n, m)),
            phi=rng.uniform(min(sc["phi_range"][0], 0.15 if i % 3 == 0 else 1.0), sc["phi_range"][1], m),
            L=(rng.uniform(size=(n, m)) < p_link) & (np.arange(m) != (i % (2 * m)))[None, :],
            active=rng.uniform(size=n) < p_act,
            radio=np.where(rng.uniform(size=n) < 0.5, rng.uniform(0, 25, n), 0.0),
            es=np.where(rng.uniform(size=m) < 0.6, rng.uniform(0, 1.2 * d, m), 0.0),
        )
        o32 = {k: (np.asarray(v, np.float32) if v.dtype.kind == "f" else v) for k, v in o.items()}
        accs.append(np.float32(acc)); cs.append(np.float32(c)); ds.append(np.float32(d))
        obs.append(o32)
        raw.append(dict(o32, acc=np.float32(acc), c=np.float32(c), d=np.float32(d)))
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (count,) + x.shape), p0)
    params = params.replace(acc=jnp.asarray(np.stack(accs)), c=jnp.asarray(np.stack(cs)),
                            deadline_ms=jnp.asarray(np.stack(ds)))
    ob = Observation(**{k: jnp.asarray(np.stack([x[k] for x in obs])) for k in obs[0]})
    return static, params, ob, raw


def brute_force_jax(static, params, obs):
    """Best R over all (M*E)^N decisions, scored by dynamics.score (chunked)."""
    opts = np.asarray(list(itertools.product(range(static.options), repeat=static.n)), np.int32)
    chunk = 4096
    pad = (-len(opts)) % chunk
    opts = np.concatenate([opts, np.repeat(opts[:1], pad, axis=0)]).reshape(-1, chunk, static.n)
    return jax.lax.map(lambda ch: jnp.max(score(static, params, obs, ch)), jnp.asarray(opts)).max()


GROUPS = [  # (N, M, overdue, instances); smaller N and M come from inactive devices and dead links
    (5, 2, "abort", 35), (5, 2, "keep", 35),
    (3, 3, "abort", 65), (3, 3, "keep", 65),
]


@functools.partial(jax.jit, static_argnums=0)
def solve_batch(static, params, obs):
    """The oracle on a batch: (decision, the optimum it reports). The oracle does not depend on
    the overdue rule, so both rules share one compiled program (found again by the persistent
    compilation cache that conftest.py sets up)."""
    return jax.vmap(lambda p, o: oracle_decision(static, p, o))(params, obs)


@functools.partial(jax.jit, static_argnums=0)
def check_batch(static, params, obs, opt):
    """(R of the given decisions by dynamics.score, best R over all decisions by brute force)."""
    return jax.vmap(lambda p, o, x: (score(static, p, o, x), brute_force_jax(static, p, o)))(params, obs, opt)


@pytest.fixture(scope="module")
def solved():
    """Every group solved by the oracle and by the JAX brute force (batched)."""
    rng = np.random.default_rng(20240607)
    out = []
    for n, m, overdue, count in GROUPS:
        static, params, obs, raw = make_batch(rng, n, m, overdue, count)
        opt, claimed = solve_batch(static, params, obs)
        got, best = check_batch(static, params, obs, opt)
        out.append((static, overdue, raw, np.asarray(opt), np.asarray(got), np.asarray(claimed), np.asarray(best)))
    return out


def test_at_least_200_instances(solved):
    assert sum(len(g[2]) for g in solved) >= 200


def test_oracle_equals_jax_brute_force(solved):
    for static, overdue, raw, opt, got, claimed, best in solved:
        bad = np.flatnonzero(np.abs(got - best) > TOL)
        assert bad.size == 0, f"N={static.n} M={static.m} {overdue}: oracle {got[bad]} vs brute force {best[bad]}"
        assert np.all(np.abs(claimed - best) <= TOL), "the optimum the oracle reports is not its decision's R"


def test_decision_is_valid(solved):
    for static, overdue, raw, opt, got, claimed, best in solved:
        for x, o in zip(raw, opt):
            has = x["active"] & x["L"].any(axis=1)
            assert np.all((o == -1) == ~has), "-1 exactly for devices without a task or a link"
            m = o[has] // static.e
            assert np.all(x["L"][has, m]), "an unreachable ES was chosen"


def twin_size(x, e):
    """How many decisions the twin's brute force enumerates for this instance."""
    k = 1
    for d in range(len(x["s"])):
        if x["active"][d]:
            k *= max(1, int(x["L"][d].sum()) * e)
    return k


def test_oracle_equals_twin_brute_force(solved):
    """The independent float64 twin, in absolute times (g = 7 slots of 20 ms), where its plain
    enumeration is quick; at least 60 instances."""
    checked = 0
    g = 140.0
    for static, overdue, raw, opt, got, claimed, best in solved:
        for x, r_oracle in zip(raw, got):
            if twin_size(x, static.e) > 3000:
                continue
            config = {"slot_ms": 20.0, "deadline_ms": float(x["d"]), "rho": 0.0, "overdue": overdue}
            twin, _, _ = rs.brute_force_best(
                config, [float(a) for a in x["acc"]], [[float(v) for v in row] for row in x["c"]],
                [g + float(v) for v in x["radio"]], [g + float(v) for v in x["es"]], g,
                [float(v) for v in x["s"]], [[float(v) for v in row] for row in x["r_hat"]],
                [float(v) for v in x["phi"]], [[int(v) for v in row] for row in x["L"]],
                [int(v) for v in x["active"]])
            assert abs(twin - r_oracle) <= TOL, f"N={static.n} M={static.m} {overdue}: twin {twin} vs oracle {r_oracle}"
            checked += 1
    assert checked >= 60


# --- the paper's scale ---------------------------------------------------------------------------
def test_never_beaten_by_greedy_or_random_at_n14():
    cfg = Config.for_scenario("csi", devices=14, servers=2)
    static, _, ob, _ = make_batch(np.random.default_rng(7), 14, 2, "abort", 6)
    params = cfg.params()
    ob = ob.replace(L=jnp.ones_like(ob.L), active=jnp.ones_like(ob.active))  # the paper's full network
    keys = jax.random.split(jax.random.key(3), 6)

    def slot(k, o):  # the decisions of every policy, scored together on the same observation
        x = jnp.stack([oracle_policy(k, static, params, o), greedy_policy(k, static, params, o),
                       *[random_policy(kk, static, params, o) for kk in jax.random.split(k, 4)]])
        return score(static, params, o, x)

    f = jax.jit(jax.vmap(slot))
    R = np.asarray(f(keys, ob))  # (slots, 6): oracle, greedy, 4 random decisions
    assert np.all(R[:, :1] >= R[:, 1:] - 1e-5), R
    assert np.all(R[:, 0] > 0)


# --- inside the simulator, and the CLI -----------------------------------------------------------
def test_cli_trace_every_slot_optimal(tmp_path):
    """The issue's end-to-end check on a smaller run: every slot of the trace is optimal by the
    twin's brute force, the twin re-simulates the trace without a complaint, and --normalise of
    the oracle (run in the same scan as the policy) is exactly 1 in every slot."""
    from train.grle import main

    path = tmp_path / "t.jsonl"
    out = tmp_path / "run"
    rc = main(["--policy", "oracle", "--scenario", "csi", "--devices", "3", "--slots", "30", "--seed", "1",
               "--p-link", "0.8", "--p-active", "0.9", "--trace", str(path), "--out", str(out), "--normalise",
               "--quiet", "--references", "none"])
    assert rc == 0
    assert rs.check_trace(str(path)) == []
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    head, slots = lines[0], lines[1:]
    assert len(slots) == 30
    for sl in slots:
        best, _, _ = rs.brute_force_best(head["config"], head["acc"], head["c"], sl["radio_free_before"],
                                         sl["es_free_before"], sl["g"], sl["s"], sl["r_hat"], sl["phi"],
                                         sl["L"], sl["active"])
        assert abs(best - sl["reward_observed"]) <= TOL, f"slot {sl['t']}: oracle {sl['reward_observed']} vs {best}"
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30 and all(float(r["normalised_reward"]) == 1.0 for r in rows)


def test_check_oracle_config():
    check_oracle_config(Config())
    with pytest.raises(ConfigError) as err:
        check_oracle_config(Config(rho=0.5))
    assert err.value.field == "rho"
    with pytest.raises(ConfigError) as err:
        check_oracle_config(Config(devices=40))
    assert err.value.field == "devices"
