"""Hand-computed cases that pin the plain-Python twin (tests/reference_sim.py) itself.

Every expected number below was worked out by hand from docs/model.md section 2 with exactly
representable inputs (e.g. 50 KB at 40 Mbps is 50 * 8 / 40 = 10 ms), so equality is exact unless
a transcendental function is involved. Nothing here imports grle_jax: the twin shares no code
with the package it checks.

Conventions fixed by these tests (choices where docs/model.md leaves room):
  * an active device whose chosen ES is -1 or unreachable, or with no link at all, has a task that
    fails: no transmission, latency None, ok False, acc 0, and it costs rho;
  * abort rule: the drop test is S >= dl (a task reaching the head exactly at dl is dropped), and
    a task with latency == D counts as on time;
  * greedy: ties in R and in the device's own F use an absolute tolerance of 1e-9.
"""

import copy
import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_sim as rs  # noqa: E402


ACC2 = [0.5, 0.75]


def cfg(slot_ms=30.0, deadline_ms=30.0, rho=0.0, overdue="abort"):
    return {"slot_ms": slot_ms, "deadline_ms": deadline_ms, "rho": rho, "overdue": overdue}


def slot(s, r, phi, m, e, eps=None, L=None, active=None, r_hat=None):
    """A slot's inputs and decision with sensible defaults (all links up, all active, eps = 1)."""
    N, M = len(s), len(phi)
    return {
        "s": s, "r": r, "r_hat": r_hat if r_hat is not None else copy.deepcopy(r), "phi": phi,
        "eps": eps if eps is not None else [1.0] * N,
        "L": L if L is not None else [[1] * M for _ in range(N)],
        "active": active if active is not None else [1] * N,
        "m": m, "e": e,
    }


def one(config, acc, c, sl, radio_free=None, es_free=None, g=0.0):
    """Score one slot on TRUE values."""
    N, M = len(sl["s"]), len(sl["phi"])
    return rs.score(config, acc, c, radio_free or [0.0] * N, es_free or [0.0] * M, g,
                    sl["s"], sl["r"], sl["phi"], sl["eps"], sl["L"], sl["active"], sl["m"], sl["e"])


# ------------------------------------------------------------------------------------------
# Dynamics
# ------------------------------------------------------------------------------------------
def test_single_task():
    # tx = 50*8/40 = 10, compute = 4 / 0.5 = 8.
    res = one(cfg(), ACC2, [[2.0, 4.0]], slot([50.0], [[40.0]], [0.5], m=[0], e=[1]))
    assert res["A"] == [10.0] and res["S"] == [10.0] and res["F"] == [18.0]
    assert res["latency"] == [18.0] and res["ok"] == [True] and res["acc"] == [0.75]
    assert res["reward"] == 0.75
    assert res["radio_free_after"] == [10.0] and res["es_free_after"] == [18.0]


def test_two_tasks_queue_on_one_es():
    # dev0: A = 10, compute 4 -> F = 14. dev1: tx = 75*8/50 = 12, waits until 14, F = 16.
    res = one(cfg(), ACC2, [[2.0, 4.0]],
              slot([50.0, 75.0], [[40.0], [50.0]], [1.0], m=[0, 0], e=[1, 0]))
    assert res["A"] == [10.0, 12.0]
    assert res["S"] == [10.0, 14.0]
    assert res["F"] == [14.0, 16.0]
    assert res["latency"] == [14.0, 16.0]
    assert res["reward"] == 1.25
    assert res["es_free_after"] == [16.0]


@pytest.mark.parametrize("e, expected_F", [([1, 0], [14.0, 16.0]), ([0, 1], [12.0, 16.0])])
def test_arrival_tie_broken_by_device_index(e, expected_F):
    # Both arrive at 10: device 0 is served first whatever the exits.
    res = one(cfg(), ACC2, [[2.0, 4.0]],
              slot([50.0, 50.0], [[40.0], [40.0]], [1.0], m=[0, 0], e=e))
    assert res["A"] == [10.0, 10.0]
    assert res["S"] == [10.0, expected_F[0]]
    assert res["F"] == expected_F


def test_own_radio_backlog_delays_next_slot():
    # T = 20, D = 30. Slot 0: tx = 125*8/40 = 25, A = 25, F = 27. Slot 1 (g = 20): the radio is
    # busy until 25, so A = 25 + 10 = 35, S = 35 (ES free at 27), F = 37, latency = 17.
    c = [[2.0, 4.0]]
    slots = [slot([125.0], [[40.0]], [1.0], m=[0], e=[0]),
             slot([50.0], [[40.0]], [1.0], m=[0], e=[0])]
    out = rs.run_slots(cfg(slot_ms=20.0), ACC2, c, slots)
    assert out[0]["A"] == [25.0] and out[0]["F"] == [27.0] and out[0]["latency"] == [27.0]
    assert out[0]["radio_free_after"] == [25.0] and out[0]["es_free_after"] == [27.0]
    assert out[1]["g"] == 20.0
    assert out[1]["radio_free_before"] == [25.0] and out[1]["es_free_before"] == [27.0]
    assert out[1]["A"] == [35.0] and out[1]["S"] == [35.0] and out[1]["F"] == [37.0]
    assert out[1]["latency"] == [17.0] and out[1]["ok"] == [True]
    assert out[1]["radio_free_after"] == [35.0]


@pytest.mark.parametrize("overdue, radio_after, next_A", [("abort", 30.0, 40.0), ("keep", 50.0, 60.0)])
def test_radio_clipped_at_deadline_under_abort(overdue, radio_after, next_A):
    # T = 20, D = 30: tx = 250*8/40 = 50 > D. abort: the radio gives up at dl = 30.
    slots = [slot([250.0], [[40.0]], [1.0], m=[0], e=[0]),
             slot([50.0], [[40.0]], [1.0], m=[0], e=[0])]
    out = rs.run_slots(cfg(slot_ms=20.0, overdue=overdue), ACC2, [[2.0, 4.0]], slots)
    assert out[0]["A"] == [50.0] and out[0]["latency"] == [52.0] and out[0]["ok"] == [False]
    assert out[0]["radio_free_after"] == [radio_after]
    assert out[1]["A"] == [next_A]


def test_abort_vs_keep_on_overloaded_es():
    # T = 20, D = 30, c = [[5, 25]]. Slot 0 (dl = 30): dev0 A = 10, compute 25 -> F = 35 (late);
    # dev1 tx = 50*8/20 = 20, A = 20, compute 5.
    #   abort: es_free <- min(35, 30) = 30; dev1 reaches the head at S = 30 >= dl: dropped,
    #          es_free stays 30 (S, F are still reported: S = 30, F = 35).
    #   keep:  es_free <- 35; dev1 S = 35, F = 40; es_free <- 40.
    # Slot 1 (g = 20, dl = 50), only dev0: A = max(20, 10) + 10 = 30, compute 5.
    #   abort: S = max(30, 30) = 30, F = 35.   keep: S = max(30, 40) = 40, F = 45.
    c = [[5.0, 25.0]]
    slots = [slot([50.0, 50.0], [[40.0], [20.0]], [1.0], m=[0, 0], e=[1, 0]),
             slot([50.0, 50.0], [[40.0], [20.0]], [1.0], m=[0, 0], e=[0, 0], active=[1, 0])]
    ab = rs.run_slots(cfg(slot_ms=20.0, overdue="abort"), ACC2, c, slots)
    kp = rs.run_slots(cfg(slot_ms=20.0, overdue="keep"), ACC2, c, slots)

    assert ab[0]["A"] == [10.0, 20.0] and kp[0]["A"] == [10.0, 20.0]
    assert ab[0]["S"] == [10.0, 30.0] and ab[0]["F"] == [35.0, 35.0]
    assert kp[0]["S"] == [10.0, 35.0] and kp[0]["F"] == [35.0, 40.0]
    assert ab[0]["ok"] == [False, False] and kp[0]["ok"] == [False, False]
    assert ab[0]["es_free_after"] == [30.0]
    assert kp[0]["es_free_after"] == [40.0]
    assert ab[0]["radio_free_after"] == [10.0, 20.0] == kp[0]["radio_free_after"]

    assert ab[1]["A"] == [30.0, None] and ab[1]["S"] == [30.0, None] and ab[1]["F"] == [35.0, None]
    assert kp[1]["A"] == [30.0, None] and kp[1]["S"] == [40.0, None] and kp[1]["F"] == [45.0, None]
    assert ab[1]["latency"][0] == 15.0 and kp[1]["latency"][0] == 25.0
    assert ab[1]["es_free_after"] == [35.0] and kp[1]["es_free_after"] == [45.0]
    assert ab[1]["reward_true"] == 0.5 and kp[1]["reward_true"] == 0.5


def test_dropped_task_costs_no_es_time():
    # T = 20, D = 30. Slot 0 (dl = 30): dev0 A = 10, compute 4 -> F = 14. dev1 tx = 50*8/10 = 40,
    # A = 40 >= dl: its radio gives up at 30 and the ES drops it (S = 40), so es_free stays 14.
    # Slot 1 (g = 20): dev0 A = 30 finds the ES free: S = 30, F = 32.
    # keep: dev1 runs 40 -> 42, so slot 1's dev0 waits: S = 42, F = 44.
    c = [[2.0, 4.0]]
    slots = [slot([50.0, 50.0], [[40.0], [10.0]], [1.0], m=[0, 0], e=[1, 0]),
             slot([50.0, 50.0], [[40.0], [10.0]], [1.0], m=[0, 0], e=[0, 0], active=[1, 0])]
    ab = rs.run_slots(cfg(slot_ms=20.0, overdue="abort"), ACC2, c, slots)
    kp = rs.run_slots(cfg(slot_ms=20.0, overdue="keep"), ACC2, c, slots)
    assert ab[0]["S"] == [10.0, 40.0] and ab[0]["F"] == [14.0, 42.0]
    assert ab[0]["latency"] == [14.0, 42.0] and ab[0]["ok"] == [True, False]
    assert ab[0]["radio_free_after"] == [10.0, 30.0] and ab[0]["es_free_after"] == [14.0]
    assert kp[0]["radio_free_after"] == [10.0, 40.0] and kp[0]["es_free_after"] == [42.0]
    assert ab[1]["S"][0] == 30.0 and ab[1]["F"][0] == 32.0
    assert kp[1]["S"][0] == 42.0 and kp[1]["F"][0] == 44.0
    # Within one slot: after a drop at S = dl the ES state is unchanged, so a later task that
    # reaches the head before dl is served from it (here es_free = 5 from an earlier slot).
    res = one(cfg(), ACC2, c, slot([50.0, 50.0, 50.0], [[40.0], [10.0], [20.0]], [1.0],
                                    m=[0, 0, 0], e=[1, 0, 0]), es_free=[5.0])
    assert res["A"] == [10.0, 40.0, 20.0]
    assert res["S"] == [10.0, 40.0, 20.0]  # order 0 (A=10), 2 (A=20), 1 (A=40)
    assert res["F"] == [14.0, 42.0, 22.0]
    assert res["dropped"] == [False, True, False]
    assert res["es_free_after"] == [22.0]


def test_deadline_edge_counts_as_ok():
    # A = 10, compute 20 -> latency exactly 30 == D: on time; es_free = min(30, dl=30) = 30.
    res = one(cfg(), [0.5], [[20.0]], slot([50.0], [[40.0]], [1.0], m=[0], e=[0]))
    assert res["latency"] == [30.0] and res["ok"] == [True] and res["acc"] == [0.5]
    assert res["es_free_after"] == [30.0]
    # phi = 0.5 halves the capacity: 10 / 0.5 = 20, the same edge.
    res = one(cfg(), [0.5], [[10.0]], slot([50.0], [[40.0]], [0.5], m=[0], e=[0]))
    assert res["latency"] == [30.0] and res["ok"] == [True]
    # Just over: 20.5 -> 30.5 is late.
    res = one(cfg(), [0.5], [[20.5]], slot([50.0], [[40.0]], [1.0], m=[0], e=[0]))
    assert res["latency"] == [30.5] and res["ok"] == [False] and res["acc"] == [0.0]
    assert res["reward"] == 0.0


def test_inactive_device_has_no_task():
    # dev1 is inactive (its decision is ignored): no task, no ES time, radio untouched, no reward.
    sl = slot([50.0, 50.0], [[40.0], [40.0]], [1.0], m=[0, 0], e=[1, 1], active=[1, 0])
    res = one(cfg(rho=0.7), ACC2, [[2.0, 4.0]], sl, radio_free=[0.0, 12.5])
    assert res["A"] == [10.0, None] and res["latency"][1] is None
    assert res["ok"] == [True, False] and res["acc"] == [0.75, 0.0]
    assert res["S"] == [10.0, None]  # dev1 (tie at A = 10 if it were active) takes nothing
    assert res["reward"] == 0.75  # no rho for the inactive device
    assert res["radio_free_after"] == [10.0, 12.5]


def test_active_device_without_link_costs_rho():
    rho = 0.5
    sl = slot([50.0, 50.0], [[40.0], [40.0]], [1.0], m=[0, -1], e=[0, -1], L=[[1], [0]])
    res = one(cfg(rho=rho), ACC2, [[2.0, 4.0]], sl)
    assert res["latency"] == [12.0, None] and res["ok"] == [True, False]
    assert res["acc"] == [0.5, 0.0]
    assert res["reward"] == 0.5 - rho
    assert res["radio_free_after"] == [10.0, 0.0]
    # The same holds for an active device whose chosen ES is -1 or unreachable.
    for m1 in (-1, 1):
        sl2 = slot([50.0, 50.0], [[40.0, 40.0], [40.0, 40.0]], [1.0, 1.0], m=[0, m1], e=[0, 0],
                   L=[[1, 1], [1, 0]])
        res2 = one(cfg(rho=rho), ACC2, [[2.0, 4.0], [2.0, 4.0]], sl2)
        assert res2["A"][1] is None and res2["ok"][1] is False
        assert res2["reward"] == 0.5 - rho


def test_rho_sigmoid_penalty_for_late_task():
    # A = 10, compute 50 -> latency 60 = 2D: penalty rho * sigmoid((60 - 30) / 30) = rho * sigmoid(1).
    rho = 0.4
    for overdue in ("abort", "keep"):
        res = one(cfg(rho=rho, overdue=overdue), [0.9], [[50.0]],
                  slot([50.0], [[40.0]], [1.0], m=[0], e=[0]))
        assert res["latency"] == [60.0] and res["ok"] == [False] and res["acc"] == [0.0]
        assert res["reward"] == pytest.approx(-rho / (1.0 + math.exp(-1.0)), abs=1e-15)
    assert rs.sigmoid(0.0) == 0.5 and rs.sigmoid(-800.0) == 0.0 and rs.sigmoid(800.0) == 1.0


def test_reward_observed_uses_r_hat_and_no_eps():
    # True: A = 50*8/40 = 10, compute 12 * 1.5 = 18 -> F = 28, on time.
    # Observed: A = 50*8/20 = 20, compute 12 -> F = 32, late.
    sl = slot([50.0], [[40.0]], [1.0], m=[0], e=[1], eps=[1.5], r_hat=[[20.0]])
    out = rs.run_slots(cfg(), ACC2, [[2.0, 12.0]], [sl, sl])
    assert out[0]["F"] == [28.0] and out[0]["reward_true"] == 0.75
    assert out[0]["reward_observed"] == 0.0
    # The state advances with the TRUE values only.
    assert out[0]["radio_free_after"] == [10.0] and out[0]["es_free_after"] == [28.0]
    assert out[1]["g"] == 30.0 and out[1]["A"] == [40.0] and out[1]["F"] == [58.0]


# ------------------------------------------------------------------------------------------
# Greedy and brute force
# ------------------------------------------------------------------------------------------
def test_greedy_order_and_suboptimality_vs_brute_force():
    # One ES, acc = [0.5, 0.9], c = [[6, 15]], D = 30, g = 0.
    # dev0: radio busy until 2, tx 10 -> earliest arrival 12.  dev1: tx 10 -> earliest 10.
    # Greedy places dev1 first: alone, e1 gives R = 0.9 (F = 25) > e0 (0.5). Then dev0 (A = 12,
    # behind dev1): e0 -> S = 25, F = 31 late, R = 0.9; e1 -> F = 40 late, R = 0.9: tie in R,
    # earlier F wins -> e0. Greedy R = 0.9.
    # Optimum: both e0: dev1 F = 16, dev0 S = 16, F = 22 -> R = 1.0.
    config, acc, c = cfg(), [0.5, 0.9], [[6.0, 15.0]]
    args = dict(radio_free=[2.0, 0.0], es_free=[0.0], g=0.0, s=[50.0, 50.0],
                r_hat=[[40.0], [40.0]], phi=[1.0], L=[[1], [1]], active=[1, 1])
    m, e = rs.greedy_decision(config, acc, c, **args)
    assert (m, e) == ([0, 0], [0, 1])
    best, bm, be = rs.brute_force_best(config, acc, c, **args)
    assert best == 1.0 and (bm, be) == ([0, 0], [0, 0])
    greedy_R = rs.score(config, acc, c, args["radio_free"], args["es_free"], 0.0, args["s"],
                        args["r_hat"], args["phi"], [1.0, 1.0], args["L"], args["active"],
                        m, e)["reward"]
    assert greedy_R == 0.9 < best


def test_greedy_ties_to_earlier_finish_then_lower_es():
    config, acc, c = cfg(), ACC2, [[2.0, 4.0], [2.0, 4.0]]
    # dev0: arrives at ES0 at 20, at ES1 at 10. Best R (0.75, exit 1) on both ES; F = 24 vs 14
    # -> ES1. dev1: identical ES and rates -> the lower ES. dev2: inactive; dev3: no link.
    args = dict(radio_free=[0.0] * 4, es_free=[0.0, 0.0], g=0.0, s=[50.0] * 4,
                r_hat=[[20.0, 40.0], [40.0, 40.0], [40.0, 40.0], [40.0, 40.0]], phi=[1.0, 1.0],
                L=[[1, 1], [1, 1], [1, 1], [0, 0]], active=[1, 1, 0, 1])
    # Order: dev0 and dev1 both earliest 10 -> dev0 first. dev0 -> (1, 1), F = 14.
    # dev1: (0, 1): A = 10, F = 14, R = 1.5; (1, 1): S = 14, F = 18, R = 1.5 -> ES0 (earlier F).
    m, e = rs.greedy_decision(config, acc, c, **args)
    assert (m, e) == ([1, 0, -1, -1], [1, 1, -1, -1])
    # With dev0 removed, dev1 alone: (0, 1) and (1, 1) tie in R and F -> the lower ES.
    args["active"] = [0, 1, 0, 0]
    assert rs.greedy_decision(config, acc, c, **args) == ([-1, 0, -1, -1], [-1, 1, -1, -1])


def test_brute_force_splits_over_two_es_and_counts_rho():
    # Both arrive at 10 on either ES. Apart with exit 1: F = 10 + 20 = 30 = D for both -> 1.5.
    # Together at best 0.5 + 0.75 (F = 20, then 30... or 0.5 + 0.5). The first optimal decision
    # in enumeration order is dev0 -> (0, 1), dev1 -> (1, 1). dev2 is active without a link.
    rho = 0.25
    best, m, e = rs.brute_force_best(
        cfg(rho=rho), ACC2, [[10.0, 20.0], [10.0, 20.0]], radio_free=[0.0] * 3,
        es_free=[0.0, 0.0], g=0.0, s=[50.0] * 3, r_hat=[[40.0, 40.0]] * 3, phi=[1.0, 1.0],
        L=[[1, 1], [1, 1], [0, 0]], active=[1, 1, 1])
    assert best == 1.5 - rho
    assert (m, e) == ([0, 1, -1], [1, 1, -1])


def test_random_small_instances_greedy_never_beats_brute_force():
    import random
    rng = random.Random(1234)
    acc = [0.8, 0.85, 0.885]
    c = [[0.36, 0.46, 0.54], [0.73, 0.89, 1.06]]
    for _ in range(40):
        N, M = rng.randint(1, 3), 2
        config = cfg(deadline_ms=rng.choice([6.0, 10.0, 30.0]), rho=rng.choice([0.0, 0.5]))
        s = [rng.uniform(50, 100) for _ in range(N)]
        r_hat = [[rng.uniform(20, 100) for _ in range(M)] for _ in range(N)]
        L = [[int(rng.random() < 0.8) for _ in range(M)] for _ in range(N)]
        active = [int(rng.random() < 0.9) for _ in range(N)]
        radio = [rng.uniform(0, 8) for _ in range(N)]
        es = [rng.uniform(0, 8) for _ in range(M)]
        phi = [rng.uniform(0.25, 1) for _ in range(M)]
        args = (config, acc, c, radio, es, 0.0, s, r_hat, phi, L, active)
        best, bm, be = rs.brute_force_best(*args)
        gm, ge = rs.greedy_decision(*args)
        for n in range(N):  # greedy decides exactly the devices with a task and a link
            assert (gm[n] >= 0) == bool(active[n] and any(L[n]))
            assert gm[n] < 0 or (L[n][gm[n]] == 1 and 0 <= ge[n] < len(acc))
        def R(m, e):
            return rs.score(config, acc, c, radio, es, 0.0, s, r_hat, phi, [1.0] * N, L,
                            active, m, e)["reward"]
        assert R(bm, be) == best
        assert R(gm, ge) <= best + 1e-12


# ------------------------------------------------------------------------------------------
# Trace checking
# ------------------------------------------------------------------------------------------
TRACE_CONFIG = cfg(slot_ms=20.0, rho=0.3, overdue="abort")
TRACE_ACC = [0.5, 0.9]
TRACE_C = [[5.0, 25.0], [4.0, 12.0]]


def _trace_slots():
    """Three slots on 3 devices and 2 ES, with an overload, a drop, an inactive device and a
    device without a link."""
    return [
        slot([50.0, 50.0, 60.0], [[40.0, 25.0], [20.0, 50.0], [30.0, 30.0]], [1.0, 0.5],
             m=[0, 0, 1], e=[1, 0, 1], eps=[1.0, 1.1, 0.9],
             r_hat=[[36.0, 25.0], [22.0, 50.0], [30.0, 33.0]]),
        slot([70.0, 55.0, 90.0], [[40.0, 60.0], [20.0, 50.0], [30.0, 30.0]], [0.8, 1.0],
             m=[1, 0, -1], e=[0, 1, -1], active=[1, 1, 0]),
        slot([80.0, 65.0, 52.0], [[40.0, 60.0], [20.0, 50.0], [30.0, 30.0]], [1.0, 1.0],
             m=[0, -1, 1], e=[1, -1, 0], L=[[1, 1], [0, 0], [1, 1]]),
    ]


def _write_trace(path, config, acc, c, slots, mutate=None):
    """Write a docs/model.md section 7 trace from run_slots; ``mutate(lines)`` may corrupt it."""
    out = rs.run_slots(config, acc, c, slots)
    lines = [{"kind": "header", "config": config, "exits": [1, 17], "acc": acc, "c": c,
              "policy": "hand", "seed": 0}]
    for t, (sl, res) in enumerate(zip(slots, out)):
        N, M = len(sl["s"]), len(sl["phi"])
        task = [bool(sl["active"][n]) and any(sl["L"][n]) for n in range(N)]
        lines.append({
            "kind": "slot", "t": t, "g": res["g"], "s": sl["s"], "r": sl["r"],
            "r_hat": sl["r_hat"], "phi": sl["phi"], "eps": sl["eps"], "L": sl["L"],
            "active": sl["active"], "radio_free_before": res["radio_free_before"],
            "es_free_before": res["es_free_before"],
            "m": [sl["m"][n] if task[n] else -1 for n in range(N)],
            "e": [sl["e"][n] if task[n] else -1 for n in range(N)],
            "A": res["A"], "S": res["S"], "F": res["F"], "latency": res["latency"],
            "ok": res["ok"], "acc": res["acc"],
            "reward_observed": res["reward_observed"], "reward_true": res["reward_true"],
        })
    if mutate is not None:
        mutate(lines)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in lines:
            fh.write(json.dumps(rec) + "\n")
    return lines


def test_trace_scenario_is_nontrivial():
    out = rs.run_slots(TRACE_CONFIG, TRACE_ACC, TRACE_C, _trace_slots())
    oks = [x for res in out for x in res["ok"]]
    assert True in oks and out[1]["A"][2] is None and out[2]["A"][1] is None
    assert any(res["reward_true"] != res["reward_observed"] for res in out)
    assert out[0]["latency"][0] > 30.0  # an overdue task


def test_check_trace_accepts_faithful_trace(tmp_path):
    p = tmp_path / "ok.jsonl"
    _write_trace(p, TRACE_CONFIG, TRACE_ACC, TRACE_C, _trace_slots())
    assert rs.check_trace(str(p)) == []


def test_check_trace_accepts_equivalent_representations(tmp_path):
    # Queues that emptied before g recorded as g; every time off by 1e-4 ms (float32 rounding).
    def mutate(lines):
        for rec in lines[1:]:
            g = rec["g"]
            rec["radio_free_before"] = [max(v, g) for v in rec["radio_free_before"]]
            rec["es_free_before"] = [max(v, g) for v in rec["es_free_before"]]
            for key in ("A", "S", "F", "latency"):
                rec[key] = [None if v is None else v + 1e-4 for v in rec[key]]
    p = tmp_path / "equiv.jsonl"
    _write_trace(p, TRACE_CONFIG, TRACE_ACC, TRACE_C, _trace_slots(), mutate)
    assert rs.check_trace(str(p)) == []


@pytest.mark.parametrize("what", ["S", "es_free_before", "reward_true", "reward_observed", "ok",
                                  "A_null", "m_inactive", "t_gap"])
def test_check_trace_reports_corruption(tmp_path, what):
    def mutate(lines):
        rec = lines[2]  # slot t = 1
        if what == "S":
            rec["S"][0] += 0.5
        elif what == "es_free_before":
            rec["es_free_before"][0] = rec["g"] + 3.0
        elif what == "reward_true":
            rec["reward_true"] += 0.1
        elif what == "reward_observed":
            rec["reward_observed"] -= 0.1
        elif what == "ok":
            rec["ok"][0] = not rec["ok"][0]
        elif what == "A_null":
            rec["A"][0] = None
        elif what == "m_inactive":
            rec["m"][2], rec["e"][2] = 0, 0
        elif what == "t_gap":
            lines[3]["t"] = 5
    p = tmp_path / f"bad_{what}.jsonl"
    _write_trace(p, TRACE_CONFIG, TRACE_ACC, TRACE_C, _trace_slots(), mutate)
    problems = rs.check_trace(str(p))
    assert problems, what
    assert all(isinstance(msg, str) for msg in problems)


def test_check_trace_reports_wrong_overdue_rule(tmp_path):
    # A trace written by a simulator that used 'keep' while its header says 'abort' disagrees on
    # slot 0's S/F and on the queue state carried into slot 1 (the checker reports it and goes on
    # from the trace's state).
    keep = dict(TRACE_CONFIG, overdue="keep")
    p = tmp_path / "keep_as_abort.jsonl"
    lines = _write_trace(p, keep, TRACE_ACC, TRACE_C, _trace_slots())
    lines[0]["config"] = dict(TRACE_CONFIG)
    with open(p, "w", encoding="utf-8") as fh:
        for rec in lines:
            fh.write(json.dumps(rec) + "\n")
    problems = rs.check_trace(str(p))
    assert any("es_free_before" in msg for msg in problems)
