"""The exact per-slot oracle (docs/model.md section 6): the decision that maximises R on observed values.

``oracle_policy(key, static, params, obs)`` is an ordinary policy (pure, jit-able, vmap-able, no
data-dependent control flow); ``oracle_decision`` also returns the optimum it found. The method and
the proof that it is exact are in docs/oracle.md; in short:

1. With rho = 0, R is the total accuracy of on-time tasks. On one ES the tasks of a slot are served
   in FCFS order (A, device index) after the ES backlog x0, and share the deadline D. Finish times
   never decrease along that order, so the on-time tasks are a PREFIX of it, under both overdue
   rules (a late task is followed only by late tasks, and never delays an earlier one). So for a
   set S of tasks on ES m the best value is ``V_m(S) = max over prefixes P of S of best_m(P)``,
   where ``best_m(P)`` is the most accuracy with every task of P on time.
2. Which exits: every task on ES m has the same menu (weight ``w_e = c[m, e] / phi[m]``, accuracy
   ``acc[e]``), and P is on time iff ``s_q + W_q <= D`` for every position q of P, with
   ``s_q = max(A_q, x0)`` and ``W_q`` the work from position q to the end. For a given MULTISET
   of exits, putting the heaviest first minimises every ``W_q`` at once, so only multisets matter
   (C(N + E, E) of them, 11,627 at N = 14, E = 5), each placed heaviest-first.
3. For a multiset n of size k, position q may hold a task starting no later than
   ``D - W_q(n)``; with starts sorted by rank this is "rank <= R_n(q)". The largest feasible set
   is ``P*(n)`` (``p*_q = min_{q' >= q} R_n(q') - q' + q``) and P of size k is feasible for n iff
   ``P <= P*(n)`` position by position (the Gale order). So ``best_m(P)`` is the largest
   ``acc(n)`` over the n with ``P <= P*(n)``: a scatter of the multisets' values onto their
   ``P*(n)``, then a max over everything above in the Gale order, which a recursion on the top
   bit computes in N passes over the 2^N sets (O(N 2^N), no sorting, no search).
4. The ES assignment: the best of ``sum_m V_m(S_m)`` over all M^N assignments (only reachable
   ES), then the exits of the winner are read back from its on-time prefixes.

rho > 0 (late tasks cost a penalty that depends on their finish time, so late tasks' exits and
the order of late tasks matter) is NOT handled: ``check_oracle_config`` rejects it, and with
rho > 0 ``oracle_policy`` still returns the most-accuracy decision, which need not maximise R.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .config import EnvParams, EnvStatic
from .errors import ConfigError
from .order import first_in_order, ranks
from .types import Observation

# Sizes beyond which the oracle's tables would not fit a few GB or take seconds per slot.
MAX_ASSIGNMENTS = 1 << 23  # M^N
MAX_SUBSETS = 1 << 22  # 2^N (per ES)
MAX_MULTISETS = 250_000  # C(N + E, E) - 1


def oracle_sizes(n: int, m: int, e: int) -> dict:
    """Table sizes the oracle builds for N devices, M ES, E exits."""
    return {"assignments": m**n, "subsets": 2**n, "multisets": math.comb(n + e, e) - 1}


def check_oracle_config(cfg, n_exits: int = 5) -> None:
    """Raise ``ConfigError`` if the exact oracle cannot serve this config: rho > 0 (not handled),
    or N, M, E so large that its tables explode (see ``oracle_sizes``)."""
    if cfg.rho != 0:
        raise ConfigError("rho", f"the exact oracle maximises R for rho = 0 only (late tasks free), got rho = {cfg.rho}")
    sz = oracle_sizes(cfg.devices, cfg.servers, n_exits)
    if sz["assignments"] > MAX_ASSIGNMENTS or sz["subsets"] > MAX_SUBSETS:
        raise ConfigError("devices", f"the exact oracle enumerates M^N = {cfg.servers}^{cfg.devices} ES assignments; "
                                     f"at most {MAX_ASSIGNMENTS} are supported")
    if sz["multisets"] > MAX_MULTISETS:
        raise ConfigError("devices", f"the exact oracle enumerates C(N+E, E) = {sz['multisets'] + 1} exit multisets "
                                     f"(N = {cfg.devices}, E = {n_exits}); at most {MAX_MULTISETS} are supported")


# --- static tables (numpy, built once per (N, E)) -----------------------------------------------
@functools.lru_cache(maxsize=None)
def _multiset_tables(n: int, e: int):
    """All multisets of 1..n exits over e levels (level 0 = lightest after sorting by weight).

    Returns ``levpos`` (Mt, n) int32: the level of FCFS position q when placed heaviest-first
    (-1 past the multiset's size), ``size`` (Mt,) int32, ``count`` (Mt, e) float32."""
    rows = [c for k in range(1, n + 1) for c in itertools.combinations_with_replacement(range(e), k)]
    mt = len(rows)
    levpos = np.full((mt, n), -1, np.int32)
    size = np.zeros((mt,), np.int32)
    count = np.zeros((mt, e), np.float32)
    for i, c in enumerate(rows):  # c is ascending (lightest first); heaviest-first reverses it
        size[i] = len(c)
        levpos[i, : len(c)] = c[::-1]
        for lv in c:
            count[i, lv] += 1
    return levpos, size, count


@functools.lru_cache(maxsize=None)
def _high_bit(n: int) -> np.ndarray:
    """For y in [0, 2^n): its highest set bit as a power of two (0 for y = 0)."""
    y = np.arange(1 << n, dtype=np.int64)
    hb = np.zeros_like(y)
    nz = y > 0
    hb[nz] = 1 << np.floor(np.log2(y[nz])).astype(np.int64)
    return hb.astype(np.int32)


# --- per-ES tables (traced) ----------------------------------------------------------------------
def _gale_max(f: jnp.ndarray, n: int) -> jnp.ndarray:
    """g(P) = max of f(P') over the P' with |P'| = |P| and P' >= P position by position (the
    i-th smallest element of P' is at least that of P), for every bitmask P over n bits.

    Recursion on the top bit j of a block (the bits above j fixed), from j = 0 up: a set with bit
    j is dominated only by sets with bit j (its value stays); a set x without bit j is dominated
    by the sets without bit j (already folded into g) and by the sets y + {j} with y >= x minus
    its largest element. One pass per bit: O(n 2^n), static gathers only."""
    g = f
    hbit = _high_bit(n)
    for j in range(n):
        x = np.arange(1 << j)
        g3 = g.reshape(-1, 2, 1 << j)
        lo, hi = g3[:, 0, :], g3[:, 1, :]
        him = jnp.where(x > 0, jnp.take(hi, jnp.asarray(x - hbit[x]), axis=1), -jnp.inf)
        g = jnp.stack([jnp.maximum(lo, him), hi], axis=1).reshape(-1)
    return g


def _prefix_max(best: jnp.ndarray, n: int) -> jnp.ndarray:
    """V(S) = max over the prefixes P of S (its lowest-ranked elements) of best(P)."""
    v = best[:1]
    for b in range(n):
        v = jnp.concatenate([v, jnp.maximum(best[1 << b: 2 << b], v)])
    return v


def _rank_perm(rank: jnp.ndarray, n: int) -> jnp.ndarray:
    """perm[device mask] = the same set as a rank mask (bit rank[d] for device d)."""
    x = jnp.arange(1 << n, dtype=jnp.int32)
    d = jnp.arange(n, dtype=jnp.int32)
    return jnp.sum(jnp.left_shift((x[:, None] >> d[None, :]) & 1, rank[None, :]), axis=1, dtype=jnp.int32)


def _es_solve(n: int, e: int, A, el, x0, w, acc, D):
    """Everything about one ES. A (N,) arrivals, el (N,) bool reachable+active, x0 backlog,
    w (E,) weights, acc (E,). Returns a dict of per-ES tables."""
    levpos, size, count = _multiset_tables(n, e)
    # FCFS order (A, device index); devices that cannot use this ES go last with start +inf.
    key = jnp.where(el, A, jnp.inf)
    order = first_in_order((key,), n)  # = argsort(key, stable=True), without a sort (grle_jax.order)
    rank = ranks((key,))  # = argsort(order)
    s = jnp.maximum(key[order], x0)  # (N,) sorted starts
    lorder = first_in_order((w,), e)  # levels by weight, lightest first (ties: lower level)
    ws, accs = w[lorder], acc[lorder]

    # Column by column over FCFS positions q, last first (elementwise over the Mt multisets).
    big = jnp.int32(1 << 20)

    def column(carry, x):
        work, run_min, pmask = carry
        lp, qq = x
        inq = lp >= 0
        work = work + jnp.where(inq, jnp.take(ws, jnp.maximum(lp, 0)), 0.0)  # work from q on
        thr = D - work  # latest start allowed at position q
        R = jnp.sum((s[:, None] <= thr[None, :]).astype(jnp.int32), axis=0) - 1  # last rank fitting q
        run_min = jnp.minimum(run_min, jnp.where(inq, R - qq, big))
        p_q = run_min + qq  # the largest feasible set, at position q
        pmask = pmask | jnp.where(inq, jnp.left_shift(jnp.int32(1), jnp.clip(p_q, 0, n - 1)), 0)
        return (work, run_min, pmask), None

    mt = levpos.shape[0]
    init = (jnp.zeros((mt,), jnp.float32), jnp.full((mt,), big), jnp.zeros((mt,), jnp.int32))
    (_, run_min, pmask), _ = jax.lax.scan(column, init, (jnp.asarray(levpos.T), jnp.arange(n, dtype=jnp.int32)),
                                          reverse=True)
    feas = run_min >= 0  # p*_0 = run_min at position 0: the whole multiset fits somewhere
    val = jnp.asarray(count) @ accs  # (Mt,)
    f = jnp.full((1 << n,), -jnp.inf, jnp.float32)
    f = f.at[jnp.where(feas, pmask, 1 << n)].max(val, mode="drop").at[0].set(0.0)
    best = _gale_max(f, n)  # best(P): all of P on time, P a rank mask
    V = _prefix_max(best, n)
    perm = _rank_perm(rank, n)
    return dict(rank=rank, lorder=lorder, s=s, ws=ws, val=val, best=best, Vdev=V[perm], perm=perm)


def _digit_masks(n: int, m: int, zero: jnp.ndarray) -> jnp.ndarray:
    """(M, M^n) int32: device masks of every code over n devices (device d = base-M digit d)."""
    masks = jnp.zeros((m, 1), jnp.int32) + zero
    es_ids = jnp.arange(m, dtype=jnp.int32)[:, None]
    for d in range(n):
        masks = jnp.concatenate([masks | jnp.where(es_ids == k, 1 << d, 0) for k in range(m)], axis=1)
    return masks


def _best_assignment(n: int, m: int, Vdev: jnp.ndarray, allow: jnp.ndarray, U: jnp.ndarray):
    """The assignment of the devices in U to ES maximising sum_m V_m(S_m), every device on an ES
    it reaches. Vdev (M, 2^N) by device mask, allow (M,) masks, U mask. Returns ((M,) masks, value).

    An assignment is a base-M code over the devices (device d on ES digit d). For M = 2 the code
    is the mask of ES 1; for M > 2 it splits into a high and a low half whose small mask tables are
    OR-ed together, so no (M, M^N) table is built."""
    x = jnp.arange(1 << n, dtype=jnp.int32)
    V = jnp.where((x[None, :] & ~allow[:, None]) == 0, Vdev, -jnp.inf)  # unreachable ES: impossible
    zero = jnp.minimum(U, 0)  # a traced 0: keeps XLA from folding the large tables at compile time
    if m == 2:
        code = x + zero
        total = V[0][~code & U] + V[1][code & U]
        a = jnp.argmax(total)
        return jnp.stack([~a & U, a & U]).astype(jnp.int32), total[a]
    k = n // 2
    lo = _digit_masks(k, m, zero)  # (M, M^k): devices 0..k-1
    hi = jnp.left_shift(_digit_masks(n - k, m, zero), k)  # (M, M^(N-k)): devices k..N-1
    total = sum(V[j][(hi[j][:, None] | lo[j][None, :]) & U] for j in range(m)).reshape(-1)
    a = jnp.argmax(total)
    S = (hi[:, a // lo.shape[1]] | lo[:, a % lo.shape[1]]) & U
    return S, total[a]


def oracle_decision(static: EnvStatic, params: EnvParams, obs: Observation) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(option (N,) int32, optimum) where optimum is the most total accuracy of on-time tasks on
    observed values (R for rho = 0). Devices with no task or no link get -1."""
    n, m, e = static.n, static.m, static.e
    D = params.deadline_ms
    start = jnp.maximum(obs.radio, 0.0)
    A = start[:, None] + obs.s[:, None] * 8.0 / obs.r_hat  # (N, M), as dynamics computes it
    x0 = jnp.maximum(obs.es, 0.0)
    w = params.c / obs.phi[:, None]  # (M, E), eps = 1
    el = obs.active[:, None] & obs.L  # (N, M)
    bitv = jnp.left_shift(jnp.int32(1), jnp.arange(n, dtype=jnp.int32))
    U = jnp.sum(jnp.where(jnp.any(el, axis=1), bitv, 0))  # devices with a task and a link
    allow = jnp.sum(jnp.where(el, bitv[:, None], 0), axis=0)  # (M,)

    es = jax.vmap(lambda Am, elm, x0m, wm: _es_solve(n, e, Am, elm, x0m, wm, params.acc, D),
                  in_axes=(1, 1, 0, 0))(A, el, x0, w)

    S, value = _best_assignment(n, m, es["Vdev"], allow, U)  # (M,) device masks of the winner

    def read_back(es_m, Sm):
        rmask = es_m["perm"][Sm]
        tt = jnp.arange(n + 1)
        pref = rmask & (jnp.left_shift(jnp.int32(1), tt) - 1)
        tstar = jnp.argmax(es_m["best"][pref])
        P = pref[tstar]
        r = jnp.arange(n)
        inP = ((P >> r) & 1) == 1
        k = jnp.sum(inP)
        qpos = jnp.cumsum(inP) - 1  # FCFS position of rank r inside P
        # start of the task at each position of P (+inf past its end)
        s_at = jnp.full((n,), jnp.inf).at[jnp.where(inP, qpos, n)].set(es_m["s"], mode="drop")
        levpos, size, _ = _multiset_tables(n, e)
        ok0 = jnp.asarray(size) == k

        def column(carry, x):  # the same test as _es_solve, for this one set
            work, ok = carry
            lp, s_q = x
            inq = lp >= 0
            work = work + jnp.where(inq, jnp.take(es_m["ws"], jnp.maximum(lp, 0)), 0.0)
            return (work, ok & (~inq | (s_q <= D - work))), None

        (_, ok), _ = jax.lax.scan(column, (jnp.zeros(ok0.shape, jnp.float32), ok0),
                                  (jnp.asarray(levpos.T), s_at), reverse=True)
        pick = jnp.argmax(jnp.where(ok, es_m["val"], -jnp.inf))
        lv = jnp.asarray(levpos)[pick][jnp.clip(qpos, 0, n - 1)]  # sorted level per rank
        lv = jnp.where(inP, lv, 0)  # late tasks: the lightest exit
        exit_by_rank = es_m["lorder"][lv]
        return exit_by_rank[es_m["rank"]]  # exit per device if placed on this ES

    exits = jax.vmap(read_back)(es, S)  # (M, N)
    on = ((S[:, None] >> jnp.arange(n)[None, :]) & 1) == 1  # (M, N)
    m_of = jnp.argmax(on, axis=0)
    e_of = jnp.take_along_axis(exits, m_of[None, :], axis=0)[0]
    placed = jnp.any(on, axis=0)
    option = jnp.where(placed, m_of * e + e_of, -1).astype(jnp.int32)
    return option, value


def oracle_policy(key: jax.Array, static: EnvStatic, params: EnvParams, obs: Observation) -> jnp.ndarray:
    """The exact oracle as a policy: option (N,) int32 maximising R (rho = 0) on observed values."""
    del key
    return oracle_decision(static, params, obs)[0]
