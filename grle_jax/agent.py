"""Learning configuration of the four online policies (docs/model.md section 5), split like the
environment's: static sizes that fix the compiled program, dynamic values a sweep may ``vmap``.

``AgentConfig`` is what users write (CLI flags, sweep files). It splits into
- ``AgentStatic``: the policy kind, network widths and the *capacities* that fix array shapes
  (``k_cap`` candidates generated per slot, ``batch_cap`` minibatch rows, ``memory_cap`` replay
  rows). Hashable, a static argument of ``jit``.
- ``AgentParams``: learning rate, current K, adaptive-K switch, Delta, train_every, batch and
  memory sizes. A ``flax.struct.dataclass`` of arrays: K, batch and memory only have to stay
  within their capacities (candidates beyond K, minibatch rows beyond ``batch`` and replay rows
  beyond ``memory`` are masked), so one compiled program serves a sweep over all of them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import struct

from .config import EnvStatic, check_float32, check_int, from_dict, is_num, to_dict
from .errors import ConfigError

LEARNING_POLICIES = ("grle", "grl", "droo", "drooe")
FIXED_POLICIES = ("random", "greedy", "oracle")
ALL_POLICIES = LEARNING_POLICIES + FIXED_POLICIES
EARLY_EXIT_POLICIES = ("grle", "drooe")  # the others offer the final exit only

# fields of AgentConfig a sweep may vary inside one compiled program
DYNAMIC_FIELDS = ("lr", "k", "adaptive_k", "k_delta", "train_every", "batch", "memory")

GRAPH_POLICIES = ("grle", "grl")
INGREDIENTS = ("loss", "greedy_candidate", "samples", "critic_rounds", "lookahead")
VARIANTS = ("ours", "paper")
LOSSES = ("softmax", "bce")
# The ingredients each variant sets (docs/training.md, "Our GRLE"; docs/model.md section 5). "paper" is
# docs/model.md section 5 exactly: independent sigmoids + binary cross-entropy, the order-preserving
# quantiser's K candidates, one critic round, the per-slot reward. "ours" is what the ablation kept.
VARIANT_DEFAULTS = {
    "paper": dict(loss="bce", greedy_candidate=False, samples=0, critic_rounds=1, lookahead=0.0),
    "ours": dict(loss="softmax", greedy_candidate=True, samples=0, critic_rounds=2, lookahead=3.0),
}


def policy_options(policy: str, static: EnvStatic) -> int:
    """P: options per device the policy offers (M*E with early exits, M with the final exit)."""
    return static.m * static.e if policy in EARLY_EXIT_POLICIES else static.m


def option_index(policy: str, static: EnvStatic) -> np.ndarray:
    """(P,) the environment option index ``m * E + e`` of each of the policy's options."""
    if policy in EARLY_EXIT_POLICIES:
        return np.arange(static.m * static.e, dtype=np.int32)
    return (np.arange(static.m, dtype=np.int32) * static.e + static.e - 1).astype(np.int32)


def k_max(policy: str, static: EnvStatic) -> int:
    """K_max with every link up: 1 + (reachable pairs - N) = 1 + N * (P - 1)."""
    return 1 + static.n * (policy_options(policy, static) - 1)


@dataclass(frozen=True)
class AgentConfig:
    """How a policy learns. Validated on construction; raises ``ConfigError(field, why)``."""

    policy: str = "grle"
    lr: float = 1e-3  # Adam learning rate
    k: int | None = None  # candidates per slot (fixed K, or the initial K when adaptive); None: N
    adaptive_k: bool = False  # DROO's rule: every k_delta slots K = min(1 + max position, K_max)
    k_delta: int = 32  # Delta
    train_every: int = 10  # one Adam step every this many slots
    batch: int = 32  # minibatch size
    memory: int = 128  # replay memory size (ring buffer)
    # The variant and its ingredients (None: the variant's value, VARIANT_DEFAULTS). variant None:
    # "ours" for the graph learners (GRLE, GRL), "paper" for DROO and DROOE (the paper's baselines).
    variant: str | None = None
    loss: str | None = None  # "softmax": per-device softmax over live options + cross-entropy; "bce": eq. 16
    greedy_candidate: bool | None = None  # the critic also scores the sequential (greedy) decode's decision
    samples: int | None = None  # the critic also scores this many Gumbel-max samples of the actor's softmax
    critic_rounds: int | None = None  # 1: the paper's critic; more: our local-search extension (grle_jax.critic)
    lookahead: float | None = None  # the critic's score: R - lookahead * ES backlog left past the next slot / D
    mlp_hidden: tuple[int, ...] = (120, 80)  # DROO / DROOE
    gcn_hidden: tuple[int, ...] = (128, 64)  # GRL / GRLE graph convolutions
    head_hidden: int = 64  # GRL / GRLE edge MLP

    def __post_init__(self):
        for name in ("mlp_hidden", "gcn_hidden"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        self.validate()

    def validate(self) -> None:
        if self.policy not in ALL_POLICIES:
            raise ConfigError("policy", f"unknown policy {self.policy!r} (choose from {', '.join(ALL_POLICIES)})")
        if not is_num(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError("lr", f"must be a positive number, got {self.lr!r}")
        check_float32("lr", self.lr)
        if self.k is not None:
            check_int("k", self.k, 1)
        if not isinstance(self.adaptive_k, (bool, np.bool_)):
            raise ConfigError("adaptive_k", f"must be true or false, got {self.adaptive_k!r}")
        check_int("k_delta", self.k_delta, 1)
        check_int("train_every", self.train_every, 1)
        check_int("batch", self.batch, 1)
        check_int("memory", self.memory, 1)
        if self.variant is not None and self.variant not in VARIANTS:
            raise ConfigError("variant", f"unknown variant {self.variant!r} (choose from {', '.join(VARIANTS)})")
        if self.loss is not None and self.loss not in LOSSES:
            raise ConfigError("loss", f"unknown loss {self.loss!r} (choose from {', '.join(LOSSES)})")
        if self.greedy_candidate is not None and not isinstance(self.greedy_candidate, (bool, np.bool_)):
            raise ConfigError("greedy_candidate", f"must be true or false, got {self.greedy_candidate!r}")
        if self.samples is not None:
            check_int("samples", self.samples, 0)
        if self.critic_rounds is not None:
            check_int("critic_rounds", self.critic_rounds, 1)
        if self.lookahead is not None and (not is_num(self.lookahead) or not math.isfinite(self.lookahead)
                                           or self.lookahead < 0):
            raise ConfigError("lookahead", f"must be a finite number >= 0, got {self.lookahead!r}")
        for name in ("mlp_hidden", "gcn_hidden"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not v:
                raise ConfigError(name, f"must be a non-empty list of widths, got {v!r}")
            for x in v:
                check_int(name, x, 1)
        check_int("head_hidden", self.head_hidden, 1)

    @property
    def learning(self) -> bool:
        return self.policy in LEARNING_POLICIES

    @property
    def resolved_variant(self) -> str:
        if self.variant is not None:
            return self.variant
        return "ours" if self.policy in GRAPH_POLICIES else "paper"

    def ingredient(self, name: str):
        """The value of one ingredient (loss, greedy_candidate, samples, critic_rounds, lookahead):
        the field if given, else the variant's."""
        v = getattr(self, name)
        return VARIANT_DEFAULTS[self.resolved_variant][name] if v is None else v

    def k_for(self, static: EnvStatic) -> int:
        """The (initial) K, checked against K_max of this network."""
        k = static.n if self.k is None else self.k
        kmax = k_max(self.policy, static)
        if self.k is not None and self.learning and k > kmax:
            raise ConfigError("k", f"must be at most K_max = 1 + N*(options-1) = {kmax} for {self.policy} "
                                   f"at N={static.n}, M={static.m}, got {k}")
        return min(k, kmax)

    def check(self, static: EnvStatic) -> None:
        """Checks that need the network's sizes."""
        self.k_for(static)

    # ------------------------------------------------------------------------------------------
    def static(self, env: EnvStatic, k_cap: int | None = None, batch_cap: int | None = None,
               memory_cap: int | None = None) -> "AgentStatic":
        """Shapes: with adaptive K every K up to K_max may occur, else only ``k`` (or the largest K
        of a sweep, passed as ``k_cap``)."""
        kmax = k_max(self.policy, env) if self.learning else 1
        if not self.learning:
            kc = 1
        elif self.adaptive_k:
            kc = kmax
        else:
            kc = min(max(k_cap or 0, self.k_for(env)), kmax)
        return AgentStatic(
            policy=self.policy, options=policy_options(self.policy, env), k_cap=kc,
            batch_cap=max(batch_cap or 0, self.batch), memory_cap=max(memory_cap or 0, self.memory),
            mlp_hidden=self.mlp_hidden, gcn_hidden=self.gcn_hidden, head_hidden=self.head_hidden,
            critic_rounds=self.ingredient("critic_rounds") if self.learning else 1,
            loss=self.ingredient("loss"), greedy_candidate=bool(self.ingredient("greedy_candidate")) and self.learning,
            samples=int(self.ingredient("samples")) if self.learning else 0,
            lookahead=float(self.ingredient("lookahead")) if self.learning else 0.0,
        )

    def params(self, env: EnvStatic) -> "AgentParams":
        return AgentParams(
            lr=jnp.asarray(self.lr, jnp.float32),
            k=jnp.asarray(self.k_for(env) if self.learning else 1, jnp.int32),
            adaptive_k=jnp.asarray(bool(self.adaptive_k)),
            k_delta=jnp.asarray(self.k_delta, jnp.int32),
            train_every=jnp.asarray(self.train_every, jnp.int32),
            batch=jnp.asarray(self.batch, jnp.int32),
            memory=jnp.asarray(self.memory, jnp.int32),
        )

    def replace(self, **changes) -> "AgentConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return to_dict(self)

    @staticmethod
    def from_dict(d: dict) -> "AgentConfig":
        if isinstance(d, dict) and "variant" not in d:  # written before variants existed: the paper's learners
            d = {**d, "variant": "paper"}
        return from_dict(AgentConfig, d, "agent")

    def explicit(self) -> "AgentConfig":
        """The same configuration with the variant and every ingredient written out (what
        config.json stores, so a run folder says exactly what ran, whatever later defaults are)."""
        return self.replace(variant=self.resolved_variant, **{k: self.ingredient(k) for k in INGREDIENTS})


class AgentStatic(NamedTuple):
    """Shapes and code paths of the learner; hashable, a static argument of ``jit``."""

    policy: str
    options: int  # P: options per device offered by the policy
    k_cap: int  # candidates generated (and scored) per slot; those beyond the current K are masked
    batch_cap: int  # minibatch rows drawn; rows beyond the current batch size are masked
    memory_cap: int  # replay rows allocated; the ring uses the first ``memory`` of them
    mlp_hidden: tuple = (120, 80)
    gcn_hidden: tuple = (128, 64)
    head_hidden: int = 64
    critic_rounds: int = 1  # quantise-and-score rounds per slot (1: the paper's critic)
    loss: str = "bce"  # "bce" (docs/model.md eq. 16) or "softmax" (per-device softmax + cross-entropy)
    greedy_candidate: bool = False  # the sequential decode's decision joins the critic's first round
    samples: int = 0  # Gumbel-max samples of the actor's softmax joining the first round
    lookahead: float = 0.0  # weight of the ES backlog left past the next slot in the critic's score

    @property
    def learning(self) -> bool:
        return self.policy in LEARNING_POLICIES


@struct.dataclass
class AgentParams:
    """Dynamic learning values; every leaf may carry a leading vmap axis."""

    lr: jnp.ndarray  # () float32
    k: jnp.ndarray  # () int32: fixed K, or the initial K when adaptive (<= k_cap)
    adaptive_k: jnp.ndarray  # () bool
    k_delta: jnp.ndarray  # () int32: Delta of the adaptive rule
    train_every: jnp.ndarray  # () int32
    batch: jnp.ndarray  # () int32 (<= batch_cap)
    memory: jnp.ndarray  # () int32 (<= memory_cap)

