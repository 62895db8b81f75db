"""The sort-free orders (grle_jax/order.py) against jnp.lexsort, the plain reference they replace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grle_jax import order
from grle_jax.order import first_in_order, sort_key


def _rows(rng, n_rows, length):
    """Float32 rows full of what the quantiser meets: ties, -0.0 / +0.0, +-inf, NaN."""
    pool = np.array([0.0, -0.0, 1.0, -1.0, 0.5, np.inf, -np.inf, np.nan, 2.5e-8, -3.0e38], np.float32)
    a = rng.choice(pool, size=(n_rows, length))
    b = rng.choice(pool[:6], size=(n_rows, length))
    noisy = rng.random((n_rows, length)) < 0.3
    a = np.where(noisy, rng.standard_normal((n_rows, length)).astype(np.float32), a)
    return jnp.asarray(a), jnp.asarray(b)


def _lexsort_ref(keys, m):
    n = keys[0].shape[0]
    return jnp.lexsort((jnp.arange(n),) + tuple(keys[::-1]))[:m]


@pytest.mark.parametrize("method", ["pairwise", "select", "sort"])
@pytest.mark.parametrize("length,m", [(1, 1), (7, 3), (28, 13), (28, 28), (70, 13)])
@pytest.mark.parametrize("nkeys", [1, 2])
def test_first_in_order_matches_lexsort(method, length, m, nkeys):
    a, b = _rows(np.random.default_rng(length * 100 + m + nkeys), 64, length)
    keys = (a,) if nkeys == 1 else (a, b)
    fast = jax.jit(jax.vmap(lambda *k: first_in_order(k, m, method)))(*keys)
    ref = jax.vmap(lambda *k: _lexsort_ref(k, m))(*keys)
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(ref))
    assert fast.dtype == jnp.int32


def test_integer_keys_and_negative_gaps():
    rng = np.random.default_rng(3)
    ints = jnp.asarray(rng.integers(-3, 3, size=(32, 20)), jnp.int32)
    gaps = jnp.asarray(rng.integers(-2, 2, size=(32, 20)).astype(np.float32) * 0.25)
    for method in ("pairwise", "select"):
        got = jax.vmap(lambda g, i: first_in_order((g, i), 9, method))(gaps, ints)
        ref = jax.vmap(lambda g, i: _lexsort_ref((g, i), 9))(gaps, ints)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))


def test_sort_key_is_the_sort_order():
    x = jnp.asarray([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.0, -3.0, -np.nan], jnp.float32)
    k = np.asarray(sort_key(x))
    srt = np.asarray(jnp.sort(x))  # lax.sort's order
    by_key = np.asarray(x)[np.argsort(k, kind="stable")]
    np.testing.assert_array_equal(np.isnan(srt), np.isnan(by_key))
    np.testing.assert_array_equal(srt[~np.isnan(srt)], by_key[~np.isnan(by_key)])
    assert k[3] == k[4]  # -0.0 and +0.0 are one key, as in the sort
    assert k[0] == k[9]  # every NaN is one key, after +inf
    assert k[0] > k[1]


def test_method_picked_by_size(monkeypatch):
    calls = []
    real = jnp.lexsort
    monkeypatch.setattr(order.jnp, "lexsort", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    x = jnp.zeros((order.PAIRWISE_MAX,))
    first_in_order((x,), order.PAIRWISE_MAX)  # short row: pairwise, every position
    y = jnp.zeros((order.PAIRWISE_MAX + 1,))
    first_in_order((y,), order.SELECT_MAX)  # long row, few wanted: select
    assert calls == []
    first_in_order((y,), order.SELECT_MAX + 1)  # long row, many wanted: the sort itself
    assert calls == [1]


@pytest.mark.parametrize("m", [0, 6])
def test_bad_m_and_method(m):
    with pytest.raises(ValueError, match="m must be in 1..5"):
        first_in_order((jnp.zeros(5),), m)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        first_in_order((jnp.zeros(5),), 2, "bubble")


def test_ranks_are_the_inverse_order():
    a, b = _rows(np.random.default_rng(11), 32, 15)
    got = jax.vmap(lambda x, y: order.ranks((x, y)))(a, b)
    ref = jax.vmap(lambda x, y: jnp.argsort(_lexsort_ref((x, y), 15)))(a, b)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
