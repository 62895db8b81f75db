"""What fraction of a simulated slot is random-number generation (threefry), and what running the
environments in chunks buys (issue 14, part 3).

    python -m benchmarks.rng_share [--batches 1024,8192] [--slots 100] [--reps 7] [--chunks 512]

The loop of ``benchmarks.sim_throughput`` (sample a slot, a uniformly random reachable decision,
step), ``vmap`` over B environments, timed three ways in interleaved repetitions (median): with the
real keys; with every random draw (the slot key's ``fold_in``/``split``, the slot's uniforms, the
random policy's uniforms) replaced by a cheap counter hash, i.e. the same slot without threefry;
and the draws alone. ``--chunks C`` also times the real loop as a ``lax.map`` over B / C chunks of
C environments and says whether its rewards are bit-identical to the unchunked run's.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import grle_jax.scenario as scenario
from grle_jax import cli
from grle_jax.baselines import random_policy
from grle_jax.config import Config
from grle_jax.dynamics import step
from grle_jax.scenario import observe, reset, sample


def _cheap_uniforms(key, count):
    """Not random: a counter hash of the key's data, the same shapes as the real draws."""
    d = jax.random.key_data(key).astype(jnp.float32)
    return jnp.mod(jnp.arange(count, dtype=jnp.float32) * 0.6180339 + d[0] * 1e-3 + d[1] * 1e-4, 1.0)


def _loop(static, params, slots: int, cheap: bool):
    def one_env(key):
        def body(state, _):
            ks, kp = (key, key) if cheap else jax.random.split(jax.random.fold_in(key, state.t))
            inp = sample(ks, params, state, static)
            opt = random_policy(kp, static, params, observe(state, inp))
            state, out = step(static, params, state, inp, opt)
            return state, out.reward

        return jax.lax.scan(body, reset(static), None, length=slots)[1].sum()

    return jax.vmap(one_env)


def _compile_cheap(static, params, slots, keys):
    """Compile the loop with the draws patched out (restored afterwards, whatever happens)."""
    real_u, real_uniform = scenario._uniforms, jax.random.uniform
    scenario._uniforms = _cheap_uniforms
    jax.random.uniform = lambda key, shape, *a, **k: _cheap_uniforms(key, int(np.prod(shape))).reshape(shape)
    try:
        return jax.jit(_loop(static, params, slots, True)).lower(keys).compile()
    finally:
        scenario._uniforms, jax.random.uniform = real_u, real_uniform


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.rng_share", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1024,8192")
    p.add_argument("--slots", type=int, default=100)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--chunks", type=int, default=None, help="also time chunks of this many environments")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    cfg = Config.for_scenario("csi", devices=14, servers=2)
    static, params = cfg.static(), cfg.params()
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        keys = jax.random.split(jax.random.key(0), b)

        def draws(key):
            def body(c, t):
                ks, kp = jax.random.split(jax.random.fold_in(key, t))
                return c + scenario._uniforms(ks, 128).sum() + jax.random.uniform(kp, (static.n,)).sum(), None

            return jax.lax.scan(body, 0.0, jnp.arange(args.slots))[0]

        fns = {"real": jax.jit(_loop(static, params, args.slots, False)).lower(keys).compile(),
               "no_threefry": _compile_cheap(static, params, args.slots, keys),
               "draws_only": jax.jit(jax.vmap(draws)).lower(keys).compile()}
        c = args.chunks
        if c and b % c == 0 and b > c:
            loop = _loop(static, params, args.slots, False)
            fns["chunked"] = jax.jit(lambda k: jax.lax.map(loop, k.reshape(b // c, c)).reshape(b)).lower(keys).compile()
        times = {k: [] for k in fns}
        for _ in range(args.reps):
            for k, f in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(keys))
                times[k].append(time.perf_counter() - t0)
        us = {k: float(np.median(v)) / (b * args.slots) * 1e6 for k, v in times.items()}
        row = {"batch": b, "us_per_env_slot": us, "threefry_share": 1.0 - us["no_threefry"] / us["real"]}
        if "chunked" in fns:
            row["chunk"] = c
            row["chunked_bit_identical"] = bool((np.asarray(fns["chunked"](keys)) == np.asarray(fns["real"](keys))).all())
        rows.append(row)
        print(f"B={b}: us per env-slot real {us['real']:.3f}, without threefry {us['no_threefry']:.3f}, draws alone "
              f"{us['draws_only']:.3f}; threefry share {row['threefry_share']:.0%}"
              + (f"; {b // c} chunks of {c}: {us['chunked']:.3f} (bit-identical: {row['chunked_bit_identical']})"
                 if "chunked" in fns else ""), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))  # bad input: one line, exit 2
