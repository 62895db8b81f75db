"""The two ways `--compile` can build a run program: compile time, running speed, the work at
which they break even, and whether their numbers agree (train/compiling.py; issue 14, part 5).

    python -m benchmarks.compile_modes [--policies grle,grl,droo,drooe,greedy] [--n-values 10,30]
                                       [--runs 1,5] [--slots 1000] [--reps 4] [--json FILE]

For every (policy, N, runs) one `train.experiments`-style cell (base scenario, T = 20 ms, the
learners' defaults): the run program of `slots` slots compiled both ways in one process (XLA's
fusion emitters, "full"; the elemental emitter, "fast"), then called in turns `reps` times from
the same initial state (median after the first call of each). It prints the compile seconds, the
ms per run-slot, the device-slots (N x slots x runs) at which the slower code has spent the
compile time saved (`train.compiling.FAST_UP_TO` sits under the lowest), and whether both ways
gave the same records and final state bit for bit.
"""

from __future__ import annotations

import itertools
import json
import sys
import time

import jax
import numpy as np

from grle_jax import cli
from grle_jax.config import Config
from grle_jax.errors import ConfigError


def _same(a, b) -> bool:
    def raw(x):
        try:
            return np.asarray(x).tobytes()
        except TypeError:  # a typed PRNG key
            return np.asarray(jax.random.key_data(x)).tobytes()

    return all(raw(x) == raw(y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def measure(policy: str, n: int, runs: int, slots: int, reps: int) -> dict:
    from train.compiling import DEFAULT, FAST
    from train.experiments import Cell
    from train.sweep import Executor, build_runs

    cfg = Config.for_scenario("base", devices=n, slot_ms=20.0, overdue="abort")
    rs = build_runs(cfg, Cell("devices", "base", policy, n, 20.0, "abort").agent, seeds=runs, seed=0)
    ex = Executor(rs, shard=False, group_runs=0)
    state = ex.init()
    lowered = ex._run.lower(state, rs.hyper, 0, slots)
    compile_s, fns = [], []
    for opts in (DEFAULT, FAST):  # the default way named: XLA_FLAGS may have changed it
        t = time.perf_counter()
        fns.append(lowered.compile(compiler_options=dict(opts)))
        compile_s.append(time.perf_counter() - t)
    times, outs = [[], []], [None, None]
    for r in range(reps):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            fresh = jax.tree_util.tree_map(lambda x: x.copy(), state)  # the run program donates its state
            jax.block_until_ready(fresh)
            t = time.perf_counter()
            out = jax.block_until_ready(fns[i](fresh, rs.hyper, 0))
            times[i].append(time.perf_counter() - t)
            outs[i] = out
    ms = [float(np.median(x[1:] if len(x) > 1 else x)) / (slots * runs) * 1e3 for x in times]
    saved, extra = compile_s[0] - compile_s[1], ms[1] - ms[0]
    even = saved / (extra * 1e-3) * n if extra > 0 and saved > 0 else None
    return {"policy": policy, "N": n, "runs": runs, "compile_s": {"full": compile_s[0], "fast": compile_s[1]},
            "ms_per_run_slot": {"full": ms[0], "fast": ms[1]}, "even_at_device_slots": even,
            "same_numbers": _same(jax.device_get(outs[0]), jax.device_get(outs[1]))}


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.compile_modes", description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", default="grle,grl,droo,drooe,greedy")
    p.add_argument("--n-values", default="10,30")
    p.add_argument("--runs", default="1,5")
    p.add_argument("--slots", type=int, default=1000)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from grle_jax.agent import ALL_POLICIES
    from train.compiling import FAST_UP_TO, options

    policies = tuple(dict.fromkeys(x.strip() for x in args.policies.split(",") if x.strip()))
    choices = tuple(x for x in ALL_POLICIES if x != "oracle")
    if not policies:
        raise ConfigError("policies", "is empty")
    for pol in policies:
        if pol not in choices:
            raise ConfigError("policies", f"unknown policy {pol!r} (choose from {', '.join(choices)})")
    n_values = cli.comma_list("n_values", args.n_values, int, 1)
    runs = cli.comma_list("runs", args.runs, int, 1)
    for name in ("slots", "reps"):
        if getattr(args, name) < 1:
            raise ConfigError(name, f"must be at least 1, got {getattr(args, name)}")
    if options(True) is None:
        print("this jax has no fast way to compile on this backend (train.compiling): nothing to compare")
        return 0
    rows = []
    print(f"{'policy':>7} {'N':>3} {'runs':>4}  compile s full -> fast   ms/run-slot full -> fast   even at "
          "(device-slots)  same numbers", flush=True)
    for pol, n, r in itertools.product(policies, n_values, runs):
        row = measure(pol, n, r, args.slots, args.reps)
        rows.append(row)
        c, m, e = row["compile_s"], row["ms_per_run_slot"], row["even_at_device_slots"]
        print(f"{pol:>7} {n:>3} {r:>4}  {c['full']:8.2f} -> {c['fast']:5.2f}   {m['full']:10.3f} -> {m['fast']:6.3f}   "
              f"{'never' if e is None else f'{e:,.0f}':>20}  {row['same_numbers']}", flush=True)
    evens = [r["even_at_device_slots"] for r in rows if r["even_at_device_slots"] is not None]
    print(f"auto compiles fast up to {FAST_UP_TO:,} device-slots; lowest break-even here: "
          f"{min(evens):,.0f}" if evens else f"auto compiles fast up to {FAST_UP_TO:,} device-slots; no break-even here")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(jax.devices()[0].device_kind), "jax": jax.__version__, "fast_up_to": FAST_UP_TO,
                       "rows": rows}, f, indent=2)
    return 0 if all(r["same_numbers"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))  # bad input: one line, exit 2
