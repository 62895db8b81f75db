"""GRL / GRLE actor: a two-layer graph convolution over the fixed-shape device/option graph
(``grle_jax.graph``), then an MLP per edge on [h_device || h_option || edge features] and a sigmoid
(MODEL.md section 5).

One convolution (``EdgeConv``) updates every node from itself and from its neighbours along live
edges, in both directions (option -> device as well as device -> option, so after two layers a
device knows about the other devices competing for the same options):

    h_i' = relu( W_self h_i + sum_{live (i, j)} (W_msg [h_j || x_ij]) / sqrt(deg_i deg_j) )

(``W [h_j || x_ij]`` is computed as ``W_h h_j + W_x x_ij`` with the node half evaluated once per
node and gathered, the same map at a fraction of the cost; the edge head likewise.)

with ``deg`` the live degree plus one and ``x_ij`` the edge features. The self term is not scaled
down by the degree: an option node has N neighbours that send it almost the same messages for
every exit of one ES, and only its own features tell the exits apart. Sums are
``jax.ops.segment_sum`` over the fixed edge list; a masked edge has weight 0, so it contributes
nothing to any node, and every node's degree counts live edges only. Nothing depends on the order
of devices, so the network is equivariant under permutations of the devices.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph


class EdgeConv(nn.Module):
    features: int

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, edge_mask: jnp.ndarray) -> jnp.ndarray:
        h, x = graph.nodes, graph.edges
        snd, rcv = graph.senders, graph.receivers
        n_nodes = h.shape[0]
        w = edge_mask.astype(h.dtype)  # (E,)
        deg = 1.0 + jax.ops.segment_sum(w, snd, n_nodes) + jax.ops.segment_sum(w, rcv, n_nodes)
        norm = w * jax.lax.rsqrt(deg[snd] * deg[rcv])  # (E,), 0 on masked edges
        # W [h_j || x_ij] computed as W_h h_j + W_x x_ij: the node half once per node, not per edge
        fwd = nn.Dense(self.features, use_bias=False, name="msg_fwd_node")(h)
        bwd = nn.Dense(self.features, use_bias=False, name="msg_bwd_node")(h)
        to_rcv = (fwd[snd] + nn.Dense(self.features, name="msg_fwd_edge")(x)) * norm[:, None]
        to_snd = (bwd[rcv] + nn.Dense(self.features, name="msg_bwd_edge")(x)) * norm[:, None]
        agg = jax.ops.segment_sum(to_rcv, rcv, n_nodes) + jax.ops.segment_sum(to_snd, snd, n_nodes)
        return nn.relu(nn.Dense(self.features, name="self")(h) + agg)


class GCNActor(nn.Module):
    """(graph, edge mask) -> (E,) logits, one per device -> option edge."""

    hidden: tuple = (128, 64)
    head: int = 64

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, edge_mask: jnp.ndarray) -> jnp.ndarray:
        h = graph.nodes
        for width in self.hidden:
            h = EdgeConv(width)(graph._replace(nodes=h), edge_mask)
        # Dense on [h_device || h_option || edge], split by blocks so the node parts run per node
        zd = nn.Dense(self.head, use_bias=False, name="head_device")(h)
        zo = nn.Dense(self.head, use_bias=False, name="head_option")(h)
        z = nn.relu(zd[graph.senders] + zo[graph.receivers] + nn.Dense(self.head, name="head_edge")(graph.edges))
        return nn.Dense(1)(z)[:, 0]
