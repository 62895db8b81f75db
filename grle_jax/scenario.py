"""Scenario sampling (MODEL.md sections 2 and 4): a pure function from a key to one slot's inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import EnvParams, EnvStatic
from .types import EnvState, Observation, SlotInputs


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
    ks, kr, kc, kp, ke, kl, ka = jax.random.split(key, 7)
    u = jax.random.uniform
    s = u(ks, (n,), jnp.float32, params.size_lo, params.size_hi)
    r = u(kr, (n, m), jnp.float32, params.rate_lo, params.rate_hi)
    r_hat = r * u(kc, (n, m), jnp.float32, params.csi_lo, params.csi_hi)
    phi = u(kp, (m,), jnp.float32, params.phi_lo, params.phi_hi)
    eps = u(ke, (n,), jnp.float32, params.eps_lo, params.eps_hi)
    redraw = (state.t % params.topology_every) == 0
    L = jnp.where(redraw, jax.random.uniform(kl, (n, m)) < params.p_link, state.L)
    active = jnp.where(redraw, jax.random.uniform(ka, (n,)) < params.p_active, state.active)
    return SlotInputs(s=s, r=r, r_hat=r_hat, phi=phi, eps=eps, L=L, active=active)


def observe(state: EnvState, inputs: SlotInputs) -> Observation:
    """The agent's view of a slot: observed values only."""
    return Observation(
        s=inputs.s, r_hat=inputs.r_hat, phi=inputs.phi, L=inputs.L, active=inputs.active,
        radio=state.radio, es=state.es,
    )
