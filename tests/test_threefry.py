"""jax.random's hash unrolled on the CPU (grle_jax.threefry): the same bits as a plain numpy
Threefry-2x32, no loop in the compiled program, and the barrier changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np

import grle_jax  # noqa: F401  (registers the lowering)
from grle_jax import threefry
from grle_jax.scenario import _uniforms

M32 = 0xFFFFFFFF
ROT = ((13, 15, 26, 6), (17, 29, 16, 24))


def np_threefry2x32(k1: int, k2: int, x1: np.ndarray, x2: np.ndarray):
    """Salmon et al.'s Threefry-2x32 with 20 rounds, written from the paper's key schedule."""
    x1, x2 = x1.astype(np.uint64), x2.astype(np.uint64)
    ks = (k1, k2, k1 ^ k2 ^ 0x1BD11BDA)
    x1, x2 = (x1 + ks[0]) & M32, (x2 + ks[1]) & M32
    for i in range(5):
        for r in ROT[i % 2]:
            x1 = (x1 + x2) & M32
            x2 = ((x2 << r) | (x2 >> (32 - r))) & M32
            x2 = x1 ^ x2
        x1 = (x1 + ks[(i + 1) % 3]) & M32
        x2 = (x2 + ks[(i + 2) % 3] + i + 1) & M32
    return x1.astype(np.uint32), x2.astype(np.uint32)


def np_bits(key_data, n: int) -> np.ndarray:
    """jax.random.bits(key, (n,), uint32) with partitionable threefry: counters (0, i), words xor'ed."""
    b1, b2 = np_threefry2x32(int(key_data[0]), int(key_data[1]), np.zeros(n, np.uint32), np.arange(n, dtype=np.uint32))
    return b1 ^ b2


def test_unrolled_lowering_is_active_on_this_jax():
    assert threefry.UNROLLED
    f = jax.jit(lambda k: jax.random.bits(k, (64,), jnp.uint32))
    hlo = f.lower(jax.random.key(1)).compile().as_text()
    assert " while(" not in hlo  # JAX's CPU lowering is a loop of five steps


def test_draws_equal_a_plain_threefry():
    for seed in (0, 1, 12345, 2**31 - 1):
        key = jax.random.key(seed)
        kd = np.asarray(jax.random.key_data(key))
        for n in (1, 7, 128, 1000):
            np.testing.assert_array_equal(np.asarray(jax.random.bits(key, (n,), jnp.uint32)), np_bits(kd, n))
        # fold_in(key, t): the hash of the counter pair (0, t); split: counters (0, 0) and (0, 1)
        for t in (0, 5, 99999):
            a, b = np_threefry2x32(int(kd[0]), int(kd[1]), np.zeros(1, np.uint32), np.array([t], np.uint32))
            got = np.asarray(jax.random.key_data(jax.random.fold_in(key, t)))
            np.testing.assert_array_equal(got, np.array([a[0], b[0]]))
        a, b = np_threefry2x32(int(kd[0]), int(kd[1]), np.zeros(2, np.uint32), np.arange(2, dtype=np.uint32))
        got = np.asarray(jax.random.key_data(jax.random.split(key)))
        np.testing.assert_array_equal(got, np.stack([a, b], axis=1))


def test_vmapped_slot_uniforms_equal_the_reference():
    keys = jax.random.split(jax.random.key(3), 257)
    u = np.asarray(jax.jit(jax.vmap(lambda k: _uniforms(k, 128)))(keys))
    kd = np.asarray(jax.random.key_data(keys))
    want = np.stack([(np_bits(d, 128) >> 9).astype(np.float32) * np.float32(2.0 ** -23) for d in kd])
    np.testing.assert_array_equal(u, want)


def test_computed_once_is_the_identity_and_a_reduction():
    r = np.random.default_rng(0)
    xs = [jnp.asarray(r.integers(0, 2**32, (5, 9), dtype=np.uint32)),
          jnp.asarray(np.array([0.0, -0.0, 1.5, -np.inf, np.inf, np.nan, 1e-45], np.float32)),
          jnp.asarray(r.integers(-9, 9, (4,), dtype=np.int32))]
    for x in xs:
        y = np.asarray(jax.jit(threefry.computed_once)(x))
        assert y.dtype == x.dtype
        np.testing.assert_array_equal(y.view(np.uint8), np.asarray(x).view(np.uint8))  # every bit, -0 and NaN too
        assert "reduce" in jax.jit(threefry.computed_once).lower(x).as_text()
