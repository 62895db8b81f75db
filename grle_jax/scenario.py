"""Scenario sampling (docs/model.md sections 2 and 4): a pure function from a key to one slot's inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import EnvParams, EnvStatic
from .threefry import computed_once
from .types import EnvState, Observation, SlotInputs


def slot_keys(run_key: jax.Array, t: jnp.ndarray) -> tuple[jax.Array, jax.Array]:
    """(sampling key, policy key) of slot ``t`` of the run with key ``run_key``: they depend on the
    slot index only, so a run cut into chunks (a progress bar, checkpoints, a resume) draws exactly
    what an uninterrupted run draws, and every policy run with one seed sees the same draws."""
    ks, kp = jax.random.split(jax.random.fold_in(run_key, t))
    return ks, kp


def reset(static: EnvStatic) -> EnvState:
    """Empty queues at t = 0. The topology is drawn by the first ``sample`` (t % every == 0)."""
    return EnvState(
        t=jnp.zeros((), jnp.int32),
        radio=jnp.zeros((static.n,), jnp.float32),
        es=jnp.zeros((static.m,), jnp.float32),
        L=jnp.ones((static.n, static.m), bool),
        active=jnp.ones((static.n,), bool),
    )


def sample(key: jax.Array, params: EnvParams, state: EnvState, static: EnvStatic) -> SlotInputs:
    """Draw slot ``state.t``'s random inputs. Links and activity are redrawn when
    ``t % topology_every == 0`` and otherwise kept from ``state``."""
    n, m = static.n, static.m
    # One draw of random bits for the whole slot (cheaper than seven split keys on every backend),
    # cut into the uniforms each quantity needs.
    sizes = (n, n * m, n * m, m, n, n * m, n)
    u = _uniforms(key, sum(sizes))
    parts = []
    at = 0
    for k in sizes:
        parts.append(u[at:at + k])
        at += k
    us, ur, uc, up, ue, ul, ua = parts
    lerp = lambda x, lo, hi: lo + x * (hi - lo)  # noqa: E731  (exactly lo when lo == hi)
    s = lerp(us, params.size_lo, params.size_hi)
    r = lerp(ur, params.rate_lo, params.rate_hi).reshape(n, m)
    r_hat = r * lerp(uc, params.csi_lo, params.csi_hi).reshape(n, m)
    phi = lerp(up, params.phi_lo, params.phi_hi)
    eps = lerp(ue, params.eps_lo, params.eps_hi)
    redraw = (state.t % params.topology_every) == 0
    L = jnp.where(redraw, ul.reshape(n, m) < params.p_link, state.L)
    active = jnp.where(redraw, ua < params.p_active, state.active)
    return SlotInputs(s=s, r=r, r_hat=r_hat, phi=phi, eps=eps, L=L, active=active)


def observe(state: EnvState, inputs: SlotInputs) -> Observation:
    """The agent's view of a slot: observed values only."""
    return Observation(
        s=inputs.s, r_hat=inputs.r_hat, phi=inputs.phi, L=inputs.L, active=inputs.active,
        radio=state.radio, es=state.es,
    )


def _uniforms(key: jax.Array, count: int) -> jnp.ndarray:
    """``count`` float32 uniforms in [0, 1) from one call for random bits (23 mantissa bits)."""
    bits = computed_once(jax.random.bits(key, (count,), jnp.uint32))  # one hash for all its readers
    return (bits >> 9).astype(jnp.float32) * jnp.float32(1.0 / (1 << 23))
