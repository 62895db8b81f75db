"""Running a fixed (non-learning) policy for many slots as one compiled ``lax.scan``.

The slot key is ``fold_in(run_key, t)``, split into a sampling key and a policy key, so a run
cut into chunks (for a progress bar, or resumed) draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from .config import EnvParams, EnvStatic
from .dynamics import evaluate, step
from .metrics import slot_counts
from .scenario import observe, sample
from .types import EnvState

PolicyFn = Callable  # (key, static, params, obs) -> option (N,)


def slot_keys(run_key: jax.Array, t: jnp.ndarray) -> tuple[jax.Array, jax.Array]:
    """(sampling key, policy key) of slot ``t``."""
    ks, kp = jax.random.split(jax.random.fold_in(run_key, t))
    return ks, kp


def play_slot(static: EnvStatic, params: EnvParams, policy: PolicyFn, run_key, state: EnvState,
              record_trace: bool = False, reference: PolicyFn | None = None):
    """One slot: sample, observe, act, execute on true values, score on observed values.
    With ``reference`` (the exact oracle, for ``--normalise``) its decision's observed reward is
    recorded as ``reward_oracle``, on the same observation."""
    ks, kp = slot_keys(run_key, state.t)
    inputs = sample(ks, params, state, static)
    obs = observe(state, inputs)
    option = policy(kp, static, params, obs)
    nxt, out = step(static, params, state, inputs, option)
    rec = slot_counts(out)
    rec["reward_observed"] = evaluate(static, params, obs, option).reward
    if reference is not None:
        rec["reward_oracle"] = evaluate(static, params, obs, reference(kp, static, params, obs)).reward
    if record_trace:
        rec["trace"] = {"state": state, "inputs": inputs, "option": option, "out": out}
    return nxt, rec


@partial(jax.jit, static_argnums=(0, 1, 4, 5, 7))
def run_chunk(static: EnvStatic, policy: PolicyFn, run_key, params: EnvParams, length: int,
              record_trace: bool, state: EnvState, reference: PolicyFn | None = None):
    """Play ``length`` slots from ``state``; returns (state, records stacked over slots)."""

    def body(st, _):
        return play_slot(static, params, policy, run_key, st, record_trace, reference)

    return jax.lax.scan(body, state, None, length=length)
