"""How long the full paper grid (`python -m train.experiments paper`) takes on this machine,
estimated from measured costs instead of run (it is hours on a CPU).

For every sweep policy and a few N, one cell's program is built exactly as `train.experiments`
builds it (`build_runs` over the base scenario, its S seeds side by side, the policy's default
variant), compiled (timed apart: init plus the first chunk), then run for ``--reps`` repetitions
of ``--slots`` slots each; the median gives milliseconds per run and slot. ``--slots`` defaults to
the grid's own chunk (`train.experiments --chunk`, 1,000 slots per call): what a call costs beyond
its slots (dispatch, records to the host, fresh pages for the call's buffers) then weighs as it
does in the grid. `train.experiments` runs
one cell (its 5 seeds) per call of a program, and ``--workers`` cells at once, each in its own
thread (default one per core); so does this estimate (``--workers W``: W cells of the program,
different seeds, in W threads; the wall time over all their runs). ``--group G`` measures G cells'
runs side by side in one call instead (G x 5 runs: the cells of one (policy, N, rule) differ only
in T, the scenario and the overdue rule, which are dynamic values, so they could share one call).

The full grid: N = 2, 4, ..., 30 (costs interpolated linearly in N between the measured points,
the end segments extended), T = 20 and 30 ms, both overdue rules, four sweeps, 5 seeds, 10,000
slots: 16 cells x 5 seeds = 80 runs per (policy, N), in programs of ``group`` cells; plus one
compile per (policy, N) (both overdue rules share it) and the convergence experiment (GRLE and
DROOE at N = 14 with the exact oracle every slot, 2 rules x 5 seeds x 10,000 slots, one compile
each), measured the same way with ``--convergence``.

    python -m benchmarks.grid_estimate                          # N = 4, 10, 20, 30, every policy
    python -m benchmarks.grid_estimate --workers 1              # one cell at a time
    python -m benchmarks.grid_estimate --n-values 10 --policies grle --slots 50 --reps 2
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from grle_jax import cli

FULL_N = tuple(range(2, 31, 2))
FULL = {"t_values": 2, "rules": 2, "sweeps": 4, "seeds": 5, "slots": 10_000}


def measure(policy: str, n: int, runs: int, slots: int, reps: int, normalise: bool = False,
            workers: int = 1) -> dict:
    """One cell's program: compiled (timed apart), then ``reps`` repetitions of ``slots`` slots of
    ``workers`` cells at once, each in its own thread as `train.experiments` runs them (cells of one
    program, different seeds); ms per run-slot is the repetition's wall time over all their runs."""
    import threading

    import jax

    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from train.sweep import Executor, build_runs

    cfg = Config.for_scenario("base", devices=n, slot_ms=20.0, overdue="abort")
    cells, firsts = [], []
    for w in range(workers):
        t0 = time.perf_counter()
        rs = build_runs(cfg, AgentConfig(policy=policy), seeds=runs, seed=w * runs, normalise=normalise)
        ex = Executor(rs, shard=False)
        state = ex.init()
        state, rec = ex.run(state, 0, slots)
        jax.block_until_ready(rec)
        firsts.append(time.perf_counter() - t0)  # the first cell's compiles, the others' do not
        cells.append([ex, state, slots])

    def advance(cell):
        ex, state, t = cell
        state, rec = ex.run(state, t, slots)
        jax.block_until_ready(rec)
        cell[1], cell[2] = state, t + slots

    times = []
    for _ in range(reps):
        threads = [threading.Thread(target=advance, args=(c,)) for c in cells]
        t1 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        times.append(time.perf_counter() - t1)
    med = statistics.median(times)
    ms = 1e3 * med / (workers * runs * slots)
    return {"policy": policy, "n": n, "runs": runs, "workers": workers, "slots_per_rep": slots, "reps": reps,
            "median_s": med, "ms_per_run_slot": ms, "first_call_s": firsts[0],
            "compile_s": max(firsts[0] - (firsts[1] if workers > 1 else med), 0.0)}


def interpolate(ns: list[int], values: list[float], at) -> np.ndarray:
    """Linear in N between the measured points, the end segments extended (never below the
    smallest measured value's 1/4: a line through two small costs can cross zero)."""
    ns, values = np.asarray(ns, float), np.asarray(values, float)
    at = np.asarray(at, float)
    if len(ns) == 1:
        return np.full(at.shape, values[0])
    out = np.interp(at, ns, values)
    lo, hi = at < ns[0], at > ns[-1]
    out[lo] = values[0] + (at[lo] - ns[0]) * (values[1] - values[0]) / (ns[1] - ns[0])
    out[hi] = values[-1] + (at[hi] - ns[-1]) * (values[-1] - values[-2]) / (ns[-1] - ns[-2])
    return np.maximum(out, values.min() / 4)


def estimate(rows: list[dict], conv: list[dict], group: int) -> dict:
    """Seconds of the full grid per policy: running (cells x seeds x slots x cost per run-slot)
    and compiling (one program per N: the overdue rule is a dynamic value), plus convergence."""
    cells_per_n = FULL["t_values"] * FULL["rules"] * FULL["sweeps"]
    out = {}
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["n"])
        ns = [r["n"] for r in mine]
        ms = interpolate(ns, [r["ms_per_run_slot"] for r in mine], FULL_N)
        comp = interpolate(ns, [r["compile_s"] for r in mine], FULL_N)
        run_s = float(np.sum(ms) * 1e-3 * cells_per_n * FULL["seeds"] * FULL["slots"])
        compile_s = float(np.sum(comp))
        out[policy] = {"run_s": run_s, "compile_s": compile_s}
    for r in conv:
        out[f"convergence-{r['policy']}"] = {
            "run_s": r["ms_per_run_slot"] * 1e-3 * FULL["rules"] * FULL["seeds"] * FULL["slots"],
            "compile_s": r["compile_s"]}
    total = sum(v["run_s"] + v["compile_s"] for v in out.values())
    return {"per_part": out, "total_s": total, "group": group, "full_grid": {**FULL, "n_values": list(FULL_N)}}


def main(argv=None) -> int:
    """The benchmark; bad input prints one line naming the field and returns 2, before measuring."""
    return cli.run(lambda: _main(argv))


def _main(argv) -> int:
    p = cli.Parser(prog="python -m benchmarks.grid_estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("--n-values", default="4,10,20,30", help="comma-separated N measured")
    p.add_argument("--policies", default="grle,grl,droo,drooe,greedy,random", help="comma-separated")
    p.add_argument("--group", type=int, default=1,
                   help="cells side by side per program call (train.experiments: 1, its seeds)")
    p.add_argument("--workers", type=int, default=None,
                   help="cells running at once, each in its own thread (train.experiments --workers; default: "
                        "one per CPU core)")
    p.add_argument("--slots", type=int, default=cli.default("chunk"),
                   help="slots per repetition and call, a multiple of train_every = 10 (default: the grid's chunk, "
                        "train.experiments --chunk)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--convergence", action="store_true", help="also measure the convergence experiment's cells")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results here")
    args = p.parse_args(argv)
    from grle_jax.errors import ConfigError
    from train.experiments import SWEEP_POLICIES

    from grle_jax.config import check_int

    n_values = sorted(cli.comma_list("n_values", args.n_values, lo=2))
    policies = [v.strip() for v in args.policies.split(",") if v.strip()]
    if not policies:
        raise ConfigError("policies", "is empty")
    for pol in policies:
        if pol not in SWEEP_POLICIES:
            raise ConfigError("policies", f"unknown policy {pol!r} (one of {', '.join(SWEEP_POLICIES)})")
    group = args.group
    cells_per_n = FULL["t_values"] * FULL["rules"] * FULL["sweeps"]
    if not 1 <= group or cells_per_n % group:
        raise ConfigError("group", f"must divide {cells_per_n} (the cells of one N), got {group}")
    check_int("reps", args.reps, 1)
    import os

    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    check_int("workers", workers, 1)
    check_int("slots", args.slots, 10)
    if args.slots % 10:
        raise ConfigError("slots", f"must be a multiple of train_every = 10, got {args.slots}")
    if args.json is not None:
        from train.rundir import check_out_file

        check_out_file("json", args.json, overwrite=True)

    import jax

    from train.outputs import device_kind

    runs = FULL["seeds"] * group
    print(f"# full paper grid estimate, device {device_kind()}, jax {jax.__version__}; "
          f"{group} cell(s) per program = {runs} runs side by side; {workers} cell(s) at once in threads; "
          f"{args.slots} slots x {args.reps} reps")
    print(f"{'policy':>8} {'N':>4} {'ms/run-slot':>12} {'compile s':>10}")
    rows, conv = [], []

    def dump():
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": device_kind(), "jax": jax.__version__, "rows": rows, "convergence": conv,
                           "estimate": estimate(rows, conv, group) if rows else None}, f, indent=2)

    for pol in policies:
        for n in n_values:
            r = measure(pol, n, runs, args.slots, args.reps, workers=workers)
            rows.append(r)
            print(f"{pol:>8} {n:>4} {r['ms_per_run_slot']:>12.3f} {r['compile_s']:>10.1f}", flush=True)
            dump()
    if args.convergence:
        from train.experiments import CONVERGENCE_N, CONVERGENCE_POLICIES

        for pol in CONVERGENCE_POLICIES:
            r = measure(pol, CONVERGENCE_N, FULL["seeds"], args.slots, args.reps, normalise=True, workers=workers)
            conv.append(r)
            print(f"{'conv-' + pol:>8} {CONVERGENCE_N:>4} {r['ms_per_run_slot']:>12.3f} {r['compile_s']:>10.1f}",
                  flush=True)
            dump()
    est = estimate(rows, conv, group)
    print("\n# the full grid (N = 2..30, 2 T x 2 rules x 4 sweeps x 5 seeds x 10,000 slots), hours:")
    for part, v in est["per_part"].items():
        print(f"  {part:>18}: run {v['run_s'] / 3600:6.2f} h  compile {v['compile_s'] / 3600:5.2f} h")
    print(f"  {'total':>18}: {est['total_s'] / 3600:.2f} h ({workers} cell(s) at once, compiles one after another; "
          f"the measured N: {n_values})")
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
