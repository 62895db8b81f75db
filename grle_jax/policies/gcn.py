"""GRL / GRLE actor: a two-layer graph convolution over the fixed-shape device/option graph
(``grle_jax.graph``), then an MLP per edge on [h_device || h_option || edge features] and a sigmoid
(docs/model.md section 5).

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

Two implementations of the aggregation, the same map:
- general (``layout=None``): gathers and ``jax.ops.segment_sum`` over the edge list, for any graph;
- dense (``layout=DenseLayout(graphs, devices, options)``): for graphs laid out as
  ``grle_jax.graph.build_graph`` lays them out (N devices, then P options, edge ``n * P + o``),
  alone or as ``graph.union`` of several: the edge axis is reshaped to (graphs, N, P) and every
  sum is a contraction with the (graphs, N, P) matrix of edge weights, with no gather and no
  scatter (XLA:CPU runs those as scalar loops). The affine maps commute with the weighted sums,
  so each sum is taken on the narrower side: a layer whose inputs are narrower than its outputs
  (the first, 9 -> 128) sums its inputs and maps the sums, all of it ONE product
  (``_narrow_dense``); a wider one (the second, 128 -> 64) maps the sending nodes, then sums, and
  the self map, the summed edge features' maps and their biases are ONE product
  (``_wide_dense``). The same map as the general path up to the order of float32 operations
  (``tests/test_policies.py`` checks that the two give the same logits and gradients); fewer,
  larger products make a GRLE learning step about 1.4x faster on a 2-core CPU than the form with
  a product per map (docs/benchmarks.md, "One product per layer").
The edge head ``relu(W_d h_device + W_o h_option + W_x x + b)`` on the dense layout maps each side's
rows only (``_side_maps``) and broadcasts the device and option maps over the (graphs, N, P) grid
instead of gathering them per edge (``_pair_grid``); its backward pass sums over the grid in the
order of the gathers' transpose (a scatter-add in edge order), so the values and the nodes'
gradient are the gathers' (bit for bit on the Intel CPU where it was written; on an AVX2 AMD EPYC
the product over one side's rows rounds differently in the last bits), and the weights' gradients
the same sums over fewer rows (``tests/test_policies.py::test_dense_edge_head_equals_the_gathers_bit_for_bit``).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from ..graph import DenseLayout


class _Affine(nn.Module):
    """``nn.Dense``'s parameters (same names, shapes, initialisers, so the same initial values)
    handed back instead of applied: the convolutions apply them by hand (on the dense layout in one
    joint product per layer, ``_narrow_dense`` / ``_wide_dense``); ``use_bias=False``: the kernel
    only, as ``nn.Dense(use_bias=False)``."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jnp.ndarray, jnp.ndarray | None]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features), jnp.float32)
        if not self.use_bias:
            return kernel, None
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return kernel, bias


class EdgeConv(nn.Module):
    features: int

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, edge_mask: jnp.ndarray,
                 layout: DenseLayout | None = None) -> jnp.ndarray:
        h, x = graph.nodes, graph.edges
        w = edge_mask.astype(h.dtype)  # (E,)
        f_in, f_x, f = h.shape[-1], x.shape[-1], self.features
        # the parameters of nn.Dense(f, name=...) on [h_j || x_ij], split by blocks: W_h h_j + W_x x_ij
        self_p = _Affine(f, name="self")(f_in)
        fwd_k = _Affine(f, False, name="msg_fwd_node")(f_in)[0]
        bwd_k = _Affine(f, False, name="msg_bwd_node")(f_in)[0]
        fwd_e = _Affine(f, name="msg_fwd_edge")(f_x)
        bwd_e = _Affine(f, name="msg_bwd_edge")(f_x)
        if layout is None:
            pre = h @ self_p[0] + self_p[1] + _aggregate_general(graph.senders, graph.receivers, w, h, x,
                                                                 fwd_k, bwd_k, fwd_e, bwd_e)
        else:
            form = _narrow_dense if f_in < f else _wide_dense
            pre = form(layout, w, h, x, self_p, fwd_k, bwd_k, fwd_e, bwd_e)
        return nn.relu(pre)


def _aggregate_general(snd, rcv, w, h, x, fwd_k, bwd_k, fwd_e, bwd_e):
    """Any graph: ``sum_{live (i, j)} (W_h h_j + W_x x_ij + b) / sqrt(deg_i deg_j)`` at every node,
    in both directions, by gathers and ``segment_sum`` over the edge list (the node half once per
    node, then gathered per edge)."""
    n_nodes = h.shape[0]
    deg = 1.0 + jax.ops.segment_sum(w, snd, n_nodes) + jax.ops.segment_sum(w, rcv, n_nodes)
    norm = w * jax.lax.rsqrt(deg[snd] * deg[rcv])  # (E,), 0 on masked edges
    to_rcv = ((h @ fwd_k)[snd] + x @ fwd_e[0] + fwd_e[1]) * norm[:, None]
    to_snd = ((h @ bwd_k)[rcv] + x @ bwd_e[0] + bwd_e[1]) * norm[:, None]
    return jax.ops.segment_sum(to_rcv, rcv, n_nodes) + jax.ops.segment_sum(to_snd, snd, n_nodes)


def _dense_sums(layout: DenseLayout, w, h, x):
    """The dense layout's pieces: the (B, N, P) edge weights ``c = w / sqrt(deg_n deg_o)`` (0 on
    masked edges; degree = live degree + 1: a device only sends, an option only receives), the nodes
    as (B, N + P, F), and each side's summed edge features with the summed weights as a last
    column, ``[sum_o c x, sum_o c]`` (B, N, k + 1) for the devices, ``[sum_n c x, sum_n c]``
    (B, P, k + 1) for the options (the edge map's bias is summed with the same weights)."""
    b, n, p = layout.graphs, layout.devices, layout.options
    layout.check(h.shape[0], w.shape[0])
    w = w.reshape(b, n, p)
    deg_dev = 1.0 + jnp.sum(w, axis=2)  # (B, N)
    deg_opt = 1.0 + jnp.sum(w, axis=1)  # (B, P)
    c = w * jax.lax.rsqrt(deg_dev[:, :, None] * deg_opt[:, None, :])
    x = x.reshape(b, n, p, x.shape[-1])
    x_dev = jnp.concatenate([jnp.einsum("bnp,bnpk->bnk", c, x), jnp.sum(c, axis=2)[..., None]], axis=-1)
    x_opt = jnp.concatenate([jnp.einsum("bnp,bnpk->bpk", c, x), jnp.sum(c, axis=1)[..., None]], axis=-1)
    return c, h.reshape(b, n + p, h.shape[-1]), x_dev, x_opt


def _side_blocks(dev, opt):
    """(B, N, a) device rows and (B, P, b) option rows -> (B, N + P, a + b): each row's own block,
    zeros in the other side's, so one product applies each side's weights to its rows only."""
    b, n, p = dev.shape[0], dev.shape[1], opt.shape[1]
    zero = jnp.zeros((), dev.dtype)
    return jnp.concatenate([
        jnp.concatenate([dev, jnp.broadcast_to(zero, (b, p, dev.shape[-1]))], axis=1),
        jnp.concatenate([jnp.broadcast_to(zero, (b, n, opt.shape[-1])), opt], axis=1)], axis=-1)


def _narrow_dense(layout: DenseLayout, w, h, x, self_p, fwd_k, bwd_k, fwd_e, bwd_e):
    """A convolution's pre-activation on the dense layout when its inputs are narrower than its
    outputs (the first layer: 9 features in, 128 out), as ONE product. The maps commute with the
    weighted sums (``sum_n c_no (W h_n) = (sum_n c_no h_n) W``), so the inputs are summed first
    (over 9 features, not 128) and a row's features are ``[h | sum_o c h_o, sum_o c x, sum_o c | 0]``
    for a device, ``[h | 0 | sum_n c h_n, sum_n c x, sum_n c]`` for an option, against
    ``[W_self; W_bwd; W_bwd_x; b_bwd; W_fwd; W_fwd_x; b_fwd]``. Its gradient is one product as well
    (the rows' features are data, not parameters)."""
    n = layout.devices
    c, h, x_dev, x_opt = _dense_sums(layout, w, h, x)
    dev = jnp.concatenate([jnp.einsum("bnp,bpf->bnf", c, h[:, n:]), x_dev], axis=-1)
    opt = jnp.concatenate([jnp.einsum("bnp,bnf->bpf", c, h[:, :n]), x_opt], axis=-1)
    z = jnp.concatenate([h, _side_blocks(dev, opt)], axis=-1)
    kernel = jnp.concatenate([self_p[0], bwd_k, bwd_e[0], bwd_e[1][None], fwd_k, fwd_e[0], fwd_e[1][None]], 0)
    return z.reshape(-1, z.shape[-1]) @ kernel + self_p[1]


def _wide_dense(layout: DenseLayout, w, h, x, self_p, fwd_k, bwd_k, fwd_e, bwd_e):
    """The same when the inputs are at least as wide as the outputs (the second layer, 128 -> 64):
    the node maps run on the sending nodes only (devices forward, options backward, ``_side_maps``),
    then are summed over the grid; the self map, the summed edge features' maps and their biases are ONE
    product, ``[h | sum_o c x, sum_o c | 0]`` / ``[h | 0 | sum_n c x, sum_n c]`` against
    ``[W_self; W_bwd_x; b_bwd; W_fwd_x; b_fwd]``."""
    n = layout.devices
    c, h, x_dev, x_opt = _dense_sums(layout, w, h, x)
    from_dev, from_opt = _side_maps(n, h, fwd_k, bwd_k)
    to_dev = jnp.einsum("bnp,bpf->bnf", c, from_opt)
    to_opt = jnp.einsum("bnp,bnf->bpf", c, from_dev)
    z = jnp.concatenate([h, _side_blocks(x_dev, x_opt)], axis=-1)
    kernel = jnp.concatenate([self_p[0], bwd_e[0], bwd_e[1][None], fwd_e[0], fwd_e[1][None]], axis=0)
    own = z.reshape(-1, z.shape[-1]) @ kernel + self_p[1]
    return own + jnp.concatenate([to_dev, to_opt], axis=1).reshape(own.shape)


class GCNActor(nn.Module):
    """(graph, edge mask) -> (E,) logits, one per device -> option edge. ``layout`` (optional,
    static) declares the graph to be ``build_graph``'s device/option layout (or a ``graph.union`` of
    such graphs): the convolutions then aggregate by dense reductions instead of ``segment_sum``."""

    hidden: tuple = (128, 64)
    head: int = 64

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, edge_mask: jnp.ndarray,
                 layout: DenseLayout | None = None) -> jnp.ndarray:
        h = graph.nodes
        for width in self.hidden:
            h = EdgeConv(width)(graph._replace(nodes=h), edge_mask, layout)
        # Dense on [h_device || h_option || edge], split by blocks so the node parts run per node
        # (nn.Dense's parameters: the same names, shapes and initial values)
        w_dev = _Affine(self.head, False, name="head_device")(h.shape[-1])[0]
        w_opt = _Affine(self.head, False, name="head_option")(h.shape[-1])[0]
        if layout is None:
            pair = (h @ w_dev)[graph.senders] + (h @ w_opt)[graph.receivers]
        else:
            pair = _pair_grid(layout, h, w_dev, w_opt)
        z = nn.relu(pair + nn.Dense(self.head, name="head_edge")(graph.edges))
        return nn.Dense(1)(z)[:, 0]


def _pair_grid(layout: DenseLayout, h: jnp.ndarray, w_dev: jnp.ndarray, w_opt: jnp.ndarray) -> jnp.ndarray:
    """``(h @ w_dev)[senders] + (h @ w_opt)[receivers]`` on the dense layout, (E, G): each map on
    its own side's rows only (``_side_maps``), then the device rows broadcast over the options and
    the option rows over the devices, no gather (nor, in the backward pass, scatter)."""
    b, n, p = layout.graphs, layout.devices, layout.options
    dev, opt = _side_maps(n, h.reshape(b, n + p, h.shape[-1]), w_dev, w_opt)
    return _broadcast_pair(dev, opt).reshape(b * n * p, w_dev.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _side_maps(n: int, h: jnp.ndarray, w_dev: jnp.ndarray, w_opt: jnp.ndarray):
    """(B, N + P, F) nodes -> ``h[:, :n] @ w_dev`` (B, N, G) on the device rows and
    ``h[:, n:] @ w_opt`` (B, P, G) on the option rows. The backward pass gives ``h`` its gradient
    as ONE concatenation of the two sides' rows: autodiff's form (each slice's transpose a zero pad
    of all N + P rows, then their sum) and both maps applied to every row (zeros on the other side,
    as ``nn.Dense`` on all of ``h`` gives) made a GRLE learning step about 1.1x slower on a CPU
    (docs/benchmarks.md, "Each map on its own rows")."""
    return h[:, :n] @ w_dev, h[:, n:] @ w_opt


def _side_maps_fwd(n, h, w_dev, w_opt):
    return _side_maps(n, h, w_dev, w_opt), (h, w_dev, w_opt)


def _side_maps_bwd(n, res, g):
    h, w_dev, w_opt = res
    g_dev, g_opt = g
    dh = jnp.concatenate([g_dev @ w_dev.T, g_opt @ w_opt.T], axis=1)
    # as (rows, features) matrices: with the einsum over (B, N) XLA:CPU transposed each side's rows
    # first, slowly (docs/benchmarks.md, "Each map on its own rows")
    f, k = h.shape[-1], g_dev.shape[-1]
    rows_dev, rows_opt = h[:, :n].reshape(-1, f), h[:, n:].reshape(-1, f)
    return dh, rows_dev.T @ g_dev.reshape(-1, k), rows_opt.T @ g_opt.reshape(-1, k)


_side_maps.defvjp(_side_maps_fwd, _side_maps_bwd)


@jax.custom_vjp
def _broadcast_pair(dev: jnp.ndarray, opt: jnp.ndarray) -> jnp.ndarray:
    """(B, N, F), (B, P, F) -> (B, N, P, F): ``dev[:, :, None] + opt[:, None]``."""
    return dev[:, :, None] + opt[:, None]


def _broadcast_pair_fwd(dev, opt):
    return _broadcast_pair(dev, opt), None


def _in_order(terms):
    """``0 + t_0 + t_1 + ...`` left to right: the order in which the scatter-add that is a
    gather's transpose sums an edge list's rows (edge ``n * P + o``), so the gradients are the
    general path's bit for bit."""
    total = jnp.zeros_like(terms[0])
    for t in terms:
        total = total + t
    return total


def _broadcast_pair_bwd(_, g):
    n, p = g.shape[1], g.shape[2]
    return _in_order([g[:, :, o] for o in range(p)]), _in_order([g[:, i] for i in range(n)])


_broadcast_pair.defvjp(_broadcast_pair_fwd, _broadcast_pair_bwd)
