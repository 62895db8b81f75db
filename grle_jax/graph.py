"""The fixed-shape device/option graph of GRL and GRLE (docs/model.md section 5).

Nodes: the N devices (0..N-1), then the P options the policy offers (N..N+P-1), an option being
an (ES, exit) pair. Directed edges device -> option for ALL N*P pairs, edge ``n * P + o``; a link
that is down (or a device without a task) is a masked edge, not a missing one, so the graph has
the same shape every slot and the whole thing jits and vmaps. (jraph's ``pad_with_graphs`` cannot
run under ``jit``; nothing here needs it.)

Node features (9 = 3 device + 4 option + 2 type flags; the other kind's slots are zero):
- device: task size s / size_hi, radio backlog / D, active;
- option (ES m, exit e): exit time c[m, e] / phi[m] / D, accuracy standardised over the exit
  table ((acc[e] - mean acc) / std acc, 0 with one exit), ES backlog es[m] / D, capacity phi[m].
  (Raw accuracies differ by a few hundredths between exits; standardised, the network tells the
  exits apart from the first step.)
Edge features (3, zero on masked edges): estimated rate r_hat[n, m] / rate_hi, transmission time
s[n] * 8 / r_hat[n, m] / D, and the finish time the task would have if it were alone on the option,
``(max(radio[n] + tx, es[m]) + c[m, e] / phi[m]) / D`` (its latency bound from below: above 1 the
option cannot meet the deadline, whatever the others do). All three are observed values.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import jraph
import numpy as np

from .config import EnvParams, EnvStatic
from .dynamics import reachable
from .types import Observation

NODE_FEATURES = 9
EDGE_FEATURES = 3


def live_mask(static: EnvStatic, option_idx: np.ndarray, obs: Observation) -> jnp.ndarray:
    """(N, P) bool: device n has a task and can reach the ES of policy option o."""
    return reachable(static, obs.L)[:, option_idx] & obs.active[:, None]


def edge_index(n: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(senders, receivers) of the N*P device -> option edges, edge ``i * P + o``."""
    senders = np.repeat(np.arange(n, dtype=np.int32), p)
    receivers = np.tile(np.arange(p, dtype=np.int32), n) + n
    return senders, receivers


@dataclass(frozen=True)
class DenseLayout:
    """A static promise about a graph: it is ``graphs`` graphs of ``build_graph``'s layout
    (``devices`` device nodes, then ``options`` option nodes, edge ``n * options + o`` from device n
    to option o), alone (``graphs = 1``) or as their ``union``. A graph network given it may
    aggregate by dense reductions over (graphs, devices, options) instead of ``segment_sum``
    (``grle_jax.policies.gcn``); only the node and edge counts can be checked, not the indices."""

    graphs: int
    devices: int
    options: int

    def check(self, n_nodes: int, n_edges: int) -> None:
        b, n, p = self.graphs, self.devices, self.options
        if n_nodes != b * (n + p) or n_edges != b * n * p:
            raise ValueError(f"graph with {n_nodes} nodes and {n_edges} edges is not {b} x (N = {n}, P = {p})")


def build_graph(static: EnvStatic, params: EnvParams, obs: Observation,
                option_idx: np.ndarray) -> tuple[jraph.GraphsTuple, jnp.ndarray]:
    """The slot's graph and its edge mask ((N*P,) bool)."""
    n = static.n
    p = len(option_idx)
    D = params.deadline_ms
    m_of = jnp.asarray(option_idx // static.e)
    e_of = jnp.asarray(option_idx % static.e)
    f32 = jnp.float32

    dev = jnp.stack([obs.s / params.size_hi, obs.radio / D, obs.active.astype(f32)], axis=-1)  # (N, 3)
    phi_o = obs.phi[m_of]
    acc_sd = jnp.std(params.acc)
    acc_z = jnp.where(acc_sd > 0, (params.acc - jnp.mean(params.acc)) / jnp.where(acc_sd > 0, acc_sd, 1.0), 0.0)
    opt = jnp.stack([params.c[m_of, e_of] / phi_o / D, acc_z[e_of], obs.es[m_of] / D, phi_o], axis=-1)
    nodes = jnp.concatenate([
        jnp.concatenate([dev, jnp.zeros((n, 4), f32), jnp.ones((n, 1), f32), jnp.zeros((n, 1), f32)], -1),
        jnp.concatenate([jnp.zeros((p, 3), f32), opt, jnp.zeros((p, 1), f32), jnp.ones((p, 1), f32)], -1),
    ], axis=0).astype(f32)  # (N + P, 9)

    live = live_mask(static, option_idx, obs)  # (N, P)
    rate = obs.r_hat[:, m_of]  # (N, P)
    safe = jnp.where(live, rate, 1.0)
    tx = obs.s[:, None] * 8.0 / safe  # (N, P) ms
    work = (params.c[m_of, e_of] / phi_o)[None, :]
    alone = jnp.maximum(obs.radio[:, None] + tx, obs.es[m_of][None, :]) + work
    edges = jnp.stack([jnp.where(live, rate / params.rate_hi, 0.0), jnp.where(live, tx / D, 0.0),
                       jnp.where(live, alone / D, 0.0)], -1)
    senders, receivers = edge_index(n, p)
    graph = jraph.GraphsTuple(
        nodes=nodes, edges=edges.reshape(n * p, EDGE_FEATURES).astype(f32),
        senders=jnp.asarray(senders), receivers=jnp.asarray(receivers), globals=None,
        n_node=jnp.asarray([n + p], jnp.int32), n_edge=jnp.asarray([n * p], jnp.int32),
    )
    return graph, live.reshape(-1)


def canonical_graph() -> tuple[jraph.GraphsTuple, jnp.ndarray]:
    """One device, one option, one live edge, all features zero: the smallest graph with the real
    feature widths, on which a graph network's parameters are initialised (their shapes do not
    depend on N or P, and flax never reads the input's values to draw them)."""
    f32 = jnp.float32
    graph = jraph.GraphsTuple(
        nodes=jnp.zeros((2, NODE_FEATURES), f32), edges=jnp.zeros((1, EDGE_FEATURES), f32),
        senders=jnp.zeros((1,), jnp.int32), receivers=jnp.ones((1,), jnp.int32), globals=None,
        n_node=jnp.asarray([2], jnp.int32), n_edge=jnp.asarray([1], jnp.int32),
    )
    return graph, jnp.ones((1,), bool)


def union(graphs: jraph.GraphsTuple, masks: jnp.ndarray) -> tuple[jraph.GraphsTuple, jnp.ndarray]:
    """B stacked fixed-shape graphs (every leaf with a leading B axis, as ``vmap(build_graph)``
    returns them) -> ONE graph, their disjoint union, and its edge mask: what ``jraph.batch`` does,
    with fixed shapes so it jits. Nodes of graph b are ``b * (N + P) + i``; ``n_node`` and ``n_edge``
    keep one entry per graph. A graph network over the union computes every graph at once with
    plain (unbatched) segment sums: the training minibatch runs this way, faster than a ``vmap``
    of the network on this CPU."""
    b, nodes_per = graphs.nodes.shape[:2]
    edges_per = graphs.edges.shape[1]
    off = (jnp.arange(b, dtype=jnp.int32) * nodes_per)[:, None]
    return jraph.GraphsTuple(
        nodes=graphs.nodes.reshape(b * nodes_per, -1), edges=graphs.edges.reshape(b * edges_per, -1),
        senders=(graphs.senders + off).reshape(-1), receivers=(graphs.receivers + off).reshape(-1),
        globals=None, n_node=graphs.n_node.reshape(-1), n_edge=graphs.n_edge.reshape(-1),
    ), masks.reshape(-1)
