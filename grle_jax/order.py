"""The first ``m`` positions of a lexicographic order, without a sort (bit-identical to ``jnp.lexsort``).

The critic's quantiser keeps the first K - 1 of N * P (device, option) moves in order of (gap, gap
in logits, index); greedy orders N devices by arrival. ``jnp.lexsort`` / ``jnp.argsort`` lower to
XLA's comparator sort, which on the CPU calls the comparator per pair, one short row at a time:
under ``vmap`` over 1,024 runs a sort of 28 moves took 2.8 ms. Two sort-free forms of the SAME
order are used instead (docs/benchmarks.md, "Orders without a sort"):

- ``pairwise`` (short rows, L <= ``PAIRWISE_MAX``): each element's rank is the number of elements
  before it (an L x L comparison, elementwise work under ``vmap``), and the element of rank r is
  picked by a one-hot sum. 2.8 ms -> 0.25 ms at L = 28.
- ``select`` (long rows, few positions wanted): m passes, each taking the smallest remaining
  element (min of the first key, then of the second among those equal, then the lowest index).
  19 ms -> 2 ms at L = 140, m = 13.
- otherwise (long rows AND many positions, e.g. adaptive K) the sort itself.

Comparisons follow ``lax.sort``'s exactly: floats are compared in IEEE total order after -0.0 is
made +0.0 and every NaN the canonical NaN (``jax._src.lax.lax._canonicalize_float_for_sort``), so
equal keys, infinities and NaNs come out where the sort puts them. Ties left after every key go to
the lower index (a stable sort). ``tests/test_order.py`` checks all three forms against
``jnp.lexsort`` on rows with ties, signed zeros, infinities and NaNs.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

PAIRWISE_MAX = 64  # rows up to this length use the L x L ranks
SELECT_MAX = 32  # beyond, positions wanted from a longer row: the sort
UNROLL = 1  # fori_loop unroll of select's passes (full: ~15% faster at L = 140, m = 13, more to compile)


def sort_key(x: jnp.ndarray) -> jnp.ndarray:
    """An int32 (or the integer itself) whose signed order is ``lax.sort``'s order of ``x``."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.int32)
    x = x.astype(jnp.float32)
    x = jnp.where(x == 0, jnp.zeros_like(x), x)  # -0.0 -> +0.0
    x = jnp.where(jnp.isnan(x), jnp.full_like(x, jnp.nan), x)  # one NaN, after +inf
    b = jax.lax.bitcast_convert_type(x, jnp.int32)
    return b ^ ((b >> 31) & 0x7FFFFFFF)  # negative floats: reverse the order of their magnitudes


def ranks(keys: Sequence[jnp.ndarray]) -> jnp.ndarray:
    """keys: 1-D arrays of one length L, PRIMARY KEY FIRST -> (L,) int32: each element's position in
    the lexicographic order (ties to the lower index), i.e. the inverse of ``first_in_order(keys, L)``
    (``argsort(argsort(...))`` without a sort): an L x L comparison, for short rows."""
    n = keys[0].shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    before = idx[:, None] < idx[None, :]  # [j, i]: j comes before i
    for k in [sort_key(k) for k in keys][::-1]:
        kj, ki = k[:, None], k[None, :]
        before = (kj < ki) | ((kj == ki) & before)
    return jnp.sum(before, axis=0, dtype=jnp.int32)  # a permutation of 0..L-1


def first_in_order(keys: Sequence[jnp.ndarray], m: int, method: str | None = None) -> jnp.ndarray:
    """keys: 1-D arrays of one length L, PRIMARY KEY FIRST -> (m,) int32 indices of the first m
    elements in lexicographic order (ties to the lower index), i.e.
    ``jnp.lexsort((arange(L),) + keys[::-1])[:m]``. ``method``: None picks by size (see module)."""
    n = keys[0].shape[0]
    if not 0 < m <= n:
        raise ValueError(f"m must be in 1..{n}, got {m}")
    if method is None:
        method = "pairwise" if n <= PAIRWISE_MAX else ("select" if m <= SELECT_MAX else "sort")
    idx = jnp.arange(n, dtype=jnp.int32)
    if method == "sort":
        return jnp.lexsort((idx,) + tuple(keys[::-1]))[:m].astype(jnp.int32)
    if method == "pairwise":
        rank = ranks(keys)
        pick = rank[None, :] == jnp.arange(m, dtype=jnp.int32)[:, None]  # (m, L), one True per row
        return jnp.sum(jnp.where(pick, idx[None, :], 0), axis=1, dtype=jnp.int32)
    if method != "select":
        raise ValueError(f"unknown method {method!r}")
    ks = [sort_key(k) for k in keys]
    big = jnp.iinfo(jnp.int32).max  # above every key (the canonical NaN is 0x7FC00000)

    def take(r, carry):
        left, out = carry
        cand = left
        for k in ks:
            low = jnp.min(jnp.where(cand, k, big))
            cand = cand & (k == low)
        i = jnp.argmax(cand).astype(jnp.int32)  # the lowest index among the smallest
        return left & (idx != i), out.at[r].set(i)

    out = jnp.zeros((m,), jnp.int32)
    return jax.lax.fori_loop(0, m, take, (jnp.ones((n,), bool), out), unroll=UNROLL)[1]
