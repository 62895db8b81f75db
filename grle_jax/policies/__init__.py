"""The four learning actors behind one interface (docs/model.md section 5).

``make_actor(env_static, agent_static)`` returns an ``Actor`` whose ``init(key, obs, params)``
gives the network's variables and whose ``apply(variables, obs, params)`` gives (N, P) logits,
one per (device, policy option); ``sigmoid(logits)`` are the relaxed scores the quantiser reads.
``option_idx`` (P,) maps policy options to environment options ``m * E + e``: all M*E for GRLE
and DROOE, the final exit of each ES (e = E-1) for GRL and DROO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ..agent import GRAPH_POLICIES, LEARNING_POLICIES, AgentStatic, option_index
from ..config import EnvParams, EnvStatic
from ..graph import DenseLayout, build_graph, canonical_graph, live_mask, union
from ..types import Observation
from .gcn import GCNActor
from .mlp import DROOActor

__all__ = ["Actor", "GraphActor", "MLPActor", "make_actor", "live_mask", "masked_bce", "masked_log_softmax",
           "masked_softmax_ce", "gumbel_samples", "fixed_order_sum", "LEARNING_POLICIES"]


@dataclass(frozen=True)
class Actor:
    """What the learning loop needs of an actor; ``GraphActor`` (GRL, GRLE) and ``MLPActor`` (DROO,
    DROOE) implement it. Frozen and hashable (a static argument of ``jit``): ``options_`` holds the
    option map as a tuple, ``option_idx`` gives it as an array."""

    static: EnvStatic
    policy: str
    options_: tuple  # (P,) environment option m * E + e of each policy option
    module: object  # the flax module

    shape_free: ClassVar[bool] = False  # True: the variables do not depend on N or on the options
    # True: ``apply`` reads only the exogenous fields of the observation (``s``, ``r_hat``, ``phi``,
    # ``L``, ``active``: drawn by ``scenario.sample`` whatever was decided, never the backlogs
    # ``radio``, ``es``), so the trainer may draw several slots ahead and run the actor on all of
    # them at once (``train.loop.Trainer``, "act ahead")
    exogenous: ClassVar[bool] = False
    # Runs per group (at most) when a CPU executor splits many runs of this actor into groups run
    # side by side in threads (``train.sweep.Executor``, ``group_plan``); None: one batch. A slot
    # is many small kernels that keep one core busy, so groups side by side pay; narrow groups keep
    # a learning step's arrays in the caches (docs/benchmarks.md, "GRLE's runs in groups",
    # "Narrower groups, and DROO's runs in groups").
    cpu_group_runs: ClassVar[int | None] = None
    # A set of at most this many runs stays one batch (so the grid's cells, 5 seeds or 2 with
    # ``--quick``, and every number stored from them do not depend on the group width).
    cpu_group_above: ClassVar[int] = 8
    # In such groups the learning step runs this many runs at a time (``train.loop.in_run_chunks``;
    # 0: the whole group at once).
    cpu_learn_chunk: ClassVar[int] = 0

    @property
    def option_idx(self) -> np.ndarray:
        """(P,) int32: the environment option ``m * E + e`` of each policy option."""
        return np.asarray(self.options_, np.int32)

    @property
    def options(self) -> int:
        return len(self.options_)

    def apply(self, variables, obs: Observation, params: EnvParams) -> jax.Array:
        """(N, P) logits."""
        raise NotImplementedError

    def apply_batch(self, variables, obs: Observation, params: EnvParams) -> jax.Array:
        """(B, N, P) logits of B observations (every leaf with a leading B axis), one set of variables."""
        return jax.vmap(self.apply, in_axes=(None, 0, None))(variables, obs, params)

    @property
    def init_key(self) -> tuple:
        """Everything that fixes ``init``'s program."""
        return ("actor", self)

    def init(self, key, obs: Observation | None = None, params: EnvParams | None = None):
        """The network's variables."""
        return self.module.init(key, obs, params)

    def live(self, obs: Observation) -> jax.Array:
        """(N, P) bool: the options each device may take this slot."""
        return live_mask(self.static, self.option_idx, obs)


@dataclass(frozen=True)
class GraphActor(Actor):
    """GRL and GRLE: the graph convolutional actor (``policies.gcn``) over the device/option graph."""

    shape_free: ClassVar[bool] = True  # a graph network: its parameters do not depend on N or P
    # groups of up to 32 runs, each learning two runs at a time (docs/benchmarks.md, "A learning
    # step two runs at a time")
    cpu_group_runs: ClassVar[int | None] = 32
    cpu_learn_chunk: ClassVar[int] = 2

    def apply(self, variables, obs: Observation, params: EnvParams) -> jax.Array:
        graph, mask = build_graph(self.static, params, obs, self.option_idx)
        layout = DenseLayout(1, self.static.n, self.options)  # dense aggregation (policies.gcn)
        return self.module.apply(variables, graph, mask, layout).reshape(self.static.n, self.options)

    def apply_batch(self, variables, obs: Observation, params: EnvParams) -> jax.Array:
        """One pass over the disjoint union of the B graphs (``graph.union``): the same numbers as
        ``vmap(apply)`` up to float32 summation order."""
        graphs, masks = jax.vmap(lambda o: build_graph(self.static, params, o, self.option_idx))(obs)
        b = masks.shape[0]
        graph, mask = union(graphs, masks)
        layout = DenseLayout(b, self.static.n, self.options)
        return self.module.apply(variables, graph, mask, layout).reshape(b, self.static.n, self.options)

    @property
    def init_key(self) -> tuple:
        """The module alone: one compiled ``init`` serves every N and both GCN policies."""
        return ("gcn", self.module)

    def init(self, key, obs: Observation | None = None, params: EnvParams | None = None):
        """Flax draws every parameter from ``key`` and its shape, never from the input's values: a
        GCN is initialised on a canonical one-edge graph (the same feature widths as every real
        graph), which gives exactly the variables a real graph gives; no observation needed."""
        graph, mask = canonical_graph()
        return self.module.init(key, graph, mask)


@dataclass(frozen=True)
class MLPActor(Actor):
    """DROO and DROOE: the MLP on channel states (``policies.mlp``); its sizes are N * M in, N * P out."""

    exogenous: ClassVar[bool] = True  # the rates and links only
    # more than 32 runs in at least two groups of at most 128 (1,024 DROO runs: 52.8k -> 77.6k
    # agent-slots/s on a 2-core CPU; 16 runs gained nothing, so they stay one batch)
    cpu_group_runs: ClassVar[int | None] = 128
    cpu_group_above: ClassVar[int] = 32

    def apply(self, variables, obs: Observation, params: EnvParams) -> jax.Array:
        return self.module.apply(variables, obs, params)

    def apply_batch(self, variables, obs: Observation, params: EnvParams) -> jax.Array:
        """The MLP on the whole minibatch at once (the same numbers as ``vmap(apply)``; the layers'
        backward pass, written out in ``policies.mlp``, then sees the minibatch's matrices)."""
        return self.module.apply(variables, obs, params)


def make_actor(env: EnvStatic, agent: AgentStatic) -> Actor:
    if agent.policy not in LEARNING_POLICIES:
        raise ValueError(f"{agent.policy!r} is not a learning policy")
    idx = tuple(int(i) for i in option_index(agent.policy, env))
    if agent.policy in GRAPH_POLICIES:
        return GraphActor(env, agent.policy, idx, GCNActor(hidden=tuple(agent.gcn_hidden), head=agent.head_hidden))
    module = DROOActor(devices=env.n, options=len(idx), hidden=tuple(agent.mlp_hidden))
    return MLPActor(env, agent.policy, idx, module)


def masked_bce(logits: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean binary cross-entropy between ``sigmoid(logits)`` and the one-hot ``target`` over the
    entries where ``mask`` is true (docs/model.md eq. 16: reachable options of stored slots only).
    0 when nothing is masked in."""
    import jax.numpy as jnp
    import optax

    # on one flat (device, option) axis: XLA:CPU vectorises a fused loop along the minor axis, and
    # DROO's P is 2 (the loss took 4x as long on (..., N, P)); the sum's order may move its last bit
    flat = logits.shape[:-2] + (-1,)
    logits, target, mask = logits.reshape(flat), target.reshape(flat), mask.reshape(flat)
    bce = optax.sigmoid_binary_cross_entropy(logits, target)
    w = mask.astype(logits.dtype)
    return fixed_order_sum(bce * w) / jnp.maximum(jnp.sum(w), 1.0)  # sum(w) counts: exact in any order


def fixed_order_sum(x: jax.Array) -> jax.Array:
    """The sum of all entries of ``x`` in one fixed order: a pairwise tree of elementwise adds over
    the flattened entries, zero-padded to a power of two. A ``jnp.sum`` leaves the order to XLA,
    which picks it by the shape and by how the program is compiled (``train.compiling``: the two
    ways summed a loss of 256 terms in different orders, and its last bit moved); elementwise adds
    it may not reorder, so this sum's bits depend on the entries only."""
    import jax.numpy as jnp

    v = x.reshape(-1)
    size = 1 << max(0, (v.shape[0] - 1).bit_length())
    v = jnp.pad(v, (0, size - v.shape[0]))
    while v.shape[0] > 1:
        v = v[: v.shape[0] // 2] + v[v.shape[0] // 2:]
    return v[0]


NEG = -1e30  # the logit of an option a device cannot take (finite: a device with none stays NaN-free)


def masked_log_softmax(logits: jax.Array, live: jax.Array) -> jax.Array:
    """(N, P) log-probabilities of each device's softmax over its LIVE options (our GRLE/GRL,
    docs/model.md section 5): every live row's probabilities sum to one; a dead option gets about
    -1e30 (probability 0); a device with no live option gets a harmless uniform row."""
    return jax.nn.log_softmax(jnp.where(live, logits, NEG), axis=-1)


def masked_softmax_ce(logits: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over devices of the cross-entropy between each device's softmax over its live options
    (``mask``) and the one-hot ``target``; devices with no live option or no target are left out.
    ``logits``, ``target``, ``mask``: (..., N, P). 0 when no device counts."""
    logp = masked_log_softmax(logits, mask)
    w = (jnp.any(mask, axis=-1) & (jnp.sum(target * mask, axis=-1) > 0)).astype(logits.dtype)
    ce = -jnp.sum(jnp.where(mask, target * logp, 0.0), axis=-1)  # one nonzero term per device: exact
    return fixed_order_sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)


def gumbel_samples(key: jax.Array, logits: jax.Array, live: jax.Array, count: int) -> jax.Array:
    """(count, N) int32 decisions sampled from each device's softmax over its live options (the
    Gumbel-max trick), -1 for a device with no live option: candidates for the critic."""
    g = jax.random.gumbel(key, (count,) + logits.shape, logits.dtype)
    z = jnp.where(live[None], logits[None] + g, -jnp.inf)
    pick = jnp.argmax(z, axis=-1).astype(jnp.int32)
    return jnp.where(jnp.any(live, axis=-1)[None], pick, -1)
