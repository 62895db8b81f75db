"""Policy quality: GRLE, GRL, DROO and DROOE learning online at the paper's setting (N = 14, M = 2,
E = 5, T = 20 ms, D = 30 ms), base and csi scenarios, several seeds; per policy and scenario the
final normalised reward (moving average over 50 slots, against the exact per-slot oracle), SSP,
average accuracy and throughput, as mean and 95 % interval over the seeds.

One compiled program per policy: the scenarios are a sweep (``scenario`` is a dynamic field) and
the seeds are vmapped, so every (scenario, seed) run of a policy trains side by side.

"Final" means the last 10 % of the slots (at least 50): the normalised reward is the mean of the
per-slot ratio there (and, as the paper plots it, the 50-slot moving average at the last slot);
SSP, accuracy and throughput are ratios of sums over those slots.

    python -m benchmarks.policy_quality                            # the full study (long on a CPU)
    python -m benchmarks.policy_quality --slots 2000 --seeds 3 --out results/quality-small
"""

from __future__ import annotations

import os
import sys
import time

from grle_jax import cli
from grle_jax.errors import ConfigError

POLICIES = ("grle", "grl", "droo", "drooe")
BASELINES = ("random", "greedy")
DEFAULTS = {"seeds": 5, "chunk": 500}  # this benchmark's own defaults of shared flags (grle_jax.cli)
LEARNER_FLAGS = ("lr", "k") + cli.VARIANT_FLAGS
METRICS = ("final_normalised_reward", "normalised_reward_ma50_final", "final_ssp", "final_avg_accuracy",
           "final_throughput_per_s", "normalised_reward_mean", "ssp", "avg_accuracy", "throughput_per_s")


def run_policy(policy: str, scenarios: list[str], slots: int, seeds: int, chunk: int, quiet: bool,
               agent_overrides: dict, full_oracle: bool = False) -> tuple[dict, list[dict], float]:
    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from grle_jax.metrics import final_window
    from train.progress import Progress
    from train.sweep import Executor, build_runs, run_batched

    agent = AgentConfig(policy=policy, **(agent_overrides if policy in POLICIES else {}))
    final = final_window(slots)
    rs = build_runs(Config(), agent, seeds=seeds, seed=0, grid={"scenario": scenarios}, normalise=True,
                    normalise_from=0 if full_oracle else slots - final)
    ex = Executor(rs)
    bar = None if quiet else Progress(slots, desc=f"{policy} x{rs.runs}")
    t0 = time.perf_counter()
    _, recs = run_batched(ex, slots, chunk, on_chunk=(lambda s, t, p, tr, n: bar.update(n)) if bar else None)
    if bar:
        bar.close()
    return recs, rs.table, time.perf_counter() - t0


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.policy_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", nargs="+", default=list(POLICIES) + list(BASELINES))
    p.add_argument("--scenarios", nargs="+", default=["base", "capacity", "csi"])
    cli.add(p, "slots", "seeds", "chunk", *LEARNER_FLAGS, **DEFAULTS)
    p.add_argument("--out", default="results/policy_quality", metavar="DIR")
    p.add_argument("--full-oracle", action="store_true",
                   help="run the oracle every slot (default: in the final window only, all the metrics need)")
    cli.add(p, "quiet")
    box = {}

    def parse():  # every bad value: one line naming the field, exit 2, before anything runs or is written
        args = box["args"] = p.parse_args(argv)
        for name in ("slots", "seeds", "chunk"):
            setattr(args, name, cli.value(args, name, **DEFAULTS))
        check_args(args)

    if cli.run(parse):
        return 2
    args = box["args"]

    import numpy as np

    from train.grle import per_run_metrics, summarise_groups
    from train.outputs import device_kind, write_json

    overrides = learner_overrides(args)
    os.makedirs(args.out, exist_ok=True)
    table = []
    for policy in args.policies:
        recs, runs, wall = run_policy(policy, args.scenarios, args.slots, args.seeds, min(args.chunk, args.slots),
                                      args.quiet, overrides, args.full_oracle)
        cols, summ = per_run_metrics(recs, 20.0, 50, True)
        summ["worst_window_500"] = worst_window(cols["normalised_reward"])
        np.savez_compressed(os.path.join(args.out, f"{policy}_records.npz"), **recs)
        for g in summarise_groups(summ, runs):
            row = {"policy": policy, "scenario": g["point"]["scenario"], "seeds": len(g["runs"]), "wall_s": wall,
                   **{k: {"mean": g["metrics"][k]["mean"], "ci95": g["metrics"][k]["ci95"]} for k in METRICS},
                   "per_seed": {k: [float(summ[k][r]) for r in g["runs"]]
                                for k in ("final_normalised_reward", "worst_window_500", "final_avg_accuracy")}}
            table.append(row)
            print(f"{policy:>6} {row['scenario']:>5}: normalised reward {_fmt(row, 'final_normalised_reward')} "
                  f"(MA50 at the end {_fmt(row, 'normalised_reward_ma50_final')})  SSP {_fmt(row, 'final_ssp')}  "
                  f"accuracy {_fmt(row, 'final_avg_accuracy')}  throughput {_fmt(row, 'final_throughput_per_s', 1)}/s"
                  f"  [{wall:.0f} s]", flush=True)
            print(f"{'':>13} per seed: normalised reward "
                  + " ".join(f"{x:.3f}" for x in row["per_seed"]["final_normalised_reward"])
                  + "; worst 500-slot window after slot 1,000 "
                  + " ".join(f"{x:.3f}" for x in row["per_seed"]["worst_window_500"]), flush=True)
    meta = {"slots": args.slots, "seeds": args.seeds, "scenarios": args.scenarios, "agent": overrides,
            "device": device_kind(), "setting": "N=14 M=2 E=5 T=20ms D=30ms overdue=abort"
            + "".join(f" {k}={v}" for k, v in overrides.items())}
    write_json(os.path.join(args.out, "policy_quality.json"), {"meta": meta, "rows": table})
    with open(os.path.join(args.out, "policy_quality.md"), "w") as f:
        f.write(markdown(table, meta))
    print(f"results in {args.out}/policy_quality.json and .md")
    return 0


def learner_overrides(args) -> dict:
    """The learning flags given on the command line (the others: each policy's defaults)."""
    return cli.given(args, LEARNER_FLAGS)


def worst_window(norm, start: int = 1000, width: int = 500):
    """(R,) the lowest mean normalised reward over any ``width`` consecutive slots from slot
    ``start`` on (NaN where the oracle did not run there: use --full-oracle)."""
    import numpy as np

    x = np.asarray(norm, np.float64)[:, start:]
    if x.shape[1] < width or np.isnan(x).any():
        return np.full(x.shape[0], np.nan)
    c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
    return ((c[:, width:] - c[:, :-width]) / width).min(axis=1)


def check_args(args) -> None:
    from grle_jax.agent import ALL_POLICIES, AgentConfig
    from grle_jax.config import Config, check_int, check_scenario
    from train.rundir import check_out_dir

    for name in ("slots", "seeds", "chunk"):
        check_int(name, getattr(args, name), 1)
    if not args.out.strip():
        raise ConfigError("out", f"must be a path, got {args.out!r}")
    if os.path.isdir(os.path.dirname(os.path.abspath(args.out))):  # writable, before hours of runs (issue 15)
        check_out_dir("out", args.out, overwrite=True)
    for sc in args.scenarios:
        check_scenario(sc, "scenarios")
    overrides = learner_overrides(args)
    for policy in args.policies:
        if policy not in ALL_POLICIES:
            raise ConfigError("policies", f"unknown policy {policy!r} (choose from {', '.join(ALL_POLICIES)})")
        if policy in POLICIES:
            AgentConfig(policy=policy, **overrides).check(Config().static())


def _fmt(row, k, digits=3):
    m, h = row[k]["mean"], row[k]["ci95"]
    return f"{m:.{digits}f} +- {h:.{digits}f}"


def markdown(table: list[dict], meta: dict) -> str:
    lines = [f"{meta['setting']}, {meta['slots']} slots, {meta['seeds']} seeds, {meta['device']}; "
             "final = last 10 % of the slots; mean +- 95 % interval over seeds", "",
             "| policy | scenario | normalised reward | MA50 at the end | SSP | accuracy | throughput (tasks/s) |",
             "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['policy'].upper()} | {r['scenario']} | {_fmt(r, 'final_normalised_reward')} | "
                     f"{_fmt(r, 'normalised_reward_ma50_final')} | {_fmt(r, 'final_ssp')} | "
                     f"{_fmt(r, 'final_avg_accuracy')} | {_fmt(r, 'final_throughput_per_s', 1)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
