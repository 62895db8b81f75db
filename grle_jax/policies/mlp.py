"""DROO / DROOE actor: an MLP on the normalised estimated rates (docs/model.md section 5).

Input: ``r_hat[n, m] / rate_hi`` for the N*M (device, ES) pairs, 0 where the link is down. Hidden
layers 120 and 80 (ReLU), as DROO's own code; one logit per (device, option), a sigmoid making the
relaxed score. The MLP sees nothing but the rates: that is DROO's design, and what GRLE improves on.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ..config import EnvParams
from ..threefry import materialised
from ..types import Observation


class DROOActor(nn.Module):
    """(obs, params) -> (N, P) logits."""

    devices: int
    options: int
    hidden: tuple = (120, 80)

    @nn.compact
    def __call__(self, obs: Observation, params: EnvParams) -> jnp.ndarray:
        """One observation, or a minibatch of them (every leaf with leading axes): one matrix
        product per layer over the whole minibatch."""
        lead = obs.r_hat.shape[:-2]  # () for one observation, (B,) for a minibatch
        x = jnp.where(obs.L, obs.r_hat / params.rate_hi, 0.0).reshape(lead + (-1,))
        for i, width in enumerate(self.hidden):
            x = nn.relu(_Dense(width, name=f"Dense_{i}")(x))
        out = _Dense(self.devices * self.options, name=f"Dense_{len(self.hidden)}")(x)
        return out.reshape(lead + (self.devices, self.options))


def _forward(x, w, b):  # nn.Dense's arithmetic, the same operations
    y = lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.reshape(b, (1,) * (y.ndim - 1) + (-1,))


@jax.custom_vjp
def _dense(x, w, b):
    return _forward(x, w, b)


def _dense_fwd(x, w, b):
    return _forward(x, w, b), (x, w)


def _dense_bwd(res, g):
    """Autodiff's backward pass, but the input's gradient multiplies ``g`` by a MATERIALISED
    transpose of the kernel: XLA:CPU folds a transpose into the dot, and its batched dot that
    contracts the minor axes of both operands (``g @ w.T`` as autodiff writes it, one per run) ran
    3x slower than the same product on the transposed kernel (docs/benchmarks.md, "DROO's backward
    pass"). The same products and sums; the kernel's summation order may differ in the last bit."""
    x, w = res
    lead = tuple(range(g.ndim - 1))
    dx = lax.dot_general(g, materialised(w.T), (((g.ndim - 1,), (0,)), ((), ())))
    dw = lax.dot_general(x, g, ((lead, lead), ((), ())))
    return dx, dw, jnp.sum(g, axis=lead)


_dense.defvjp(_dense_fwd, _dense_bwd)


class _Dense(nn.Module):
    """``nn.Dense``: the same parameters (names, shapes, initialisers, so the same values from a
    key) and the same forward arithmetic, with the backward pass above."""

    features: int

    @nn.compact
    def __call__(self, x):
        w = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return _dense(x, w, b)
