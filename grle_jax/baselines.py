"""Baseline policies (docs/model.md section 6) over the common policy interface.

A policy is ``act(key, static, params, obs) -> option`` with ``option`` (N,) int32, the option
index ``m * E + e`` per device (-1 for a device with no task or no reachable ES). Policies read
only the ``Observation`` (observed values), never the true rates or eps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import EnvParams, EnvStatic
from .dynamics import evaluate, reachable
from .types import Observation


def random_policy(key: jax.Array, static: EnvStatic, params: EnvParams, obs: Observation) -> jnp.ndarray:
    """A uniformly random reachable option per device: the j-th reachable option (ES-major order)
    with j = floor(u * count), one uniform per device. The j-th reachable option is exit j % E of
    the (j // E)-th reachable ES, found with a cumulative count over the M links (not over all
    M * E options: under vmap this is the cheaper form)."""
    links = obs.L.astype(jnp.int32)  # (N, M)
    count = jnp.sum(links, axis=-1) * static.e
    u = jax.random.uniform(key, (static.n,))
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
    return jnp.argsort(jnp.where(has, arrival, jnp.inf), stable=True)


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
    are the option indices, and with ``lookahead=None`` this is exactly ``greedy_policy``."""
    from .dynamics import lookahead_score

    n = static.n
    mask = reachable(static, obs.L)[:, options]  # (N, P)
    order = greedy_order(static, obs)

    def place(i, carry):
        decision, placed = carry  # decision: (N,) environment options, -1 for none yet
        d = order[i]
        include = placed.at[d].set(True)

        def try_option(o):
            out = evaluate(static, params, obs, decision.at[d].set(o), include)
            value = out.reward if lookahead is None else lookahead_score(params, out, lookahead)
            return value, out.F[d]

        R, F = jax.vmap(try_option)(options)
        R = jnp.where(mask[d], R, -jnp.inf)
        best_R = jnp.max(R)
        F_tie = jnp.where(R == best_R, F, jnp.inf)
        best_F = jnp.min(F_tie)
        pick = jnp.argmax((R == best_R) & (F_tie == best_F))  # first = lowest position
        can = obs.active[d] & jnp.any(mask[d])
        decision = decision.at[d].set(jnp.where(can, options[pick].astype(jnp.int32), -1))
        return decision, include

    decision0 = jnp.full((n,), -1, jnp.int32)
    decision, _ = jax.lax.fori_loop(0, n, place, (decision0, jnp.zeros((n,), bool)))
    # environment options -> positions in ``options``
    pos = jnp.argmax(decision[:, None] == options[None, :], axis=1).astype(jnp.int32)
    return jnp.where(decision >= 0, pos, -1)


POLICIES = {"random": random_policy, "greedy": greedy_policy}
