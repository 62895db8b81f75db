"""The critic's order-preserving one-hot quantiser (docs/model.md section 5, eq. 15).

From relaxed scores ``p[n, o]`` in [0, 1] over the policy's P options it builds candidate
decisions with FIXED shapes, so K may be a dynamic (vmapped) value:

- candidate 1: each device's best-scored live option (ties to the lower option index);
- candidate k >= 2: candidate 1 with ONE device moved to another live option, the (device,
  option) pairs taken in order of increasing gap ``p[n, best[n]] - p[n, o]`` (ties: the smaller
  gap in logits when the logits are given, then lower device index, then lower option index).

Exactly ``k_cap`` candidates are produced (a static number); ``valid[k]`` is false for those
beyond the pairs that exist in this slot (K_max = 1 + live pairs - devices with a live option).
The caller masks those beyond its current K too. Decisions are in the policy's option space
(0..P-1), -1 for a device with no live option (no task, or no link).
"""

from __future__ import annotations

import jax.numpy as jnp

from grle_jax.order import first_in_order


def quantize(scores: jnp.ndarray, live: jnp.ndarray, k_cap: int,
             logits: jnp.ndarray | None = None, base: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """scores (N, P), live (N, P) bool -> (candidates (k_cap, N) int32, valid (k_cap,) bool).

    ``base`` (N,) replaces each device's best-scored option as candidate 1 (the critic's further
    rounds, ``grle_jax.critic``): the moves are then ordered by ``scores[n, base[n]] - scores[n, o]``,
    which is negative for an option the actor scores above the base one (those come first). Every
    live device must have a live option in ``base``.

    With ``logits`` (the scores' pre-sigmoid values), pairs whose float32 gaps are EQUAL are
    ordered by their gap in logits before the index order. A saturated sigmoid rounds many
    scores to exactly 0 or 1, and the ties would otherwise always move the lowest-index device,
    a rule a permutation-equivariant network cannot learn from; the logit gap keeps the order the
    network's own confidence gives. Where float32 gaps differ, the order is docs/model.md's exactly."""
    n, p = scores.shape
    has = jnp.any(live, axis=1)  # (N,)
    if base is None:
        masked = jnp.where(live, scores, -jnp.inf)
        best = jnp.argmax(masked, axis=1).astype(jnp.int32)  # first maximum = lowest option index
        best_score = jnp.max(masked, axis=1)
        base = jnp.where(has, best, -1)  # (N,)
    else:
        best = jnp.maximum(base, 0).astype(jnp.int32)
        best_score = jnp.take_along_axis(scores, best[:, None], axis=1)[:, 0]
        base = jnp.where(has, best, -1)
    moves = k_cap - 1
    if moves == 0:
        return base[None, :], jnp.ones((1,), bool)
    eligible = live & (jnp.arange(p)[None, :] != best[:, None])  # (N, P)
    gap = jnp.where(eligible, best_score[:, None] - scores, jnp.inf).reshape(-1)
    if logits is None:
        order = first_in_order((gap,), moves)  # flat index n * P + o (ties: lower index)
    else:
        best_logit = jnp.take_along_axis(logits, best[:, None], axis=1)
        lgap = jnp.where(eligible, best_logit - logits, jnp.inf).reshape(-1)
        order = first_in_order((gap, lgap), moves)  # = lexsort((arange, lgap, gap))[:moves]
    dev, opt = order // p, (order % p).astype(jnp.int32)
    ok = eligible.reshape(-1)[order]
    moved = jnp.broadcast_to(base, (moves, n)).at[jnp.arange(moves), dev].set(opt)
    cands = jnp.concatenate([base[None, :], moved], axis=0)
    valid = jnp.concatenate([jnp.ones((1,), bool), ok])
    return cands, valid


def count_valid(live: jnp.ndarray) -> jnp.ndarray:
    """The slot's K_max: 1 + live (device, option) pairs - devices with at least one live option."""
    return 1 + jnp.sum(live) - jnp.sum(jnp.any(live, axis=1))


def one_hot(decision: jnp.ndarray, options: int) -> jnp.ndarray:
    """(N,) policy-space decision (-1 = none) -> (N, P) float one-hot (all zeros for -1)."""
    return (decision[:, None] == jnp.arange(options)[None, :]).astype(jnp.float32)
