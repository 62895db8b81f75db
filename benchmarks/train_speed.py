"""Online-training speed: agent-slots per second of GRLE (or another policy) at 1, 64 and 1024
parallel runs, the whole loop (sample, act, quantise, score K candidates, execute, store, learn
every ``train_every`` slots) compiled as one scan and vmapped over runs.

Brax's recipe: a first call that compiles (timed apart, not counted), ``block_until_ready``,
several repetitions of the same chunk, the median reported with the device kind, batch size and
compile time; and a reference measured in the same process: the same program for ONE run, so
the table shows what batching buys (``x lone``: agent-slots/s relative to the lone run).

Each repetition plays ``--slots`` slots (a multiple of train_every, so every repetition holds the
same number of training steps), continuing from where the previous one stopped.

By default each run count is compiled and timed in its turn, one after another (a run count that
runs out of memory loses none of the rows before it). ``--in-turns`` compiles every run count first
and then times them call by call in turns, so that each meets the same moments of a shared, noisy
machine and ``x lone`` is a ratio within one sitting (all the programs are held at once).
``--gcn-hidden`` and ``--head-hidden`` set GRL/GRLE's network widths (``AgentConfig.gcn_hidden``,
``head_hidden``; the paper's 128,64 and 64 by default): how much batching buys depends on them
(docs/benchmarks.md, "What sets GRLE's gain from runs side by side").

    python -m benchmarks.train_speed                      # GRLE, 1 / 64 / 1024 runs, paper setting
    python -m benchmarks.train_speed --runs 1 8 --slots 20 --reps 3 --json out.json
    python -m benchmarks.train_speed --runs 1 64 --slots 100 --reps 7 --in-turns --gcn-hidden 64,32 --head-hidden 32
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from grle_jax import cli
from grle_jax.errors import ConfigError


def build(policy: str, runs: int, slots: int, devices: int, servers: int, shard: bool | None,
          critic_rounds: int | None = None, variant: str | None = None, gcn_hidden: tuple | None = None,
          head_hidden: int | None = None) -> dict:
    """The program for ``runs`` runs, compiled and run once (its first call, timed apart)."""
    import jax

    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from train.sweep import Executor, build_runs

    cfg = Config(devices=devices, servers=servers)
    widths = {k: v for k, v in (("gcn_hidden", gcn_hidden), ("head_hidden", head_hidden)) if v is not None}
    agent = AgentConfig(policy=policy, critic_rounds=critic_rounds, variant=variant, **widths)
    rs = build_runs(cfg, agent, seeds=runs, seed=0)
    ex = Executor(rs, shard=shard)
    t0 = time.perf_counter()
    state = jax.block_until_ready(ex.init())
    state, rec = ex.run(state, 0, slots)
    jax.block_until_ready(rec)
    compile_s = time.perf_counter() - t0  # init + first chunk: compiles, then runs once
    return {"policy": policy, "runs": runs, "slots": slots, "ex": ex, "state": state, "t": slots,
            "first_call_s": compile_s, "times": []}


def time_call(b: dict) -> None:
    """One more call of ``b``'s program (the next ``slots`` slots), its wall time appended."""
    import jax

    t1 = time.perf_counter()
    b["state"], rec = b["ex"].run(b["state"], b["t"], b["slots"])
    jax.block_until_ready(rec)
    b["times"].append(time.perf_counter() - t1)
    b["t"] += b["slots"]


def result(b: dict) -> dict:
    times, runs, slots = b["times"], b["runs"], b["slots"]
    med = statistics.median(times)
    ex = b["ex"]
    return {
        "policy": b["policy"], "runs": runs, "slots_per_rep": slots, "reps": len(times), "median_s": med,
        "min_s": min(times), "first_call_s": b["first_call_s"], "agent_slots_per_s": runs * slots / med,
        "slots_per_s_per_run": slots / med, "devices_used": ex.n_dev if ex.shard else 1,
    }


def main(argv=None) -> int:
    """The CLI; bad input: one line naming the field, exit 2 (``cli.run``)."""
    return cli.run(lambda: _main(argv))


def _main(argv) -> int:
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
    p.add_argument("--gcn-hidden", default=None, metavar="W1,W2",
                   help="GRL/GRLE: the graph convolutions' widths (default: the paper's 128,64)")
    p.add_argument("--head-hidden", type=int, default=None, metavar="W",
                   help="GRL/GRLE: the edge MLP's width (default: the paper's 64)")
    p.add_argument("--in-turns", action="store_true",
                   help="compile every run count first, then time them call by call in turns (ratios within one sitting)")
    p.add_argument("--no-shard", action="store_true", help="one device even when several are visible")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config, check_int

    for name in ("slots", "reps"):
        check_int(name, getattr(args, name), 1)
    Config(devices=args.devices, servers=args.servers)  # one line naming the field if bad
    for r in args.runs:
        check_int("runs", r, 1)
    if args.policy in ("grle", "grl", "droo", "drooe") and args.slots % 10:
        raise ConfigError("slots", f"must be a multiple of train_every = 10, got {args.slots}")
    if args.json is not None:
        from train.rundir import check_out_file

        check_out_file("json", args.json, overwrite=True)
    gcn_hidden = None
    if args.gcn_hidden is not None:
        cli.comma_list("gcn_hidden", args.gcn_hidden)  # every width an integer >= 1, else one line
        gcn_hidden = tuple(int(x) for x in args.gcn_hidden.split(",") if x.strip())  # 64,64: two layers
    if args.policy not in ("grle", "grl"):
        for name in ("gcn_hidden", "head_hidden"):
            if getattr(args, name) is not None:
                raise ConfigError(name, f"sets GRL/GRLE's network, not {args.policy}'s")
    widths = {k: v for k, v in (("gcn_hidden", gcn_hidden), ("head_hidden", args.head_hidden)) if v is not None}
    agent = AgentConfig(policy=args.policy, critic_rounds=args.critic_rounds, variant=args.variant, **widths)  # one line if bad
    runs = list(dict.fromkeys(args.runs))

    import jax

    from train.outputs import device_kind

    dev = device_kind()
    net = ""
    if args.policy in ("grle", "grl"):
        net = f", GCN {','.join(map(str, agent.gcn_hidden))}, head {agent.head_hidden}"
    print(f"# {args.policy.upper()} online training, N={args.devices} M={args.servers}{net}, device {dev} "
          f"x{jax.device_count()}, jax {jax.__version__}")
    order = "all run counts compiled first, then timed in turns, call by call" if args.in_turns else "one run count after another"
    print(f"# {args.slots} slots per repetition, median of {args.reps} (compile excluded); {order}")
    print(f"{'runs':>6} {'agent-slots/s':>14} {'slots/s/run':>12} {'x lone':>7} {'median s':>9} {'first call s':>13}")
    shard = False if args.no_shard else None
    spec = (args.slots, args.devices, args.servers, shard, args.critic_rounds, args.variant, gcn_hidden, args.head_hidden)
    rows = []
    lone = None

    def emit(res):
        nonlocal lone
        if res["runs"] == 1:
            lone = res["agent_slots_per_s"]
        res["x_lone"] = res["agent_slots_per_s"] / lone if lone else None
        res["in_turns"] = bool(args.in_turns)
        rows.append(res)
        x = f"{res['x_lone']:.1f}" if res["x_lone"] else "-"
        print(f"{res['runs']:>6} {res['agent_slots_per_s']:>14,.0f} {res['slots_per_s_per_run']:>12,.1f} {x:>7} "
              f"{res['median_s']:>9.3f} {res['first_call_s']:>13.1f}", flush=True)
        if args.json:  # after every row: a run count that fails (out of memory) loses nothing measured
            with open(args.json, "w") as f:
                json.dump({"device": dev, "device_count": jax.device_count(), "jax": jax.__version__,
                           "results": rows}, f, indent=2)

    if args.in_turns:
        built = [build(args.policy, r, *spec) for r in runs]
        for _ in range(args.reps):
            for b in built:
                time_call(b)
        for b in sorted(built, key=lambda b: b["runs"] != 1):  # the lone run first: x lone for every row
            emit(result(b))
    else:
        for r in runs:
            b = build(args.policy, r, *spec)
            for _ in range(args.reps):
                time_call(b)
            emit(result(b))
    return 0


if __name__ == "__main__":
    sys.exit(main())  # bad input: one line, exit 2
