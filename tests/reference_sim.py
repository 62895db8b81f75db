"""Plain-Python float64 twin of the MEC slot dynamics (docs/model.md sections 2, 3, 6 and 7).

This module is the independent reference against which the JAX simulator in ``grle_jax`` is
property-tested. It shares NO code with that package, needs neither JAX nor numpy, and works
with Python floats (IEEE float64) and plain lists. It is written to be obviously correct, task
by task, rather than fast.

Conventions (docs/model.md):
  * sizes in KB, rates in Mbps, times in ms, so ``s * 8 / r`` is a time in ms;
  * all times are ABSOLUTE ms since the run began; slot t is generated at ``g = t * slot_ms``;
  * ``radio_free[n]`` / ``es_free[m]`` are the instants device n / ES m become free; at t = 0
    every queue is empty (0.0). A queue that emptied before g may hold any value <= g: only
    ``max(value, g)`` matters, and the checks below compare it that way.

Choices made where docs/model.md leaves room (also listed in the test file's docstring):
  * A device HAS A TASK iff ``active[n] == 1``. The task is SERVED iff the chosen ES ``m[n]`` is a
    valid index with ``L[n][m[n]] == 1``. Every other active device (no link at all, ``m = -1`` or
    an unreachable ``m``) has a task that fails: no transmission (its radio state is unchanged),
    no ES time, A/S/F/latency None, ok False, achieved accuracy 0, and it costs ``rho`` in R.
  * ``overdue='abort'``: the drop test is ``S >= dl`` on S computed against the ES state as it
    evolves under the abort rule; a dropped task leaves ``es_free`` unchanged; a task with
    ``S < dl`` sets ``es_free <- min(F, dl)``. S, F and latency are reported "as defined"
    (run to the end), whatever the rule.
  * Reward terms are summed in device-index order (float64).
  * greedy: R ties are detected with an absolute tolerance ``TIE_TOL`` (1e-9), and so are ties
    in the device's own finish time F, because mathematically equal rewards can differ by one ulp
    (e.g. 0.8 + 0.935 and 0.85 + 0.885). Remaining ties go to the lower ES, then the lower exit.
  * brute_force_best: among optimal decisions the first one in enumeration order is returned
    (devices in index order, device 0 most significant; options in (m, e) ascending order).
"""

from __future__ import annotations

import itertools
import json
import math

__all__ = [
    "TIE_TOL",
    "sigmoid",
    "score",
    "run_slots",
    "greedy_decision",
    "brute_force_best",
    "check_trace",
]

#: Absolute tolerance used to call two rewards (or two finish times, in ms) equal in greedy.
TIE_TOL = 1e-9


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def sigmoid(x: float) -> float:
    """Numerically safe logistic function 1 / (1 + exp(-x))."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _config_values(config: dict) -> tuple[float, float, str]:
    """(D, rho, overdue) from a config; rho and overdue fall back to docs/model.md's defaults."""
    deadline = float(config["deadline_ms"])
    rho = float(config.get("rho", 0.0))
    overdue = config.get("overdue", "abort")
    if overdue not in ("abort", "keep"):
        raise ValueError(f"config['overdue'] must be 'abort' or 'keep', got {overdue!r}")
    return deadline, rho, overdue


def _is_served(n: int, active, L, m, num_es: int) -> bool:
    """True iff device n has a task (active) and its chosen ES is valid and reachable."""
    if not active[n]:
        return False
    mn = m[n]
    if mn is None or mn == -1:
        return False
    if not (0 <= mn < num_es):
        raise ValueError(f"device {n}: ES index m={mn} out of range [-1, {num_es})")
    return bool(L[n][mn])


# --------------------------------------------------------------------------------------------
# One slot
# --------------------------------------------------------------------------------------------
def _simulate_slot(config, acc, c, radio_free, es_free, g, s, r, phi, eps, L, active, m, e,
                   hint_A=None, hint_S=None, hint_tol=0.0) -> dict:
    """One slot of docs/model.md section 2 from the given absolute queue state.

    ``hint_A`` / ``hint_S`` (optional, used only by check_trace) are another implementation's
    values of A and S. Where such a value is within ``hint_tol`` of ours it decides the two
    DISCONTINUOUS choices instead of ours: the FCFS order among near-simultaneous arrivals and the
    abort rule's drop test ``S >= dl``. Values are always computed and reported from our own
    numbers. Without hints this is exactly the model.
    """
    deadline, rho, overdue = _config_values(config)
    N, M, E = len(s), len(phi), len(acc)
    g = float(g)
    dl = g + deadline  # shared deadline instant of every task of this slot

    served = [_is_served(n, active, L, m, M) for n in range(N)]
    for n in range(N):
        if served[n] and not (0 <= e[n] < E):
            raise ValueError(f"device {n}: exit index e={e[n]} out of range [0, {E})")

    A = [None] * N
    S = [None] * N
    F = [None] * N
    latency = [None] * N
    ok = [False] * N
    achieved = [0.0] * N
    dropped = [False] * N  # abort rule only: task reached the head of its ES queue at/after dl
    radio_after = [float(x) for x in radio_free]
    es_after = [float(x) for x in es_free]

    # 1. Transmission: start when both the slot has begun and the device's radio is free.
    for n in range(N):
        if not served[n]:
            continue  # inactive, or a failing task: nothing is sent, the radio is unchanged
        start = max(g, float(radio_free[n]))
        tx = float(s[n]) * 8.0 / float(r[n][m[n]])
        A[n] = start + tx
        if overdue == "abort":
            radio_after[n] = min(A[n], dl)  # a transmission still under way at dl is abandoned
        else:
            radio_after[n] = A[n]

    # 2.-3. FCFS queue per ES. Earlier slots' tasks are already in es_free; this slot's tasks are
    # served in order of arrival A, ties by device index.
    def order_key(n):
        a = A[n]
        if hint_A is not None and hint_A[n] is not None and abs(hint_A[n] - a) <= hint_tol:
            a = float(hint_A[n])
        return (a, n)

    for mm in range(M):
        queue = sorted((n for n in range(N) if served[n] and m[n] == mm), key=order_key)
        cur = float(es_free[mm])  # when ES mm finishes what it has already been given
        for n in queue:
            S[n] = max(A[n], cur)
            compute = float(c[mm][e[n]]) * float(eps[n]) / float(phi[mm])
            F[n] = S[n] + compute
            if overdue == "abort":
                s_test = S[n]
                if hint_S is not None and hint_S[n] is not None and abs(hint_S[n] - s_test) <= hint_tol:
                    s_test = float(hint_S[n])
                if s_test >= dl:
                    dropped[n] = True  # reaches the head at/after dl: dropped, costs no ES time
                else:
                    cur = min(F[n], dl)  # a task still running at dl is aborted there
            else:
                cur = F[n]  # 'keep': everything runs to the end
        es_after[mm] = cur

    # 4.-6. Latency, success, achieved accuracy.
    for n in range(N):
        if served[n]:
            latency[n] = F[n] - g
            ok[n] = latency[n] <= deadline
            achieved[n] = float(acc[e[n]]) if ok[n] else 0.0

    # Reward (eq. 9) over the devices with a task, summed in device-index order.
    reward = 0.0
    for n in range(N):
        if not active[n]:
            continue
        if not served[n]:
            reward -= rho  # a task that could not be offloaded at all
        elif ok[n]:
            reward += float(acc[e[n]])
        else:
            reward -= rho * sigmoid((latency[n] - deadline) / deadline)

    return {
        "A": A, "S": S, "F": F, "latency": latency, "ok": ok, "acc": achieved,
        "reward": reward, "radio_free_after": radio_after, "es_free_after": es_after,
        "served": served, "dropped": dropped,
    }


def score(config, acc, c, radio_free, es_free, g, s, r, phi, eps, L, active, m, e) -> dict:
    """One slot from the given absolute queue state (docs/model.md section 2).

    Returns a dict with A, S, F, latency (None for a device without a served task), ok (bool),
    acc (achieved accuracy, 0 if not ok), reward (eq. 9), radio_free_after, es_free_after, plus
    the diagnostics served (bool per device) and dropped (abort rule: dropped at the ES).
    Pass ``r = r_hat`` and ``eps = [1.0] * N`` to score on observed values.
    """
    return _simulate_slot(config, acc, c, radio_free, es_free, g, s, r, phi, eps, L, active, m, e)


# --------------------------------------------------------------------------------------------
# A run of many slots
# --------------------------------------------------------------------------------------------
def run_slots(config: dict, acc: list, c: list, slots: list) -> list:
    """Simulate every slot in order from empty queues, with the TRUE values.

    ``slots[t]`` holds s, r, r_hat, phi, eps, L, active, m, e (plain lists). Per slot the result
    holds t, g, radio_free_before, es_free_before, A, S, F, latency, ok, acc, reward_true,
    reward_observed (the same decision scored on r_hat, eps = 1, the same phi and starting queues,
    without advancing the state), radio_free_after, es_free_after.
    """
    slot_ms = float(config["slot_ms"])
    out = []
    radio_free = None
    es_free = None
    for t, sl in enumerate(slots):
        N, M = len(sl["s"]), len(sl["phi"])
        if radio_free is None:
            radio_free = [0.0] * N  # at t = 0 every queue is empty
            es_free = [0.0] * M
        g = t * slot_ms
        common = dict(config=config, acc=acc, c=c, radio_free=radio_free, es_free=es_free, g=g,
                      s=sl["s"], phi=sl["phi"], L=sl["L"], active=sl["active"],
                      m=sl["m"], e=sl["e"])
        true = score(r=sl["r"], eps=sl["eps"], **common)
        observed = score(r=sl["r_hat"], eps=[1.0] * N, **common)
        out.append({
            "t": t,
            "g": g,
            "radio_free_before": list(radio_free),
            "es_free_before": list(es_free),
            "A": true["A"], "S": true["S"], "F": true["F"], "latency": true["latency"],
            "ok": true["ok"], "acc": true["acc"],
            "reward_true": true["reward"],
            "reward_observed": observed["reward"],
            "radio_free_after": true["radio_free_after"],
            "es_free_after": true["es_free_after"],
        })
        radio_free = true["radio_free_after"]
        es_free = true["es_free_after"]
    return out


# --------------------------------------------------------------------------------------------
# Baselines on observed values (docs/model.md section 6)
# --------------------------------------------------------------------------------------------
def _reachable(n, L, active, M):
    """Reachable ES of device n (empty if it has no task)."""
    if not active[n]:
        return []
    return [mm for mm in range(M) if L[n][mm]]


def greedy_decision(config, acc, c, radio_free, es_free, g, s, r_hat, phi, L, active):
    """Greedy baseline (docs/model.md section 6) on observed values (r_hat, eps = 1).

    Devices with a task and a link are placed in order of their earliest possible arrival
    ``max(g, radio_free[n]) + s[n] * 8 / max_{reachable m} r_hat[n][m]`` (ties by device index).
    Each takes the (m, e) maximising R over the devices placed so far plus itself (devices not yet
    placed contribute nothing), ties (within TIE_TOL) to the earlier finish F of its own task, then
    the lower m, then the lower e. Devices without a task or without a link get (-1, -1).
    """
    N, M, E = len(s), len(phi), len(acc)
    g = float(g)
    ones = [1.0] * N

    candidates = []
    for n in range(N):
        reach = _reachable(n, L, active, M)
        if reach:
            best_rate = max(float(r_hat[n][mm]) for mm in reach)
            earliest = max(g, float(radio_free[n])) + float(s[n]) * 8.0 / best_rate
            candidates.append((earliest, n))
    candidates.sort()  # by earliest arrival, then device index

    m_dec = [-1] * N
    e_dec = [-1] * N
    placed = [0] * N  # the "active" mask used when scoring: devices placed so far
    for _, n in candidates:
        placed[n] = 1
        best = None  # (R, F_own, m, e)
        for mm in _reachable(n, L, active, M):  # ascending m
            for ee in range(E):  # ascending e
                m_dec[n], e_dec[n] = mm, ee
                res = score(config, acc, c, radio_free, es_free, g, s, r_hat, phi, ones, L,
                            placed, m_dec, e_dec)
                R, F_own = res["reward"], res["F"][n]
                if best is None:
                    better = True
                elif R > best[0] + TIE_TOL:
                    better = True
                elif abs(R - best[0]) <= TIE_TOL and F_own < best[1] - TIE_TOL:
                    better = True
                else:
                    better = False  # equal R and F: keep the lower (m, e) found first
                if better:
                    best = (R, F_own, mm, ee)
        m_dec[n], e_dec[n] = best[2], best[3]
    return m_dec, e_dec


def brute_force_best(config, acc, c, radio_free, es_free, g, s, r_hat, phi, L, active):
    """Exact optimum of R on observed values by enumerating every decision (tiny N only).

    Every device with a task and a link tries every reachable (m, e). R includes the -rho of
    active devices without a link. Returns (best reward, m, e); devices without a served task
    get (-1, -1). Among optimal decisions the first in enumeration order is returned.
    """
    N, M, E = len(s), len(phi), len(acc)
    ones = [1.0] * N
    deciders = [n for n in range(N) if _reachable(n, L, active, M)]
    option_lists = [[(mm, ee) for mm in _reachable(n, L, active, M) for ee in range(E)]
                    for n in deciders]
    best_R, best_m, best_e = None, None, None
    for combo in itertools.product(*option_lists):
        m_dec = [-1] * N
        e_dec = [-1] * N
        for n, (mm, ee) in zip(deciders, combo):
            m_dec[n], e_dec[n] = mm, ee
        R = score(config, acc, c, radio_free, es_free, g, s, r_hat, phi, ones, L, active,
                  m_dec, e_dec)["reward"]
        if best_R is None or R > best_R:
            best_R, best_m, best_e = R, m_dec, e_dec
    return best_R, best_m, best_e


# --------------------------------------------------------------------------------------------
# Trace checking (docs/model.md section 7)
# --------------------------------------------------------------------------------------------
def _num(x):
    """A JSON number as float, or None for null."""
    return None if x is None else float(x)


def check_trace(path: str, tol_ms: float = 2e-3) -> list:
    """Re-simulate a JSON Lines trace and return human-readable mismatches (empty if it agrees).

    The run is re-simulated from empty queues with the slots' recorded inputs and decisions, our
    own queue state being carried from slot to slot. Checked per slot:
      * the line structure, t = 0, 1, 2, ... and g = t * slot_ms (within tol_ms);
      * the decision's validity: m = e = -1 for a device without a task, and for an active device
        with a link a reachable m and a valid e (an invalid decision is reported, then treated as
        a task that fails);
      * radio_free_before / es_free_before against our carried state, as max(value, g), within
        tol_ms. After a reported mismatch we continue from the TRACE's state, so one fault is
        reported once rather than in every later slot;
      * A, S, F, latency within tol_ms, null exactly where the device has no served task;
      * ok and acc (acc within 1e-6, i.e. the right exit or 0), both ignored when our latency is
        within tol_ms of the deadline;
      * reward_true and reward_observed within 1e-3, widened by what the tasks whose latency is
        within tol_ms of the deadline could legitimately change (acc[e] + rho * sigmoid).
    Where the trace's A (or S) is within tol_ms of ours, it decides the FCFS order among near-ties
    (and the abort rule's drop test S >= dl), so that a float32 implementation is not blamed for
    resolving a sub-tolerance tie the other way.
    """
    problems = []

    def report(msg):
        problems.append(msg)

    with open(path, "r", encoding="utf-8") as fh:
        lines = [ln for ln in fh.read().splitlines() if ln.strip()]
    if not lines:
        return ["trace is empty"]
    try:
        records = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as exc:
        return [f"trace is not valid JSON Lines: {exc}"]

    header = records[0]
    if header.get("kind") != "header":
        return ["line 1: kind is not 'header'"]
    config = header.get("config") or {}
    missing = [k for k in ("slot_ms", "deadline_ms", "rho", "overdue") if k not in config]
    if missing or "acc" not in header or "c" not in header:
        return [f"header: missing field(s) {missing + [k for k in ('acc', 'c') if k not in header]}"]
    try:
        deadline, rho, overdue = _config_values(config)
    except ValueError as exc:
        return [f"header: {exc}"]
    slot_ms = float(config["slot_ms"])
    acc_table = [float(x) for x in header["acc"]]
    c_table = [[float(x) for x in row] for row in header["c"]]
    E = len(acc_table)

    radio_free = None
    es_free = None
    expected_t = 0
    for lineno, rec in enumerate(records[1:], start=2):
        if rec.get("kind") != "slot":
            report(f"line {lineno}: kind {rec.get('kind')!r} is not 'slot'")
            continue
        t = rec.get("t")
        where = f"slot t={t} (line {lineno})"
        try:
            s = [float(x) for x in rec["s"]]
            r = [[float(x) for x in row] for row in rec["r"]]
            r_hat = [[float(x) for x in row] for row in rec["r_hat"]]
            phi = [float(x) for x in rec["phi"]]
            eps = [float(x) for x in rec["eps"]]
            L = [[int(x) for x in row] for row in rec["L"]]
            active = [int(x) for x in rec["active"]]
            m_tr = [int(x) for x in rec["m"]]
            e_tr = [int(x) for x in rec["e"]]
        except (KeyError, TypeError, ValueError) as exc:
            report(f"{where}: malformed inputs/decision ({exc!r}); slot skipped")
            continue
        N, M = len(s), len(phi)
        shapes_ok = (len(r) == N and len(r_hat) == N and len(eps) == N and len(L) == N
                     and len(active) == N and len(m_tr) == N and len(e_tr) == N
                     and all(len(row) == M for row in r + r_hat + L) and len(c_table) == M
                     and all(len(row) == E for row in c_table))
        if not shapes_ok:
            report(f"{where}: array shapes disagree with N={N}, M={M}, E={E}; slot skipped")
            continue

        if not isinstance(t, int) or isinstance(t, bool):
            report(f"{where}: t is not an integer; using t={expected_t}")
            t = expected_t
        elif t != expected_t:
            report(f"{where}: expected t={expected_t} (slots must be consecutive from 0)")
        expected_t = t + 1
        g = t * slot_ms
        if rec.get("g") is None or abs(float(rec["g"]) - g) > tol_ms:
            report(f"{where}: g={rec.get('g')!r}, expected t*slot_ms={g!r}")

        if radio_free is None or len(radio_free) != N or len(es_free) != M:
            radio_free, es_free = [0.0] * N, [0.0] * M  # empty queues at the start of the run

        # Queue state before the slot, compared as max(value, g).
        for key, ours, size in (("radio_free_before", radio_free, N), ("es_free_before", es_free, M)):
            theirs = rec.get(key)
            if not isinstance(theirs, list) or len(theirs) != size or any(v is None for v in theirs):
                report(f"{where}: {key} missing or malformed")
                continue
            bad = [i for i in range(size) if abs(max(float(theirs[i]), g) - max(ours[i], g)) > tol_ms]
            for i in bad:
                report(f"{where}: {key}[{i}] trace {theirs[i]!r} vs reference {ours[i]!r} "
                       f"(compared as max(value, g={g!r}))")
            if bad:  # continue from the trace's state so the fault is reported once
                ours[:] = [float(v) for v in theirs]

        # Decision validity; an invalid decision is treated as a failing task.
        m_dec, e_dec = list(m_tr), list(e_tr)
        for n in range(N):
            has_link = any(L[n])
            if not active[n]:
                if m_tr[n] != -1 or e_tr[n] != -1:
                    report(f"{where}: device {n} has no task but m={m_tr[n]}, e={e_tr[n]} (expected -1)")
                m_dec[n], e_dec[n] = -1, -1
            elif not has_link:
                if m_tr[n] != -1 or e_tr[n] != -1:
                    report(f"{where}: device {n} has no link but m={m_tr[n]}, e={e_tr[n]} (expected -1)")
                m_dec[n], e_dec[n] = -1, -1
            elif not (0 <= m_tr[n] < M and L[n][m_tr[n]] and 0 <= e_tr[n] < E):
                report(f"{where}: device {n} has an invalid decision m={m_tr[n]}, e={e_tr[n]}")
                m_dec[n], e_dec[n] = -1, -1

        def column(key):
            v = rec.get(key)
            return v if isinstance(v, list) and len(v) == N else None

        hint_A = column("A")
        hint_S = column("S")
        hint_A = [_num(x) for x in hint_A] if hint_A is not None else None
        hint_S = [_num(x) for x in hint_S] if hint_S is not None else None
        true = _simulate_slot(config, acc_table, c_table, radio_free, es_free, g, s, r, phi, eps,
                              L, active, m_dec, e_dec, hint_A=hint_A, hint_S=hint_S,
                              hint_tol=tol_ms)
        observed = _simulate_slot(config, acc_table, c_table, radio_free, es_free, g, s, r_hat,
                                  phi, [1.0] * N, L, active, m_dec, e_dec)

        # Per-device times.
        for key in ("A", "S", "F", "latency"):
            theirs = column(key)
            if theirs is None:
                report(f"{where}: {key} missing or of the wrong length")
                continue
            for n in range(N):
                mine, tv = true[key][n], theirs[n]
                if mine is None or tv is None:
                    if (mine is None) != (tv is None):
                        report(f"{where}: {key}[{n}] trace {tv!r} vs reference {mine!r}")
                elif abs(float(tv) - mine) > tol_ms:
                    report(f"{where}: {key}[{n}] trace {tv!r} vs reference {mine!r}")

        # ok and achieved accuracy (not judged at the deadline edge).
        near_edge = [true["latency"][n] is not None and abs(true["latency"][n] - deadline) < tol_ms
                     for n in range(N)]
        ok_tr, acc_tr = column("ok"), column("acc")
        if ok_tr is None or acc_tr is None:
            report(f"{where}: ok/acc missing or of the wrong length")
        else:
            for n in range(N):
                if near_edge[n]:
                    continue
                if bool(ok_tr[n]) != true["ok"][n]:
                    report(f"{where}: ok[{n}] trace {ok_tr[n]!r} vs reference {true['ok'][n]!r}")
                if acc_tr[n] is None or abs(float(acc_tr[n]) - true["acc"][n]) > 1e-6:
                    report(f"{where}: acc[{n}] trace {acc_tr[n]!r} vs reference {true['acc'][n]!r}")

        # Rewards, with slack for tasks at the deadline edge whose success is a matter of rounding.
        for key, res in (("reward_true", true), ("reward_observed", observed)):
            slack = 1e-3
            for n in range(N):
                lat = res["latency"][n]
                if lat is not None and abs(lat - deadline) < tol_ms:
                    slack += acc_table[e_dec[n]] + rho * sigmoid((lat - deadline) / deadline)
            tv = rec.get(key)
            if tv is None or abs(float(tv) - res["reward"]) > slack:
                report(f"{where}: {key} trace {tv!r} vs reference {res['reward']!r}")

        radio_free = true["radio_free_after"]
        es_free = true["es_free_after"]
    return problems
