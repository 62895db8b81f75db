"""Where one group's slot goes: learning, the greedy candidate, the rest of acting.

A worker of ``train.procs`` plays a group of runs side by side on one core, learning in chunks of
two runs. This times that group's program four ways, one after the other from the same seeds: as
trained; without the greedy candidate (``greedy_candidate=False``); without learning
(``train_every`` past the run's end, so no Adam step is taken); and without both. The differences
are the learning steps' and the greedy decode's shares of a slot (at N = 14 and 32 runs the three
parts summed to within 2 % of the slot; at small N they overlap more). Each variant compiles first
(not counted; "without learning" reuses the trained program, ``train_every`` is a value), then
``--reps`` calls of ``--slots`` slots, the median reported, and whether the parameters moved
(``learned``: true as trained, false without learning).

    taskset -c 0 python -m benchmarks.group_split               # GRLE, 32 runs, as a worker runs them
    python -m benchmarks.group_split --runs 8 --slots 20 --reps 3 --json out.json
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from grle_jax import cli

VARIANTS = (("as trained", {}), ("no greedy candidate", {"greedy_candidate": False}),
            ("no learning", {"train_every": 10 ** 9}),
            ("neither", {"greedy_candidate": False, "train_every": 10 ** 9}))


def measure(policy: str, runs: int, slots: int, reps: int, devices: int, scenario: str, chunk: int,
            extra: dict) -> dict:
    import jax
    import numpy as np

    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from train.sweep import Executor, build_runs

    cfg = Config.for_scenario(scenario, devices=devices)
    rs = build_runs(cfg, AgentConfig(policy=policy, **extra), seeds=runs, seed=0)
    ex = Executor(rs, shard=False, group_runs=runs)
    run = rs.trainer.batched("run", rs.axes, False, chunk)
    state = jax.block_until_ready(ex.init())
    before = [np.array(x) for x in jax.tree_util.tree_leaves(state.variables)]  # the state is donated
    t0 = time.perf_counter()
    state, rec = run(state, rs.hyper, 0, slots)
    jax.block_until_ready(rec)
    first = time.perf_counter() - t0
    times, t = [], slots
    for _ in range(reps):
        t1 = time.perf_counter()
        state, rec = run(state, rs.hyper, t, slots)
        jax.block_until_ready(rec)
        times.append(time.perf_counter() - t1)
        t += slots
    med = statistics.median(times)
    learned = any(not np.array_equal(b, np.asarray(a)) for b, a in zip(before, jax.tree_util.tree_leaves(state.variables)))
    return {"ms_per_slot": med / slots * 1e3, "agent_slots_per_s": runs * slots / med, "first_call_s": first,
            "learned": learned}


def main(argv=None) -> int:
    """The CLI; bad input: one line naming the field, exit 2 (``cli.run``)."""
    return cli.run(lambda: _main(argv))


def _main(argv) -> int:
    from grle_jax.config import SCENARIOS, check_int
    from grle_jax.errors import ConfigError

    p = cli.Parser(prog="python -m benchmarks.group_split", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="grle", choices=("grle", "grl"))
    p.add_argument("--runs", type=int, default=32, help="runs in the group (default: 32, a worker's at 64 runs)")
    p.add_argument("--slots", type=int, default=50, help="slots per call, a multiple of train_every = 10 (default: 50)")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--devices", type=int, default=14, help="N (default: 14)")
    p.add_argument("--scenario", default="csi", help="the scenario's defaults (default: csi)")
    p.add_argument("--chunk", type=int, default=2, help="runs per learning step (default: 2, the workers')")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    a = p.parse_args(argv)
    for name, lo in (("runs", 1), ("slots", 10), ("reps", 1), ("devices", 1), ("chunk", 1)):
        check_int(name, getattr(a, name), lo)
    if a.slots % 10:
        raise ConfigError("slots", f"must be a multiple of train_every = 10, got {a.slots}")
    if a.scenario not in SCENARIOS:
        raise ConfigError("scenario", f"unknown scenario {a.scenario!r} (choose from {', '.join(SCENARIOS)})")
    if a.json is not None:
        from train.rundir import check_out_file

        check_out_file("json", a.json, overwrite=True)
    os.environ.setdefault("GRLE_JAX_GROUP_PROCS", "0")  # this process plays the group itself
    rows = {}
    for name, extra in VARIANTS:
        rows[name] = measure(a.policy, a.runs, a.slots, a.reps, a.devices, a.scenario, a.chunk, extra)
        r = rows[name]
        print(f"{name:20s} {r['ms_per_slot']:8.3f} ms a slot  {r['agent_slots_per_s']:9,.0f} agent-slots/s"
              f"  (first call {r['first_call_s']:.1f} s)", flush=True)
    full = rows["as trained"]["ms_per_slot"]
    split = {"learning": full - rows["no learning"]["ms_per_slot"],
             "greedy candidate": full - rows["no greedy candidate"]["ms_per_slot"],
             "rest of acting": rows["neither"]["ms_per_slot"]}
    print(f"{a.policy.upper()}, {a.runs} runs, {a.scenario}, N = {a.devices}: a slot {full:.2f} ms = "
          + ", ".join(f"{k} {v:.2f} ms ({v / full:.0%})" for k, v in split.items()))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "variants": rows, "split_ms": split}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
