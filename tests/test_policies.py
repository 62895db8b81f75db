"""Actors (docs/model.md section 5): shapes, the masked loss, the GCN's permutation equivariance over
devices and its respect of masks, the fixed-shape graph."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grle_jax.agent import AgentConfig
from grle_jax.config import Config
import jraph

from grle_jax.graph import DenseLayout, build_graph, edge_index, union
from grle_jax.policies.gcn import GCNActor
from grle_jax.policies import make_actor, masked_bce
from grle_jax.scenario import observe, reset, sample

N, M = 5, 2


def _setup(policy, p_link=0.7, p_active=0.8, seed=3):
    cfg = Config.for_scenario("csi", devices=N, servers=M, p_link=p_link, p_active=p_active)
    static, params = cfg.static(), cfg.params()
    actor = make_actor(static, AgentConfig(policy=policy).static(static))
    st = reset(static)
    # queues not empty, so every feature is exercised
    st = st.replace(radio=jnp.linspace(0.0, 12.0, N), es=jnp.asarray([3.0, 7.5]))
    obs = observe(st, sample(jax.random.key(seed), params, st, static))
    variables = actor.init(jax.random.key(0), obs, params)
    return static, params, actor, obs, variables


@pytest.mark.parametrize("policy,options", [("grle", M * 5), ("grl", M), ("droo", M), ("drooe", M * 5)])
def test_shapes_and_options(policy, options):
    static, params, actor, obs, v = _setup(policy)
    logits = actor.apply(v, obs, params)
    assert logits.shape == (N, options)
    assert np.isfinite(np.asarray(logits)).all()
    live = np.asarray(actor.live(obs))
    L, active = np.asarray(obs.L), np.asarray(obs.active)
    for n in range(N):
        for o, env_opt in enumerate(actor.option_idx):
            assert live[n, o] == (active[n] and L[n, env_opt // static.e])
    if policy in ("grl", "droo"):
        assert [int(i) % static.e for i in actor.option_idx] == [static.e - 1] * M


@pytest.mark.parametrize("policy", ["grle", "grl"])
def test_gcn_init_needs_no_graph(policy):
    """A graph network's variables come from the key and the feature widths alone: initialised on
    the canonical one-edge graph they equal those initialised on a real slot's graph."""
    static, params, actor, obs, v = _setup(policy)
    graph, mask = build_graph(static, params, obs, actor.option_idx)
    real = actor.module.init(jax.random.key(0), graph, mask)
    assert actor.shape_free and not make_actor(static, AgentConfig(policy="droo").static(static)).shape_free
    assert jax.tree_util.tree_structure(real) == jax.tree_util.tree_structure(v)
    for a, b in zip(jax.tree_util.tree_leaves(real), jax.tree_util.tree_leaves(v)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("policy", ["grle", "grl", "drooe"])
def test_apply_batch_equals_one_by_one(policy):
    """The training minibatch runs as one disjoint-union graph (graph.union): the same logits as
    the network applied to each observation alone, and no edge crosses between graphs."""
    static, params, actor, obs, v = _setup(policy)
    B = 5
    st = reset(static).replace(radio=jnp.linspace(0.0, 12.0, N), es=jnp.asarray([3.0, 7.5]))
    obs_b = jax.vmap(lambda k: observe(st, sample(k, params, st, static)))(jax.random.split(jax.random.key(9), B))
    got = np.asarray(jax.jit(actor.apply_batch)(v, obs_b, params))
    want = np.stack([np.asarray(actor.apply(v, jax.tree_util.tree_map(lambda x: x[b], obs_b), params))
                     for b in range(B)])
    assert got.shape == (B, N, actor.options)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if policy != "drooe":
        graphs, masks = jax.vmap(lambda o: build_graph(static, params, o, actor.option_idx))(obs_b)
        g, m = union(graphs, masks)
        per = N + actor.options
        assert g.nodes.shape == (B * per, 9) and m.shape == (B * N * actor.options,)
        assert (np.asarray(g.n_node) == per).all() and len(np.asarray(g.n_edge)) == B
        assert (np.asarray(g.senders) // per == np.asarray(g.receivers) // per).all()
        assert (np.asarray(g.senders) // per == np.repeat(np.arange(B), N * actor.options)).all()


def _random_layout_graphs(key, b, n, p, p_live):
    """b random graphs of build_graph's layout (random features, a random edge mask), and their union."""
    k1, k2, k3 = jax.random.split(key, 3)
    mask = jax.random.uniform(k3, (b, n * p)) < p_live
    snd, rcv = edge_index(n, p)
    graphs = jraph.GraphsTuple(
        nodes=jax.random.normal(k1, (b, n + p, 9)), edges=jax.random.normal(k2, (b, n * p, 3)) * mask[..., None],
        senders=jnp.broadcast_to(jnp.asarray(snd), (b, n * p)), receivers=jnp.broadcast_to(jnp.asarray(rcv), (b, n * p)),
        globals=None, n_node=jnp.full((b, 1), n + p, jnp.int32), n_edge=jnp.full((b, 1), n * p, jnp.int32))
    return graphs, mask


@pytest.mark.parametrize("b,hidden", [(1, (16, 8)), (4, (16, 8)), (4, (128, 64))])
def test_gcn_dense_aggregation_equals_segment_sum(b, hidden):
    """The dense fast path (layout given: (B, N, P) contractions, a layer narrower in than out as
    one product of summed inputs, a wider one as node maps summed plus one product) and the general
    path (gathers and segment_sum over the edge list) are the same network: equal logits on one
    graph and on a disjoint union, with masked edges (one graph of the union entirely masked); on
    the union also equal gradients, and equal logits under a vmap over parameter sets (the runs of
    a sweep). Widths 9 -> 16 -> 8 and the actor's own 9 -> 128 -> 64 take both dense forms."""
    n, p = 4, 3
    graphs, mask = _random_layout_graphs(jax.random.key(b), b, n, p, 0.6)
    mask = mask.at[b // 2].set(False) if b > 1 else mask
    g, m = union(graphs, mask)
    mod = GCNActor(hidden=hidden, head=8)
    lay = DenseLayout(b, n, p)
    vs = jax.vmap(lambda k: mod.init(k, g, m))(jax.random.split(jax.random.key(1), 2))

    @jax.jit
    def both(vs):
        general = jax.vmap(lambda v: mod.apply(v, g, m))(vs)
        dense = jax.vmap(lambda v: mod.apply(v, g, m, lay))(vs)
        if b == 1:
            return general, dense, (), ()
        v = jax.tree_util.tree_map(lambda x: x[0], vs)
        return general, dense, *(jax.grad(lambda v: jnp.sum(jnp.tanh(mod.apply(v, g, m, layout))))(v)
                                 for layout in (None, lay))

    general, dense, g_general, g_dense = both(vs)
    assert dense.shape == general.shape == (2, b * n * p) and dense.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(dense), np.asarray(general), rtol=1e-5, atol=1e-5)
    assert np.asarray(m).any() and not np.allclose(general[0], general[1])
    for x, y in zip(jax.tree_util.tree_leaves(g_general), jax.tree_util.tree_leaves(g_dense)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="is not"):
        jax.eval_shape(lambda v: mod.apply(v, g, m, DenseLayout(b, p, n + 1)),
                       jax.tree_util.tree_map(lambda x: x[0], vs))


def test_actor_uses_the_dense_path():
    """The GRLE actor runs the dense path, alone and on the minibatch union: its programs hold no
    scatter (segment_sum's); the general path's does."""
    static, params, actor, obs, v = _setup("grle")
    obs_b = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), obs)
    assert "scatter-add" not in str(jax.make_jaxpr(actor.apply)(v, obs, params))
    assert "scatter-add" not in str(jax.make_jaxpr(actor.apply_batch)(v, obs_b, params))
    g, m = build_graph(static, params, obs, actor.option_idx)
    assert "scatter-add" in str(jax.make_jaxpr(actor.module.apply)(v, g, m))
    # nor does the training step's gradient (the edge head's transpose included)
    grad = jax.grad(lambda v: jnp.sum(actor.apply_batch(v, obs_b, params) ** 2))
    assert "scatter-add" not in str(jax.make_jaxpr(grad)(v))


def test_dense_edge_head_equals_the_gathers_bit_for_bit():
    """The edge head's ``(h @ w_dev)[senders] + (h @ w_opt)[receivers]`` on the dense layout
    (``gcn._pair_grid``: each map on its own side's rows, then a broadcast over the (B, N, P) grid)
    gives the gathers' values AND, in the backward pass, the nodes' gradient (the gathers'
    transpose is a scatter-add in edge order): jitted, and vmapped over runs as training runs it.
    Bit for bit on the Intel (AVX-512) CPU where it was written; on an AMD EPYC with AVX2 (sixteenth
    session) XLA's product over one side's rows rounded differently from the product over every row
    (up to 2e-6 on values of about 5), so values and gradient are checked to float32 rounding and
    against float64. The weights' gradients sum the device (option) rows only instead of every row
    with zeros on the other side: the same sums in another float32 order, checked against float64."""
    from grle_jax.policies.gcn import _pair_grid

    b, n, p, f, g = 3, 7, 6, 16, 8
    snd, rcv = edge_index(n, p)
    off = (np.arange(b) * (n + p))[:, None]
    snd, rcv = (snd[None] + off).reshape(-1), (rcv[None] + off).reshape(-1)
    layout = DenseLayout(b, n, p)
    k = jax.random.split(jax.random.key(0), 4)
    h = jax.random.normal(k[0], (4, b * (n + p), f))
    w_dev, w_opt = (jax.random.normal(k[i], (4, f, g)) for i in (1, 2))
    ct = jax.random.normal(k[3], (4, b * n * p, g))

    def both(fn):
        def one(h, w_dev, w_opt, ct):
            out, vjp = jax.vjp(fn, h, w_dev, w_opt)
            return (out,) + vjp(ct)
        return [np.asarray(x) for x in jax.jit(jax.vmap(one))(h, w_dev, w_opt, ct)]

    want = both(lambda h, wd, wo: (h @ wd)[snd] + (h @ wo)[rcv])
    got = both(lambda h, wd, wo: _pair_grid(layout, h, wd, wo))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6 * np.abs(want[0]).max())  # values
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6 * np.abs(want[1]).max())  # d h
    assert np.abs(got[1]).min() > 0  # every node row got its sum
    h64, wd64, wo64 = (np.asarray(x, np.float64) for x in (h, w_dev, w_opt))
    ref = np.einsum("ref,rfg->reg", h64[:, snd], wd64) + np.einsum("ref,rfg->reg", h64[:, rcv], wo64)
    np.testing.assert_allclose(got[0], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # d w_dev = sum over edges of h[sender] ct, d w_opt likewise over receivers, in float64
    ct64 = np.asarray(ct, np.float64)
    for j, idx in ((2, snd), (3, rcv)):
        ref = np.einsum("ref,reg->rfg", h64[:, idx], ct64)
        np.testing.assert_allclose(got[j], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        np.testing.assert_allclose(want[j], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_graph_fixed_shape():
    static, params, actor, obs, v = _setup("grle")
    g, mask = build_graph(static, params, obs, actor.option_idx)
    P = M * static.e
    assert g.nodes.shape == (N + P, 9) and g.edges.shape == (N * P, 3)
    snd, rcv = edge_index(N, P)
    assert (np.asarray(g.senders) == snd).all() and (np.asarray(g.receivers) == rcv).all()
    assert mask.shape == (N * P,)
    # masked edges carry zero features
    assert (np.asarray(g.edges)[~np.asarray(mask)] == 0).all()
    # the graph builds under jit (no jraph padding)
    g2, _ = jax.jit(lambda o: build_graph(static, params, o, actor.option_idx))(obs)
    np.testing.assert_allclose(np.asarray(g2.nodes), np.asarray(g.nodes), rtol=1e-6)


def _permute(obs, perm):
    return obs.replace(s=obs.s[perm], r_hat=obs.r_hat[perm], L=obs.L[perm], active=obs.active[perm],
                       radio=obs.radio[perm])


@pytest.mark.parametrize("policy", ["grle", "grl"])
def test_gcn_permutation_equivariant(policy):
    static, params, actor, obs, v = _setup(policy, p_link=0.8, p_active=1.0)
    logits = np.asarray(actor.apply(v, obs, params))
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(N)
        permuted = np.asarray(actor.apply(v, _permute(obs, perm), params))
        np.testing.assert_allclose(permuted, logits[perm], rtol=1e-5, atol=1e-5)


def test_gcn_respects_masks():
    """Whatever lies behind a masked edge (a link that is down, a device without a task) changes
    nothing on the live edges."""
    static, params, actor, obs, v = _setup("grle", p_link=0.6, p_active=0.7, seed=11)
    L, active = np.asarray(obs.L), np.asarray(obs.active)
    assert (~L).any() and (~active).any(), "pick a seed with down links and idle devices"
    live = np.asarray(actor.live(obs))
    base = np.asarray(actor.apply(v, obs, params))
    # change the estimated rate of every down link, and everything about idle devices
    r_hat = jnp.where(obs.L, obs.r_hat, obs.r_hat * 3.7 + 11.0)
    idle = ~obs.active
    other = obs.replace(r_hat=jnp.where(idle[:, None], 55.0, r_hat), s=jnp.where(idle, 99.0, obs.s),
                        radio=jnp.where(idle, 17.0, obs.radio))
    changed = np.asarray(actor.apply(v, other, params))
    np.testing.assert_allclose(changed[live], base[live], rtol=1e-6, atol=1e-6)


def test_mlp_sees_only_rates():
    static, params, actor, obs, v = _setup("drooe")
    base = np.asarray(actor.apply(v, obs, params))
    other = obs.replace(radio=obs.radio + 5.0, es=obs.es + 3.0, s=obs.s * 0.5)
    np.testing.assert_array_equal(np.asarray(actor.apply(v, other, params)), base)


class _PlainMLP(nn.Module):
    """The DROO actor as flax writes it: ``nn.Dense`` layers, autodiff's backward pass."""

    out: int
    hidden: tuple = (120, 80)

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


@pytest.mark.parametrize("policy", ["droo", "drooe"])
def test_mlp_backward_pass_equals_autodiff(policy):
    """policies.mlp writes the layers' backward pass out (the kernel's transpose materialised, for
    XLA:CPU's speed): the same variables from a key as nn.Dense, the same logits bit for bit, and
    the gradient of the training loss equal to autodiff's up to float32 summation order, for
    minibatches and vmapped over runs as the trainer runs it."""
    static, params, actor, obs, v = _setup(policy)
    B, R = 6, 3
    st = reset(static).replace(radio=jnp.linspace(0.0, 12.0, N), es=jnp.asarray([3.0, 7.5]))
    obs_b = jax.vmap(lambda k: observe(st, sample(k, params, st, static)))(jax.random.split(jax.random.key(4), B))
    plain = _PlainMLP(N * actor.options)

    def plain_logits(v, o):  # the input as the actor makes it
        return plain.apply(v, jnp.where(o.L, o.r_hat / params.rate_hi, 0.0).reshape(B, -1)).reshape(B, N, -1)

    keys = jax.random.split(jax.random.key(8), R)
    ours = jax.vmap(lambda k: actor.init(k, obs, params))(keys)
    ref = jax.vmap(lambda k: plain.init(k, jnp.zeros(N * static.m)))(keys)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    target = jax.nn.one_hot(jax.random.randint(jax.random.key(5), (B, N), 0, actor.options), actor.options)
    live = jax.vmap(actor.live)(obs_b)

    def loss_ours(v, o):
        return masked_bce(actor.apply_batch(v, o, params), target, live)

    def loss_ref(v, o):
        return masked_bce(plain_logits(v, o), target, live)

    logits = jax.jit(jax.vmap(lambda v, o: actor.apply_batch(v, o, params), in_axes=(0, None)))(ours, obs_b)
    np.testing.assert_array_equal(np.asarray(logits),
                                  np.asarray(jax.jit(jax.vmap(plain_logits, in_axes=(0, None)))(ours, obs_b)))
    got = jax.jit(jax.vmap(jax.value_and_grad(loss_ours), in_axes=(0, None)))(ours, obs_b)
    want = jax.jit(jax.vmap(jax.value_and_grad(loss_ref), in_axes=(0, None)))(ours, obs_b)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(got[1]))
    # the written-out pass is used: the kernels' transposes materialised (on the CPU) for dx
    assert str(jax.make_jaxpr(jax.grad(loss_ours))(v, obs_b)).count("bitwise_xor") == len(actor.module.hidden) + 1


def test_masked_bce():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    target = jnp.asarray(rng.uniform(size=(3, 4, 5)) < 0.3, jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(3, 4, 5)) < 0.6)
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    t = np.asarray(target)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    m = np.asarray(mask)
    expected = (bce * m).sum() / m.sum()
    np.testing.assert_allclose(float(masked_bce(logits, target, mask)), expected, rtol=1e-5)
    # masked-out entries neither count nor get a gradient
    g = jax.grad(lambda x: masked_bce(x, target, mask))(logits)
    assert (np.asarray(g)[~m] == 0).all()
    wild = jnp.where(mask, logits, 1e3)
    np.testing.assert_allclose(float(masked_bce(wild, target, mask)), expected, rtol=1e-5)
    assert float(masked_bce(logits, target, jnp.zeros_like(mask))) == 0.0
    np.testing.assert_allclose(optax.sigmoid_binary_cross_entropy(jnp.zeros(1), jnp.ones(1)), np.log(2), rtol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 256, 257, 1000])
def test_fixed_order_sum_is_a_pairwise_tree(size):
    """grle_jax.policies.fixed_order_sum: the pairwise tree over the zero-padded entries, bit for bit
    (a plain numpy float32 reference, one level at a time), and its gradient is all ones."""
    from grle_jax.policies import fixed_order_sum

    x = np.random.default_rng(size).normal(size=size).astype(np.float32) * np.float32(1e3)
    ref = np.zeros(1 << max(0, (size - 1).bit_length()), np.float32)
    ref[:size] = x
    while ref.size > 1:
        ref = ref[: ref.size // 2] + ref[ref.size // 2:]
    got = jax.jit(fixed_order_sum)(jnp.asarray(x).reshape((size, 1)))
    assert np.asarray(got).tobytes() == ref[0].tobytes()
    np.testing.assert_allclose(float(got), float(np.sum(x, dtype=np.float64)), rtol=1e-4, atol=1e-2)
    assert (np.asarray(jax.grad(fixed_order_sum)(jnp.asarray(x))) == 1.0).all()
