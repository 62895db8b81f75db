"""Online-training speed: agent-slots per second of GRLE (or another policy) at 1, 64 and 1024
parallel runs, the whole loop (sample, act, quantise, score K candidates, execute, store, learn
every ``train_every`` slots) compiled as one scan and vmapped over runs.

Brax's recipe: a first call that compiles (timed apart, not counted), ``block_until_ready``,
several repetitions of the same chunk, the median reported with the device kind, batch size and
compile time; and a reference measured in the same process: the same program for ONE run, so
the table shows what batching buys (``x lone``: agent-slots/s relative to the lone run).

Each repetition plays ``--slots`` slots (a multiple of train_every, so every repetition holds the
same number of training steps), continuing from where the previous one stopped.

    python -m benchmarks.train_speed                      # GRLE, 1 / 64 / 1024 runs, paper setting
    python -m benchmarks.train_speed --runs 1 8 --slots 20 --reps 3 --json out.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from grle_jax import cli


def measure(policy: str, runs: int, slots: int, reps: int, devices: int, servers: int, shard: bool | None,
            critic_rounds: int | None = None, variant: str | None = None) -> dict:
    import jax

    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from train.sweep import Executor, build_runs

    cfg = Config(devices=devices, servers=servers)
    rs = build_runs(cfg, AgentConfig(policy=policy, critic_rounds=critic_rounds, variant=variant), seeds=runs, seed=0)
    ex = Executor(rs, shard=shard)
    t0 = time.perf_counter()
    state = jax.block_until_ready(ex.init())
    state, rec = ex.run(state, 0, slots)
    jax.block_until_ready(rec)
    compile_s = time.perf_counter() - t0  # init + first chunk: compiles, then runs once
    times = []
    t = slots
    for _ in range(reps):
        t1 = time.perf_counter()
        state, rec = ex.run(state, t, slots)
        jax.block_until_ready(rec)
        times.append(time.perf_counter() - t1)
        t += slots
    med = statistics.median(times)
    return {
        "policy": policy, "runs": runs, "slots_per_rep": slots, "reps": reps, "median_s": med,
        "min_s": min(times), "first_call_s": compile_s, "agent_slots_per_s": runs * slots / med,
        "slots_per_s_per_run": slots / med, "devices_used": ex.n_dev if ex.shard else 1,
    }


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="grle", choices=["grle", "grl", "droo", "drooe", "random", "greedy"])
    p.add_argument("--runs", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--slots", type=int, default=20, help="slots per repetition (a multiple of train_every = 10)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--devices", type=int, default=14, help="N")
    p.add_argument("--servers", type=int, default=2, help="M")
    p.add_argument("--critic-rounds", type=int, default=None, help="critic rounds per slot (default: the variant's)")
    p.add_argument("--variant", default=None, choices=["ours", "paper"],
                   help="the learner's ingredients (default: ours for grle/grl, paper for droo/drooe)")
    p.add_argument("--no-shard", action="store_true", help="one device even when several are visible")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)

    import jax

    from train.outputs import device_kind

    dev = device_kind()
    print(f"# {args.policy.upper()} online training, N={args.devices} M={args.servers}, device {dev} "
          f"x{jax.device_count()}, jax {jax.__version__}")
    print(f"# {args.slots} slots per repetition, median of {args.reps} (compile excluded)")
    print(f"{'runs':>6} {'agent-slots/s':>14} {'slots/s/run':>12} {'x lone':>7} {'median s':>9} {'first call s':>13}")
    rows = []
    lone = None
    for r in args.runs:
        res = measure(args.policy, r, args.slots, args.reps, args.devices, args.servers,
                      False if args.no_shard else None, args.critic_rounds, args.variant)
        if r == 1:
            lone = res["agent_slots_per_s"]
        res["x_lone"] = res["agent_slots_per_s"] / lone if lone else None
        rows.append(res)
        x = f"{res['x_lone']:.1f}" if res["x_lone"] else "-"
        print(f"{r:>6} {res['agent_slots_per_s']:>14,.0f} {res['slots_per_s_per_run']:>12,.1f} {x:>7} "
              f"{res['median_s']:>9.3f} {res['first_call_s']:>13.1f}", flush=True)
        if args.json:  # after every row: a run count that fails (out of memory) loses nothing measured
            with open(args.json, "w") as f:
                json.dump({"device": dev, "device_count": jax.device_count(), "jax": jax.__version__,
                           "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))  # bad input: one line, exit 2
