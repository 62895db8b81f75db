"""The critic's order-preserving one-hot quantiser (docs/model.md section 5): order, count,
feasibility, K_max and ties."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from grle_jax.agent import AgentConfig, k_max, option_index, policy_options
from grle_jax.config import EnvStatic
from grle_jax.errors import ConfigError
from grle_jax.quantize import count_valid, one_hot, quantize

Q = jax.jit(quantize, static_argnums=(2,))


def reference(scores, live, k_cap):
    """Plain-Python version of docs/model.md section 5's rule."""
    n, p = scores.shape
    base = []
    for i in range(n):
        opts = [o for o in range(p) if live[i, o]]
        base.append(max(opts, key=lambda o: (scores[i, o], -o)) if opts else -1)
    moves = []
    for i in range(n):
        for o in range(p):
            if live[i, o] and o != base[i]:
                moves.append((scores[i, base[i]] - scores[i, o], i, o))
    moves.sort()
    cands = [list(base)]
    for _, i, o in moves[: k_cap - 1]:
        c = list(base)
        c[i] = o
        cands.append(c)
    return cands


def test_order_by_gap():
    scores = jnp.asarray([[0.9, 0.1, 0.85],
                          [0.2, 0.6, 0.55]], jnp.float32)
    live = jnp.ones((2, 3), bool)
    cands, valid = Q(scores, live, 5)
    # best: device 0 -> 0, device 1 -> 1; gaps: (0,2)=0.05, (1,2)=0.05, (1,0)=0.4, (0,1)=0.8
    # tie between (0,2) and (1,2): lower device first
    assert np.asarray(cands).tolist() == [[0, 1], [2, 1], [0, 2], [0, 0], [1, 1]]
    assert np.asarray(valid).all()


def test_count_and_padding():
    scores = jnp.asarray([[0.3, 0.7], [0.5, 0.2], [0.9, 0.1]], jnp.float32)
    live = jnp.asarray([[True, True], [True, False], [False, False]])
    # live pairs 3, devices with a live option 2 -> K_max = 2
    assert int(count_valid(live)) == 2
    cands, valid = Q(scores, live, 4)
    assert np.asarray(valid).tolist() == [True, True, False, False]
    c = np.asarray(cands)
    assert c[0].tolist() == [1, 0, -1]
    assert c[1].tolist() == [0, 0, -1]
    assert (c[2:] == c[0]).all()  # padding repeats candidate 1, masked as invalid


def test_ties_lowest_option():
    scores = jnp.full((2, 4), 0.5, jnp.float32)
    live = jnp.asarray([[True] * 4, [False, True, True, False]])
    cands, valid = Q(scores, live, 6)
    c = np.asarray(cands)
    assert c[0].tolist() == [0, 1]
    # all gaps 0: device 0's options 1, 2, 3, then device 1's option 2
    assert [tuple(x) for x in c[1:5]] == [(1, 1), (2, 1), (3, 1), (0, 2)]
    assert np.asarray(valid).tolist() == [True] * 5 + [False]


def test_k_max_and_options():
    s = EnvStatic(n=14, m=2, e=5)
    assert policy_options("grle", s) == 10 and policy_options("drooe", s) == 10
    assert policy_options("grl", s) == 2 and policy_options("droo", s) == 2
    assert option_index("grl", s).tolist() == [4, 9]  # final exit of each ES
    assert option_index("grle", s).tolist() == list(range(10))
    assert k_max("grle", s) == 1 + 14 * 9 == 127
    assert k_max("droo", s) == 15
    assert int(count_valid(jnp.ones((14, 10), bool))) == 127
    assert AgentConfig(policy="grle").k_for(s) == 14  # default K = N
    assert AgentConfig(policy="grle", adaptive_k=True).static(s).k_cap == 127
    try:
        AgentConfig(policy="droo", k=16).check(s)
    except ConfigError as err:
        assert err.field == "k" and "15" in err.why
    else:
        raise AssertionError("k above K_max accepted")


def test_one_hot():
    oh = np.asarray(one_hot(jnp.asarray([2, -1, 0]), 3))
    assert oh.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0]]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from([0.0, 0.3, 0.7]), st.integers(1, 12))
def test_matches_reference(seed, p_down, k_cap):
    """Every candidate is feasible (live options only, -1 exactly for devices with none), differs
    from candidate 1 in one device, and the list equals the plain-Python rule (coarse scores, so
    ties are frequent)."""
    rng = np.random.default_rng(seed)
    n, p = 3, 4
    scores = np.round(rng.uniform(size=(n, p)) * 4) / 4  # many exact ties
    live = rng.uniform(size=(n, p)) >= p_down
    cands, valid = quantize(jnp.asarray(scores, jnp.float32), jnp.asarray(live), k_cap)
    cands, valid = np.asarray(cands), np.asarray(valid)
    ref = reference(scores.astype(np.float32), live, k_cap)
    assert cands.shape == (k_cap, n) and valid.shape == (k_cap,)
    assert int(valid.sum()) == min(k_cap, int(count_valid(jnp.asarray(live))))
    assert [c.tolist() for c in cands[valid]] == ref
    for c in cands[valid]:
        for i in range(n):
            assert (c[i] == -1) == (not live[i].any())
            if c[i] >= 0:
                assert live[i, c[i]]
        assert (c != cands[0]).sum() <= 1
    for c1, c2 in itertools.combinations([tuple(c) for c in cands[valid]], 2):
        assert c1 != c2  # distinct candidates
