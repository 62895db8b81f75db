"""Slot dynamics (MODEL.md section 2) as pure, vmappable JAX functions.

A decision is one option index per device, ``option[n] = m * E + e`` (ES m, exit e); any value
for a device without a task is ignored. A device whose chosen ES is unreachable (or whose option
is out of range, e.g. -1) has a task that fails like an active device with no link: no
transmission, no ES time, it costs ``rho``.

How FCFS is computed without a loop over tasks: per ES the queue is a max-plus recurrence
``free_i = max(free_{i-1}, A_i) + w_i`` over the tasks in arrival order, which unrolls to
``free_i = cum_i + max(x0, max_{j <= i} (A_j - cumx_j))`` with ``cum`` the running sum of the work
``w`` and ``cumx`` the sum strictly before. With N devices that is an N x N "who is ahead of whom"
matrix, so the whole slot is a few fused array operations, and it vmaps over environments and over
candidate decisions. Under ``abort`` a task that arrives at or after the deadline is dropped (it is
the identity on the queue), and every other task acts as ``x -> min(max(x, A) + w, dl)``; since
``max(x, A) + w >= x`` those clipped maps compose to the clip of the unclipped composition, so the
same closed form, clipped at the deadline, gives the ``abort`` queue exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import EnvParams, EnvStatic
from .types import EnvState, Observation, Outcome, SlotInputs


def slot_outcome(
    static: EnvStatic,
    params: EnvParams,
    radio0: jnp.ndarray,  # (N,) radio backlog after g
    es0: jnp.ndarray,  # (M,) ES backlog after g
    s: jnp.ndarray,  # (N,)
    rate: jnp.ndarray,  # (N, M) rates used (true r or observed r_hat)
    phi: jnp.ndarray,  # (M,)
    eps: jnp.ndarray,  # (N,) compute fluctuation (ones when scoring on observed values)
    L: jnp.ndarray,  # (N, M) bool
    has_task: jnp.ndarray,  # (N,) bool
    option: jnp.ndarray,  # (N,) int
) -> Outcome:
    """Everything that happens in one slot, in times relative to its generation instant g."""
    n, e_count = static.n, static.e
    D = params.deadline_ms
    option = option.astype(jnp.int32)
    in_range = (option >= 0) & (option < static.options)
    opt = jnp.clip(option, 0, static.options - 1)
    m = opt // e_count
    e = opt % e_count
    rows = jnp.arange(n)
    served = has_task & in_range & L[rows, m]

    # 1. transmission: the device's own radio queue, then s*8/r.
    start = jnp.maximum(radio0, 0.0)
    A = start + s * 8.0 / rate[rows, m]
    # 3. computation time of each task if run to the end.
    w_full = params.c[m, e] * eps / phi[m]
    # 2. FCFS per ES: before[i, j] = task j is served before task i on the same ES.
    same = (m[:, None] == m[None, :]) & served[:, None] & served[None, :]
    earlier = (A[None, :] < A[:, None]) | ((A[None, :] == A[:, None]) & (rows[None, :] < rows[:, None]))
    before = same & earlier
    if static.overdue == "abort":
        counts = served & (A < D)  # a task arriving at/after dl is dropped: identity on the queue
    else:
        counts = served
    w = jnp.where(counts, w_full, 0.0)
    cumx = jnp.sum(jnp.where(before, w[None, :], 0.0), axis=1)  # work strictly ahead of i
    x0 = jnp.maximum(es0, 0.0)[m]
    lead = jnp.where(before & counts[None, :], (A - cumx)[None, :], -jnp.inf)
    free_before = cumx + jnp.maximum(x0, jnp.max(lead, axis=1, initial=-jnp.inf))
    if static.overdue == "abort":
        free_before = jnp.minimum(free_before, D)
    S = jnp.maximum(A, free_before)
    F = S + w_full
    ok = served & (F <= D)

    # queues after this slot
    on_es = (m[None, :] == jnp.arange(static.m)[:, None]) & counts[None, :]  # (M, N)
    tot = jnp.sum(jnp.where(on_es, w[None, :], 0.0), axis=1)
    lead_es = jnp.max(jnp.where(on_es, (A - cumx)[None, :], -jnp.inf), axis=1, initial=-jnp.inf)
    es_after = tot + jnp.maximum(jnp.maximum(es0, 0.0), lead_es)
    if static.overdue == "abort":
        es_after = jnp.where(jnp.any(on_es, axis=1), jnp.minimum(es_after, D), jnp.maximum(es0, 0.0))
        radio_after = jnp.where(served, jnp.minimum(A, D), start)
    else:
        radio_after = jnp.where(served, A, start)

    acc_e = params.acc[e]
    achieved = jnp.where(ok, acc_e, 0.0)
    late = served & ~ok
    penalty = params.rho * jax.nn.sigmoid((F - D) / D)
    unserved = has_task & ~served
    reward = (
        jnp.sum(achieved)
        - jnp.sum(jnp.where(late, penalty, 0.0))
        - params.rho * jnp.sum(unserved.astype(jnp.float32))
    )
    nan = jnp.full_like(A, jnp.nan)
    A_r = jnp.where(served, A, nan)
    S_r = jnp.where(served, S, nan)
    F_r = jnp.where(served, F, nan)
    return Outcome(
        A=A_r, S=S_r, F=F_r, latency=F_r, ok=ok, acc=achieved, has_task=has_task, served=served,
        reward=reward, radio_after=radio_after, es_after=es_after,
    )


def advance(params: EnvParams, state: EnvState, inputs: SlotInputs, out: Outcome) -> EnvState:
    """The state at the next slot's g: backlogs shifted by T (kept >= 0)."""
    T = params.slot_ms
    return EnvState(
        t=state.t + 1,
        radio=jnp.maximum(out.radio_after - T, 0.0),
        es=jnp.maximum(out.es_after - T, 0.0),
        L=inputs.L,
        active=inputs.active,
    )


def step(
    static: EnvStatic, params: EnvParams, state: EnvState, inputs: SlotInputs, option: jnp.ndarray
) -> tuple[EnvState, Outcome]:
    """Execute a decision with the TRUE values; return the next state and the slot's outcome."""
    out = slot_outcome(
        static, params, state.radio, state.es, inputs.s, inputs.r, inputs.phi, inputs.eps,
        inputs.L, inputs.active, option,
    )
    return advance(params, state, inputs, out), out


def evaluate(static: EnvStatic, params: EnvParams, obs: Observation, option: jnp.ndarray,
             include: jnp.ndarray | None = None) -> Outcome:
    """Score a decision on OBSERVED values (r_hat, eps = 1) without advancing anything.
    ``include`` (N,) bool restricts the slot to some devices (the others are treated as having
    no task); the greedy baseline uses it to score partial decisions."""
    has_task = obs.active if include is None else obs.active & include
    return slot_outcome(
        static, params, obs.radio, obs.es, obs.s, obs.r_hat, obs.phi, jnp.ones_like(obs.s),
        obs.L, has_task, option,
    )


def score(static: EnvStatic, params: EnvParams, obs: Observation, option: jnp.ndarray) -> jnp.ndarray:
    """R on observed values. ``option`` may be (N,) or (K, N): K candidates are scored in one call."""
    if option.ndim == 1:
        return evaluate(static, params, obs, option).reward
    return jax.vmap(lambda o: evaluate(static, params, obs, o).reward)(option)


def reachable(static: EnvStatic, L: jnp.ndarray) -> jnp.ndarray:
    """(N, M*E) bool: option ``m * E + e`` is reachable by device n (its link to ES m is up)."""
    return jnp.repeat(L, static.e, axis=-1)


def split_option(static: EnvStatic, option: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Option index -> (ES index, exit index); -1 stays -1 in both."""
    none = option < 0
    return jnp.where(none, -1, option // static.e), jnp.where(none, -1, option % static.e)
