"""DROO / DROOE actor: an MLP on the normalised estimated rates (docs/model.md section 5).

Input: ``r_hat[n, m] / rate_hi`` for the N*M (device, ES) pairs, 0 where the link is down. Hidden
layers 120 and 80 (ReLU), as DROO's own code; one logit per (device, option), a sigmoid making the
relaxed score. The MLP sees nothing but the rates: that is DROO's design, and what GRLE improves on.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ..config import EnvParams
from ..types import Observation


class DROOActor(nn.Module):
    """(obs, params) -> (N, P) logits."""

    devices: int
    options: int
    hidden: tuple = (120, 80)

    @nn.compact
    def __call__(self, obs: Observation, params: EnvParams) -> jnp.ndarray:
        x = jnp.where(obs.L, obs.r_hat / params.rate_hi, 0.0).reshape(-1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.devices * self.options)(x).reshape(self.devices, self.options)
