"""Does chunking the batch pay, and does it keep the numbers (issue 14, part 2)?

    python -m benchmarks.chunking [--batches 1024,8192] [--chunks 64,128,256] [--k 64] [--reps 5]
    python -m benchmarks.chunking --training droo --runs 1024 --chunks 128 [--slots 50]

Scoring (default): K candidates of B observations (docs/model.md's reward on observed values,
``grle_jax.dynamics.score``), ``--steps`` scoring calls in one compiled scan, timed as one vmap over
the whole batch and as a ``lax.map`` over B / c chunks of c; candidate evaluations per second
(median of ``--reps``, interleaved) and whether the chunked scores equal the whole batch's bit for
bit (else the largest relative difference). ``--training P``: P's online training for ``--runs``
runs, one call of all runs against R / c calls of c runs (the same compiled program per chunk);
agent-slots per second and whether the records are equal.
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from grle_jax import cli
from grle_jax.errors import ConfigError


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.nanmax(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) if a.size else 0.0


def scoring(batches, chunks, K: int, steps: int, reps: int) -> None:
    from types import SimpleNamespace

    from benchmarks.throughput import make_cand_data  # benchmarks.throughput's data: no torch needed
    from grle_jax.config import Config
    from grle_jax.dynamics import score
    from grle_jax.types import Observation

    cfg = Config.for_scenario("csi", devices=14, servers=2)
    static, params = cfg.static(), cfg.params()
    p = SimpleNamespace(n=static.n, m=static.m, e=static.e, rate_mbps=cfg.rate_mbps, size_kb=cfg.size_kb)
    O = static.options

    def make(B, c):
        def scores(ob, cc):  # (B', ...) observations, (B', K, N) decisions -> (B',) summed over K
            return jax.vmap(lambda o, x: score(static, params, o, x))(ob, cc).sum(-1)

        def f(obs, cands):
            def body(acc, xs):
                ob, i = xs
                cc = (cands + i) % O  # a different decision every step
                if c is None:
                    r = scores(ob, cc)
                else:
                    split = lambda x: x.reshape((B // c, c) + x.shape[1:])  # noqa: E731
                    r = jax.lax.map(lambda a: scores(*a), (jax.tree.map(split, ob), split(cc))).reshape(B)
                return acc + r, None

            return jax.lax.scan(body, jnp.zeros((B,)), (obs, jnp.arange(steps)))[0]

        return jax.jit(f)

    print(f"# scoring K = {K} candidates, {steps} steps per call, csi, N = 14; candidate evals/s, median of {reps}")
    for B in batches:
        data = make_cand_data(p, B, K, steps)
        obs = Observation(**{k: jnp.asarray(v) for k, v in data["obs"].items()})
        cands = jnp.asarray(data["cands"], jnp.int32)
        cs = [None] + [c for c in chunks if c < B and B % c == 0]
        fns = {c: make(B, c) for c in cs}
        out = {c: np.asarray(jax.block_until_ready(fn(obs, cands))) for c, fn in fns.items()}
        times = {c: [] for c in cs}
        for _ in range(reps):
            for c, fn in fns.items():
                t = time.perf_counter()
                jax.block_until_ready(fn(obs, cands))
                times[c].append(time.perf_counter() - t)
        for c in cs:
            rate = B * K * steps / statistics.median(times[c])
            same = np.array_equal(out[c], out[None])
            tail = "" if c is None else ("  bit-identical" if same else f"  differs, max rel {_rel(out[c], out[None]):.1e}")
            print(f"B={B:<6} chunk={'whole' if c is None else c:<6} {rate:>12,.0f}{tail}", flush=True)


def training(policy: str, runs: int, chunks, slots: int, reps: int) -> None:
    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from train.sweep import build_runs

    rs = build_runs(Config(devices=14, servers=2), AgentConfig(policy=policy), seeds=runs, seed=0)
    init, run = rs.trainer.batched("init", rs.axes), rs.trainer.batched("run", rs.axes)
    st0 = jax.block_until_ready(init(rs.keys, rs.hyper))

    def go(c, st, t0):
        if c >= runs:
            return run(st, rs.hyper, t0, slots)
        outs = [run(jax.tree.map(lambda x: x[i:i + c], st), rs.hyper, t0, slots) for i in range(0, runs, c)]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)

    cs = [runs] + [c for c in chunks if c < runs and runs % c == 0]
    # a copy of the initial state for each chunk size: a call donates (consumes) its state
    state, rec, times = {c: jax.tree.map(jnp.copy, st0) for c in cs}, {}, {c: [] for c in cs}
    for rep in range(reps + 1):  # the first call compiles and is not timed
        for c in cs:
            t = time.perf_counter()
            state[c], rec[c] = jax.block_until_ready(go(c, state[c], rep * slots))
            if rep:
                times[c].append(time.perf_counter() - t)
    print(f"# {policy} online training, {runs} runs, {slots} slots per call; agent-slots/s, median of {reps}")
    ref = rec[runs]
    for c in cs:
        diff = {k: _rel(rec[c][k], ref[k]) for k in ref if not np.array_equal(rec[c][k], ref[k], equal_nan=True)}
        tail = "" if c == runs else ("  bit-identical" if not diff else "  differs: " + ", ".join(
            f"{k} {v:.1e}" for k, v in sorted(diff.items())))
        print(f"chunk={'whole' if c == runs else c:<6} {runs * slots / statistics.median(times[c]):>10,.0f}{tail}", flush=True)


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.chunking", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="1024,8192", help="scoring: comma list of B")
    p.add_argument("--chunks", default="64,128,256", help="comma list of chunk sizes")
    p.add_argument("--k", type=int, default=64, help="scoring: candidates per observation")
    p.add_argument("--steps", type=int, default=4, help="scoring: scoring calls per timed call")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--training", default=None, choices=("droo", "drooe", "grle", "grl"),
                   help="time this policy's training instead of scoring")
    p.add_argument("--runs", type=int, default=1024, help="training: runs side by side")
    p.add_argument("--slots", type=int, default=50, help="training: slots per call (a multiple of 10)")
    a = p.parse_args(argv)
    chunks = cli.comma_list("chunks", a.chunks)
    for name in ("k", "steps", "reps", "runs", "slots"):
        if getattr(a, name) < 1:
            raise ConfigError(name, f"must be at least 1, got {getattr(a, name)}")
    if a.training:
        training(a.training, a.runs, chunks, a.slots, a.reps)
    else:
        scoring(cli.comma_list("batches", a.batches), chunks, a.k, a.steps, a.reps)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
