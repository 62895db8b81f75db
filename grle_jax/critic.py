"""The critic (docs/model.md section 5): relaxed scores -> K candidates -> all scored -> the best.

``critic(...)`` is what every learning policy runs each slot. With ``rounds = 1`` (the default)
it is exactly the paper's critic: the K candidates of the order-preserving one-hot quantiser
(``quantize``), scored in ONE vmapped call of ``dynamics.score``, the first best among the valid
ones within the current K executed.

``rounds > 1`` is our extension, beyond the paper (off by default): the critic repeats the
quantiser ``rounds - 1`` more times, each time with the previous round's best as candidate 1 and
the actor's scores ordering the single-device moves around it, and keeps the best. It is a local
search guided by the actor, a hill-climb on the observed reward: the executed (and stored)
decision never scores lower than one round's, and enough rounds with K = K_max end where no
single move improves. Why it exists: with one round the stored decision differs from the actor's
own top choice in at most one device, so the actor mostly learns from its own outputs, and the
GCN drifts towards the options most devices already pick (docs/training.md, "Why GRLE falls
short"); more rounds put better decisions in the replay memory.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from .quantize import quantize


class CriticOut(NamedTuple):
    decision: jnp.ndarray  # (N,) int32 policy option per device (-1 none): executed and stored
    reward: jnp.ndarray  # () its reward on observed values
    first_pos: jnp.ndarray  # () int32: 1-based position of the best candidate of the FIRST round
    first_reward: jnp.ndarray  # () the first round's best reward (= reward when rounds == 1)
    used: jnp.ndarray  # () int32: candidates scored in the first round (valid and within K, + extra)
    quant_pos: jnp.ndarray  # () int32: 1-based position of the quantiser's best in the first round (adaptive K)


def critic(scores: jnp.ndarray, logits: jnp.ndarray, live: jnp.ndarray, k: jnp.ndarray, k_cap: int,
           rounds: int, score_fn: Callable[[jnp.ndarray], jnp.ndarray],
           extra: jnp.ndarray | None = None) -> CriticOut:
    """scores, logits, live: (N, P); ``k`` the current K (dynamic, <= k_cap); ``score_fn`` maps
    (C, N) policy-space candidates to (C,) scores on observed values in one call. ``extra`` (X, N):
    further candidates (our extension: the sequential decode's decision, samples of the actor's
    softmax), valid decisions, scored in the FIRST round with the K quantised ones, after them
    (positions k_cap + 1 ...; ties keep the quantiser's)."""
    within = jnp.arange(k_cap) < k

    def one_round(base, extra=None):
        cands, valid = quantize(scores, live, k_cap, logits, base=base)
        use = valid & within
        if extra is not None:
            cands = jnp.concatenate([cands, extra.astype(cands.dtype)], axis=0)
            use = jnp.concatenate([use, jnp.ones((extra.shape[0],), bool)])
        R = score_fn(cands)
        best = jnp.argmax(jnp.where(use, R, -jnp.inf))  # first best = lowest position
        return cands[best], R[best], best, use, R

    decision, reward, best, use, R = one_round(None, extra)
    pos = (best + 1).astype(jnp.int32)
    quant_pos = pos
    if extra is not None:  # an extra candidate's position counts after the quantiser's USED ones
        used_q = use[:k_cap].sum().astype(jnp.int32)
        pos = jnp.where(best < k_cap, pos, used_q + (best - k_cap + 1)).astype(jnp.int32)
        quant_pos = (jnp.argmax(jnp.where(use[:k_cap], R[:k_cap], -jnp.inf)) + 1).astype(jnp.int32)
    first = CriticOut(decision=decision, reward=reward, first_pos=pos, first_reward=reward,
                      used=use.sum().astype(jnp.int32), quant_pos=quant_pos)
    if rounds == 1:
        return first

    def more(_, carry):
        d, r = carry
        d2, r2, _, _, _ = one_round(d)  # candidate 1 is d itself, so r2 >= r
        return d2, r2

    decision, reward = jax.lax.fori_loop(0, rounds - 1, more, (decision, reward))
    return first._replace(decision=decision, reward=reward)
