"""Baseline policies (docs/model.md section 6) over the common policy interface.

A policy is ``act(key, static, params, obs) -> option`` with ``option`` (N,) int32, the option
index ``m * E + e`` per device (-1 for a device with no task or no reachable ES). Policies read
only the ``Observation`` (observed values), never the true rates or eps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import EnvParams, EnvStatic
from .dynamics import reachable
from .order import first_in_order
from .threefry import computed_once
from .types import Observation


def random_policy(key: jax.Array, static: EnvStatic, params: EnvParams, obs: Observation) -> jnp.ndarray:
    """A uniformly random reachable option per device: the j-th reachable option (ES-major order)
    with j = floor(u * count), one uniform per device. The j-th reachable option is exit j % E of
    the (j // E)-th reachable ES, found with a cumulative count over the M links (not over all
    M * E options: under vmap this is the cheaper form)."""
    links = obs.L.astype(jnp.int32)  # (N, M)
    count = jnp.sum(links, axis=-1) * static.e
    u = computed_once(jax.random.uniform(key, (static.n,)))  # one hash for its three readers
    j = jnp.minimum(jnp.floor(u * count).astype(jnp.int32), jnp.maximum(count - 1, 0))
    q = j // static.e  # the q-th reachable ES ...
    m = jnp.sum(jnp.cumsum(links, axis=-1) <= q[:, None], axis=-1)  # ... is ES m
    choice = m * static.e + j % static.e
    return jnp.where(obs.active & (count > 0), choice, -1).astype(jnp.int32)


def greedy_order(static: EnvStatic, obs: Observation) -> jnp.ndarray:
    """Devices by earliest possible arrival max(g, radio_free) + s*8/max reachable r_hat, ties by
    index; devices without a task or without a link come last."""
    best_rate = jnp.max(jnp.where(obs.L, obs.r_hat, 0.0), axis=-1)
    has = obs.active & jnp.any(obs.L, axis=-1)
    arrival = jnp.maximum(obs.radio, 0.0) + obs.s * 8.0 / jnp.where(has, best_rate, 1.0)
    return first_in_order((jnp.where(has, arrival, jnp.inf),), static.n)  # a stable argsort, no sort


def greedy_policy(key: jax.Array, static: EnvStatic, params: EnvParams, obs: Observation) -> jnp.ndarray:
    """Place devices one by one (``greedy_order``); each takes the option maximising R on observed
    values over the devices placed so far; ties to the earlier finish F of its own task, then the
    lower ES, then the lower exit (i.e. the lower option index)."""
    del key
    return sequential_decode(static, params, obs, jnp.arange(static.options, dtype=jnp.int32))


def sequential_decode(static: EnvStatic, params: EnvParams, obs: Observation, options: jnp.ndarray,
                      lookahead: float | None = None) -> jnp.ndarray:
    """Greedy's sequential placement over a subset of options: devices in ``greedy_order``, each
    takes the option among ``options`` ((P,) environment option indices) that maximises the score
    of the devices placed so far, ties to its own earlier finish F, then the lower position in
    ``options``. The score is R on observed values, or with ``lookahead`` the critic's score
    ``R - lookahead * carry / D`` (``dynamics.lookahead_score``). Returns (N,) POSITIONS in
    ``options`` (-1 for a device with no task or no reachable option): with every option, positions
    are the option indices, and with ``lookahead=None`` this is exactly ``greedy_policy``.

    How: each try is the slot of ``dynamics.evaluate`` restricted to the devices placed so far,
    computed incrementally. The placed tasks that reach an ES are kept in FCFS order (arrival,
    ties to the lower device index), so a try inserts the new task at its place and serves the N
    positions in order with the same recurrence and the same float operations as
    ``dynamics._kernel`` (O(N) per try instead of the kernel's O(N^2) rank-and-select); the
    reward's sums run over the devices in index order, as the kernel's do. The decisions are
    bit-identical to those of scoring every try with ``evaluate``
    (tests/test_variant.py::test_sequential_decode_equals_evaluate_tries)."""
    from .dynamics import carry_over, in_order, overdue_after

    n, n_es, e_count = static.n, static.m, static.e
    abort = params.abort
    options = jnp.asarray(options, jnp.int32)
    n_opt = options.shape[0]
    mask = reachable(static, obs.L)[:, options]  # (N, P)
    order = greedy_order(static, obs)
    D, rho = params.deadline_ms, params.rho
    f32 = obs.s.dtype
    m_o = options // e_count  # (P,) ES of each option
    # per (device, option): arrival and reach; per option: computation time (eps = 1) and accuracy
    start = jnp.maximum(obs.radio, 0.0)
    rate = jnp.stack([obs.r_hat[:, m] for m in range(n_es)], axis=0)  # (M, N)
    pick = lambda x: sum(jnp.where(m_o == k, x[k][..., None], 0) for k in range(n_es))  # noqa: E731 (M, N) -> (N, P)
    A_o = start[:, None] + obs.s[:, None] * 8.0 / pick(rate)  # (N, P)
    link_o = pick(jnp.stack([obs.L[:, m].astype(jnp.int32) for m in range(n_es)])) > 0  # (N, P)
    c_flat = params.c.reshape((static.options,))
    w_o = c_flat[options] * jnp.ones((), f32) / obs.phi[m_o]  # (P,)
    acc_o = params.acc[options % e_count]  # (P,)
    pos = jnp.arange(n)
    dev = jnp.arange(n)

    def insert(arr, q, new, do):
        """``arr`` (..., N) by position with ``new`` put at position ``q`` (later ones shift up)."""
        shifted = jnp.concatenate([arr[..., :1], arr[..., :-1]], axis=-1)
        ins = jnp.where(pos < q[..., None], arr, jnp.where(pos == q[..., None], new[..., None], shifted))
        return jnp.where(do[..., None], ins, arr)

    def place(i, carry):
        decision, placed, sa, sw, sm, sd, count, posd, wd, accd = carry
        d = order[i]
        live_d = obs.active[d] & link_o[d]  # (P,) its task reaches the option's ES
        a_d = A_o[d]  # (P,)
        ahead = (pos[None] < count) & ((sa[None] < a_d[:, None]) | ((sa[None] == a_d[:, None]) & (sd[None] < d)))
        q = jnp.sum(ahead, axis=-1, dtype=jnp.int32)  # (P,) its FCFS position among the placed tasks
        ia = insert(jnp.broadcast_to(sa, (n_opt, n)), q, a_d, live_d)
        iw = insert(jnp.broadcast_to(sw, (n_opt, n)), q, w_o, live_d)
        im = insert(jnp.broadcast_to(sm, (n_opt, n)), q, m_o, live_d)
        n_live = count + live_d.astype(jnp.int32)  # (P,)

        def serve(p, c):
            free, S = c  # free: (M, P); S: (P, N) by position
            a, w, mp = ia[:, p], iw[:, p], im[:, p]
            before = sum(jnp.where(mp == k, free[k], 0.0) for k in range(n_es))
            start_es = jnp.maximum(a, before)
            after = overdue_after(abort, start_es, w, before, D)
            busy = p < n_live
            free = jnp.stack([jnp.where(busy & (mp == k), after, free[k]) for k in range(n_es)])
            return free, S.at[:, p].set(start_es)

        free0 = jnp.broadcast_to(jnp.maximum(obs.es, 0.0)[:, None], (n_es, n_opt))
        # at most i + 1 tasks are placed (count <= i): the positions after them serve nothing, and
        # what the loop would write there (S) is never read for a served task
        es_after, S_pos = jax.lax.fori_loop(0, i + 1, serve, (free0, jnp.zeros((n_opt, n), f32)))
        # back to devices: a placed task behind the new one moved up one position
        posd_o = jnp.where(live_d[:, None] & (posd[None] >= q[:, None]), posd[None] + 1, posd[None])  # (P, N)
        posd_o = jnp.where((dev[None] == d) & live_d[:, None], q[:, None], posd_o)
        served = posd_o < n  # (P, N)
        S = jnp.take_along_axis(S_pos, jnp.minimum(posd_o, n - 1), axis=1)
        w_full = jnp.where(dev[None] == d, w_o[:, None], wd[None])
        acc_full = jnp.where(dev[None] == d, acc_o[:, None], accd[None])
        F = S + w_full
        ok = served & (F <= D)
        achieved = jnp.where(ok, acc_full, 0.0)
        late = served & ~ok
        penalty = rho * jax.nn.sigmoid((F - D) / D)
        has_task = obs.active & (placed | (dev == d))
        unserved = has_task[None] & ~served

        def by_device(x):  # the kernel's sum over devices: 0 + x_0 + x_1 + ... in index order
            return in_order(x, axis=-1)

        reward = (by_device(achieved) - by_device(jnp.where(late, penalty, 0.0))
                  - rho * by_device(unserved.astype(f32)))
        if lookahead is None:
            R = reward
        else:
            R = reward - lookahead * carry_over(params, _Tried(es_after.T)) / D
        F_d = F[:, d]
        R = jnp.where(mask[d], R, -jnp.inf)
        best_R = jnp.max(R)
        F_tie = jnp.where(R == best_R, F_d, jnp.inf)
        best_F = jnp.min(F_tie)
        k = jnp.argmax((R == best_R) & (F_tie == best_F))  # first = lowest position
        can = obs.active[d] & jnp.any(mask[d])
        decision = decision.at[d].set(jnp.where(can, options[k], -1))
        # keep the chosen try's FCFS order (a task that reaches no ES is not in it)
        take = can & live_d[k]
        sa = insert(sa, q[k], a_d[k], take)
        sw = insert(sw, q[k], w_o[k], take)
        sm = insert(sm, q[k], m_o[k], take)
        sd = insert(sd, q[k], d, take)
        posd = jnp.where(take, posd_o[k], posd)
        wd = wd.at[d].set(jnp.where(take, w_o[k], wd[d]))
        accd = accd.at[d].set(jnp.where(take, acc_o[k], accd[d]))
        return decision, placed.at[d].set(True), sa, sw, sm, sd, count + take.astype(jnp.int32), posd, wd, accd

    zeros = jnp.zeros((n,), f32)
    carry0 = (jnp.full((n,), -1, jnp.int32), jnp.zeros((n,), bool), zeros, zeros, jnp.zeros((n,), jnp.int32),
              jnp.full((n,), n, jnp.int32), jnp.zeros((), jnp.int32), jnp.full((n,), n, jnp.int32), zeros, zeros)
    decision = jax.lax.fori_loop(0, n, place, carry0)[0]
    # environment options -> positions in ``options``
    p_of = jnp.argmax(decision[:, None] == options[None, :], axis=1).astype(jnp.int32)
    return jnp.where(decision >= 0, p_of, -1)


class _Tried:
    """What ``dynamics.carry_over`` reads of an outcome: the ES backlogs after the slot."""

    def __init__(self, es_after):
        self.es_after = es_after


POLICIES = {"random": random_policy, "greedy": greedy_policy}
