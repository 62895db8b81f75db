"""The paper's evaluation (section VI) as one command: ``python -m train.experiments <name>``.

Experiments (issue 5):
- ``convergence``: Fig. 5. GRLE and DROOE at N = 14 (base scenario, T = 20 ms): the reward's
  moving average beside greedy, random and the exact oracle's R* on the same draws, the normalised
  reward (eq. 17, moving average over 50 slots) when the exact oracle is available, and the
  training loss against the slot.
- ``devices``: Fig. 6. Average accuracy, SSP and throughput against N for T = 20 and T = 30 ms,
  the four learning policies plus greedy and random, base scenario.
- ``capacity``, ``inference``, ``csi``: the same sweep in each scenario (Figs. 7-9).
- ``paper``: all of the above, each in its own subfolder of ``--out``.

``python -m train.experiments claims DIR`` prints the claims table (the paper's ratios beside ours)
and the slot-length check from the summary.json files under DIR.

A *cell* is one (experiment, scenario, policy, N, T, overdue) point; its S seeds run side by side,
vmapped, in one compiled program (``train.sweep.build_runs`` / ``Executor``). Cells that differ
only in T or scenario reuse the same compiled program (those are dynamic values), so a sweep
compiles once per (policy, N, overdue). Every cell's rows are written, atomically, to
``DIR/<experiment>/cells/`` as soon as it finishes, and the experiment's CSV, JSON summary and
figures are rebuilt from the cell files; ``--resume`` skips every cell already there with the same
seeds and slots, so a long ``paper`` run that stops loses only the cell under way. Without
``--resume`` a folder holding cells is refused unless ``--overwrite`` (which deletes them).

Outputs per experiment (in ``DIR`` for one experiment, ``DIR/<experiment>`` for ``paper``):
``<experiment>.csv`` (one row per policy, scenario, T, N, seed, overdue with the metrics; for
``convergence`` one row per slot), ``summary.json`` (mean and 95 % interval over seeds per cell,
timings), and PNG figures, one per overdue rule.

Bad input prints one line ``error: <field>: <why>`` and exits 2, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from grle_jax import cli
from grle_jax.agent import ALL_POLICIES, LEARNING_POLICIES, AgentConfig
from grle_jax.config import OVERDUE_RULES, Config, check_int
from grle_jax.errors import ConfigError
from grle_jax.metrics import FINAL_WINDOW_TEXT, final_window  # "final" metrics: one definition, every command

from .compiling import check_mode, choose

SWEEPS = {"devices": "base", "capacity": "capacity", "inference": "inference", "csi": "csi"}
EXPERIMENTS = ("convergence",) + tuple(SWEEPS)
NAMES = EXPERIMENTS + ("paper",)
SWEEP_POLICIES = ("grle", "grl", "droo", "drooe", "greedy", "random")
CONVERGENCE_POLICIES = ("grle", "drooe")
CONVERGENCE_N = 14
CONVERGENCE_T = 20.0
N_VALUES = tuple(range(2, 31, 2))  # the paper sweeps N over 2..30
T_VALUES = (20.0, 30.0)
QUICK = {"n_values": (4, 10), "seeds": 2, "slots": 500}
DEFAULT_SEEDS = 5
DEFAULT_SLOTS = 10_000
WINDOW = 50  # moving-average window (slots) of the convergence curves

METRICS = ("ssp", "avg_accuracy", "throughput_per_s", "throughput_per_slot", "mean_reward")
SWEEP_COLUMNS = (["experiment", "scenario", "policy", "T_ms", "N", "seed", "overdue", "slots", "tasks"]
                 + ["final_slots"] + list(METRICS) + [f"final_{k}" for k in METRICS] + ["final_loss", "cell_wall_s"])
CONV_COLUMNS = ["experiment", "scenario", "policy", "T_ms", "N", "seed", "overdue", "slot", "reward",
                f"reward_ma{WINDOW}", f"normalised_reward_ma{WINDOW}", "loss",
                # references on the same draws (train/references.py): reward moving averages
                f"greedy_reward_ma{WINDOW}", f"random_reward_ma{WINDOW}", f"oracle_reward_ma{WINDOW}"]

INT_COLUMNS = ("N", "seed", "slots", "slot")

# --- the plan ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    experiment: str
    scenario: str
    policy: str
    n: int
    t_ms: float
    overdue: str
    rounds: int | None = None  # critic rounds of a learning policy (None: its variant's)
    variant: str | None = None  # of a learning policy (None: its default, ours for GRLE/GRL)

    @property
    def agent(self) -> AgentConfig:
        return AgentConfig(policy=self.policy, variant=self.variant, critic_rounds=self.rounds)

    @property
    def name(self) -> str:
        # a resume never mixes learners: our variant's cells end in -ours (cells written before the
        # variants existed ran the paper's learners and keep their names), explicit rounds in -rR
        tail = "-ours" if self.agent.resolved_variant == "ours" else ""
        tail += f"-r{self.rounds}" if self.rounds is not None and self.rounds > 1 else ""
        return f"{self.scenario}-{self.policy}-N{self.n}-T{self.t_ms:g}-{self.overdue}{tail}"


@dataclass
class Plan:
    experiments: tuple
    policies: tuple | None  # None: each experiment's own list
    n_values: tuple
    t_values: tuple
    seeds: int
    slots: int
    overdue: tuple
    out: str
    resume: bool
    chunk: int
    quiet: bool
    workers: int = 1  # threads running cells side by side (distinct programs compile side by side too)
    critic_rounds: int | None = None  # of the learning policies (grle_jax.critic); None: the variant's
    variant: str | None = None  # of the learning policies; None: each policy's default
    overwrite: bool = False  # delete the cells of an earlier run (else they are refused, or kept by resume)
    compile: str = "auto"  # how run programs are compiled (train.compiling): auto, fast or full

    def folder(self, exp: str) -> str:
        return os.path.join(self.out, exp) if len(self.experiments) > 1 else self.out

    def _rounds(self, policy: str) -> int | None:
        return self.critic_rounds if policy in LEARNING_POLICIES else None

    def _variant(self, policy: str) -> str | None:
        return self.variant if policy in LEARNING_POLICIES else None

    def cells(self, exp: str) -> list[Cell]:
        """Cells in run order: overdue rule outermost (all of ``abort`` first), then N, policy, T."""
        out = []
        if exp == "convergence":
            for od in self.overdue:
                for p in (self.policies or CONVERGENCE_POLICIES):
                    out.append(Cell(exp, "base", p, CONVERGENCE_N, CONVERGENCE_T, od, self._rounds(p), self._variant(p)))
            return out
        for od in self.overdue:
            for n in self.n_values:
                for p in (self.policies or SWEEP_POLICIES):
                    for t in self.t_values:
                        out.append(Cell(exp, SWEEPS[exp], p, n, t, od, self._rounds(p), self._variant(p)))
        return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m train.experiments", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help=f"one of {', '.join(NAMES)}; or `claims DIR`: the claims table of a results folder")
    p.add_argument("--quick", action="store_true",
                   help=f"small preset: N in {QUICK['n_values']}, {QUICK['seeds']} seeds, {QUICK['slots']} slots, "
                        "overdue abort (explicit flags override it)")
    cli.add(p, "seeds", "slots", seeds=DEFAULT_SEEDS, slots=DEFAULT_SLOTS)
    p.add_argument("--overdue", default=None, help="abort, keep or both (default both; abort with --quick)")
    p.add_argument("--n-values", default=None, help="comma-separated N values of the sweeps (default 2,4,...,30)")
    p.add_argument("--t-values", default=None, help="comma-separated slot lengths T in ms (default 20,30)")
    p.add_argument("--policies", default=None,
                   help="comma-separated policies, replacing every experiment's own list "
                        f"(sweeps: {','.join(SWEEP_POLICIES)}; convergence: {','.join(CONVERGENCE_POLICIES)})")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default results/<name>)")
    p.add_argument("--resume", action="store_true", help="keep finished cells in DIR and run only the others")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the cells of an earlier run in DIR and start again (without it, or --resume, "
                        "a folder holding cells is refused)")
    cli.add(p, "chunk", "quiet", "critic_rounds", "variant", "compile")
    p.add_argument("--workers", type=int, default=None,
                   help="threads running cells side by side, distinct programs compiling first (default: one "
                        "per CPU core)")
    return p


def plan_from_args(args) -> Plan:
    compile_mode = check_mode(cli.value(args, "compile"))
    if args.name not in NAMES:
        raise ConfigError("name", f"unknown experiment {args.name!r} (choose from {', '.join(NAMES)})")
    exps = EXPERIMENTS if args.name == "paper" else (args.name,)
    preset = QUICK if args.quick else {"seeds": DEFAULT_SEEDS, "slots": DEFAULT_SLOTS}
    seeds = cli.value(args, "seeds", seeds=preset["seeds"])
    slots = cli.value(args, "slots", slots=preset["slots"])
    chunk = cli.value(args, "chunk")
    check_int("seeds", seeds, 1)
    check_int("slots", slots, 1)
    check_int("chunk", chunk, 1)
    if args.critic_rounds is not None:
        check_int("critic_rounds", args.critic_rounds, 1)
    od = args.overdue if args.overdue is not None else ("abort" if args.quick else "both")
    if od == "both":
        overdue = OVERDUE_RULES
    elif od in OVERDUE_RULES:
        overdue = (od,)
    else:
        raise ConfigError("overdue", f"must be abort, keep or both, got {od!r}")
    if args.n_values is not None:
        n_values = cli.comma_list("n_values", args.n_values, int, 1)
    else:
        n_values = QUICK["n_values"] if args.quick else N_VALUES
    t_values = cli.comma_list("t_values", args.t_values, float) if args.t_values is not None else T_VALUES
    policies = None
    if args.policies is not None:
        policies = tuple(dict.fromkeys(x.strip() for x in args.policies.split(",") if x.strip()))
        if not policies:
            raise ConfigError("policies", "is empty")
        for p in policies:
            if p not in ALL_POLICIES:
                raise ConfigError("policies", f"unknown policy {p!r} (choose from {', '.join(ALL_POLICIES)})")
        if "oracle" in policies:
            _need_oracle("policies")
    if args.variant is not None:
        AgentConfig(policy="grle", variant=args.variant)  # one line naming the field if unknown
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError("workers", f"must be at least 1, got {workers}")
    out = args.out if args.out is not None else os.path.join("results", args.name)
    if not out.strip():
        raise ConfigError("out", f"must be a path, got {out!r}")
    from .outputs import make_output_root

    make_output_root(out)  # --out results/NAME in a fresh clone
    parent = os.path.dirname(os.path.abspath(out))
    if args.out is not None and not os.path.isdir(parent):  # the default results/ is ours to create
        raise ConfigError("out", f"folder does not exist: {parent}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError("out", f"exists and is not a folder: {out}")
    # every configuration must be valid before anything runs
    for n in (set(n_values) | {CONVERGENCE_N}):
        for t in t_values:
            cfg = Config(devices=n, slot_ms=t)
            for p in (policies or SWEEP_POLICIES):
                AgentConfig(policy=p).check(cfg.static())
    plan = Plan(experiments=exps, policies=policies, n_values=n_values, t_values=t_values, seeds=seeds,
                slots=slots, overdue=overdue, out=out, resume=bool(args.resume), chunk=chunk,
                quiet=bool(args.quiet), workers=workers, critic_rounds=args.critic_rounds, variant=args.variant,
                compile=compile_mode)
    check_out(plan, bool(args.overwrite))
    plan.overwrite = bool(args.overwrite)
    return plan


def check_out(plan: Plan, overwrite: bool) -> None:
    """Before any work (issue 15): every experiment folder can be created and written, and one that
    holds cells of an earlier run is refused unless --resume (keep them) or --overwrite (delete them)."""
    from .rundir import check_out_dir, probe_writable

    if overwrite and plan.resume:
        raise ConfigError("overwrite", "contradicts --resume (which keeps the finished cells)")

    def holds(folder):
        cells = os.path.join(folder, "cells")
        if os.path.isdir(cells) and os.listdir(cells):
            return "cells/"
        return "summary.json" if os.path.isfile(os.path.join(folder, "summary.json")) else None

    parent = os.path.dirname(os.path.abspath(plan.out))
    if os.path.isdir(parent):
        check_out_dir("out", plan.out, overwrite or plan.resume, holds=holds)
    else:  # the default results/ is created later: where it will be must be writable
        while not os.path.isdir(parent):
            parent = os.path.dirname(parent)
        probe_writable("out", parent)
    for exp in plan.experiments:
        folder = plan.folder(exp)
        if folder != plan.out and os.path.isdir(folder):
            check_out_dir("out", folder, overwrite or plan.resume, holds=holds)
        if plan.resume:
            check_cells_fingerprint(os.path.join(folder, "cells"))


CELLS_FINGERPRINT = "fingerprint.json"


def clear_experiment(folder: str, exp: str) -> None:
    """--overwrite: delete an experiment's cells/, CSV, summary.json and figures (nothing else in
    the folder)."""
    import glob

    cells = os.path.join(folder, "cells")
    if os.path.isdir(cells):
        shutil.rmtree(cells)
    for path in [os.path.join(folder, f"{exp}.csv"), os.path.join(folder, "summary.json"),
                 *glob.glob(os.path.join(folder, f"{exp}_*.png"))]:
        if os.path.isfile(path):
            os.remove(path)


def cells_fingerprint() -> dict:
    """What, besides a cell's own settings (its name, seeds and slots), determines its numbers."""
    from .outputs import device_kind, versions

    return {"versions": versions(), "device": device_kind()}


def check_cells_fingerprint(cells_dir: str) -> None:
    """--resume keeps cells computed by this installation only (issue 15)."""
    from .rundir import first_difference

    path = os.path.join(cells_dir, CELLS_FINGERPRINT)
    if not os.path.isfile(path):
        return
    try:
        with open(path) as f:
            stored = json.load(f)
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise ConfigError("resume", f"unreadable {path} ({err})") from None
    d = first_difference(stored, cells_fingerprint())
    if d:
        raise ConfigError("resume", f"{d[0]} differs: the cells in {cells_dir} were computed with {d[1]!r}, this "
                                    f"installation has {d[2]!r}; use --overwrite or another --out")


def _need_oracle(field: str) -> None:
    try:
        from grle_jax.oracle import oracle_policy  # noqa: F401
    except ImportError as err:
        raise ConfigError(field, f"the exact oracle (grle_jax.oracle) is not available: {err}") from None


def oracle_available() -> bool:
    try:
        from grle_jax.oracle import oracle_policy  # noqa: F401
    except ImportError:
        return False
    return True


# --- running one cell ----------------------------------------------------------------------------------
def run_cell(cell: Cell, seeds: int, slots: int, chunk: int, normalise: bool = False,
             fast_compile: bool = False) -> tuple[dict, float]:
    """The S seeds of one cell, vmapped in one compiled program; returns host records (S, slots)
    and the wall time (compilation included when this program was not compiled yet).
    ``fast_compile``: its run program compiled the fast way (``train.compiling``, the same numbers)."""
    from .sweep import Executor, build_runs, run_batched

    cfg = Config.for_scenario(cell.scenario, devices=cell.n, slot_ms=cell.t_ms, overdue=cell.overdue)
    t0 = time.perf_counter()
    agent = cell.agent
    rs = build_runs(cfg, agent, seeds=seeds, seed=0, normalise=normalise)
    ex = Executor(rs, shard=None, fast_compile=fast_compile)
    _, recs = run_batched(ex, slots, chunk=min(chunk, slots))
    return recs, time.perf_counter() - t0


def sweep_rows(cell: Cell, recs: dict, wall: float) -> list[dict]:
    from grle_jax.metrics import summarise

    counts = {k: recs[k] for k in ("tasks", "on_time", "acc_sum", "reward")}
    S = recs["tasks"].shape[1]
    whole = summarise(counts, cell.t_ms)
    fin = summarise({k: v[:, -final_window(S):] for k, v in counts.items()}, cell.t_ms)
    rows = []
    for r in range(recs["tasks"].shape[0]):
        row = {"experiment": cell.experiment, "scenario": cell.scenario, "policy": cell.policy, "T_ms": cell.t_ms,
               "N": cell.n, "seed": r, "overdue": cell.overdue, "slots": S, "tasks": float(whole["tasks"][r]),
               "final_slots": final_window(S)}
        for k in METRICS:
            row[k] = float(whole[k][r])
            row[f"final_{k}"] = float(fin[k][r])
        row["final_loss"] = float(recs["loss"][r, -1])
        row["cell_wall_s"] = wall
        rows.append(row)
    return rows


def convergence_rows(cell: Cell, recs: dict, wall: float, refs: dict | None = None) -> list[dict]:
    """One row per (seed, slot); ``refs``: greedy's and random's per-slot counts on the same draws."""
    from grle_jax.metrics import moving_mean, normalised_reward

    R, S = recs["reward_observed"].shape
    ma = moving_mean(recs["reward_observed"], WINDOW)
    extra = {f"{k}_reward_ma{WINDOW}": moving_mean(v["reward"], WINDOW) for k, v in (refs or {}).items()}
    if "reward_oracle" in recs:
        nma = moving_mean(normalised_reward(recs["reward_observed"], recs["reward_oracle"]), WINDOW)
        extra[f"oracle_reward_ma{WINDOW}"] = moving_mean(recs["reward_oracle"], WINDOW)
    else:
        nma = np.full((R, S), np.nan)
    rows = []
    for r in range(R):
        for t in range(S):
            rows.append({"experiment": cell.experiment, "scenario": cell.scenario, "policy": cell.policy,
                         "T_ms": cell.t_ms, "N": cell.n, "seed": r, "overdue": cell.overdue, "slot": t,
                         "reward": float(recs["reward_observed"][r, t]), f"reward_ma{WINDOW}": float(ma[r, t]),
                         f"normalised_reward_ma{WINDOW}": float(nma[r, t]), "loss": float(recs["loss"][r, t]),
                         **{k: float(v[r, t]) for k, v in extra.items()}})
    return rows


def cell_references(cell: Cell, seeds: int, slots: int, compile_mode: str = "auto") -> dict:
    """greedy and random on the draws of a convergence cell's seeds (0 .. seeds-1)."""
    from grle_jax.profile import DEFAULT_PROFILE

    from .references import run_references

    cfg = Config.for_scenario(cell.scenario, devices=cell.n, slot_ms=cell.t_ms, overdue=cell.overdue)
    names = tuple(n for n in ("greedy", "random") if n != cell.policy)
    fast = choose(compile_mode, seeds * slots * cell.n)
    return run_references(cfg, DEFAULT_PROFILE, [{"run": i, "seed": i} for i in range(seeds)], slots, names, fast)


# --- files ----------------------------------------------------------------------------------------------
def _cell_value(v):
    if isinstance(v, float):
        return "" if v != v else repr(v)
    return v


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    """Atomically: a temporary file renamed over ``path``."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell_value(row.get(c, float("nan"))) for c in columns])
    os.replace(tmp, path)


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k, v in row.items():
            if k in ("experiment", "scenario", "policy", "overdue"):
                continue
            row[k] = int(v) if k in INT_COLUMNS else (float(v) if v != "" else float("nan"))
    return rows


def cell_done(path: str, seeds: int, slots: int, convergence: bool) -> bool:
    """A cell file counts as finished when it holds every seed of a run of exactly ``slots`` slots."""
    if not os.path.isfile(path):
        return False
    try:
        rows = read_csv(path)
    except (OSError, ValueError, csv.Error):
        return False
    if convergence:
        ok = all(int(r["slot"]) < slots for r in rows) and len(rows) == seeds * slots
    else:
        # cells written before the final window was one definition (no final_slots) are run again
        ok = len(rows) == seeds and all(int(r["slots"]) == slots and float(r.get("final_slots") or "nan") == final_window(slots)
                                        for r in rows)
    return ok and {int(r["seed"]) for r in rows} == set(range(seeds))


def collect(folder: str, exp: str, cells: list[Cell]) -> list[dict]:
    rows = []
    for c in cells:
        path = os.path.join(folder, "cells", c.name + ".csv")
        if os.path.isfile(path):
            rows.extend(read_csv(path))
    return rows


# --- summaries -------------------------------------------------------------------------------------------
def summarise_rows(rows: list[dict], exp: str) -> list[dict]:
    """Mean and 95 % interval over seeds of every metric, per cell."""
    from grle_jax.stats import mean_ci

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["scenario"], r["policy"], r["T_ms"], r["N"], r["overdue"])
        groups.setdefault(key, []).append(r)
    out = []
    for (scen, pol, t, n, od), rs in groups.items():
        entry = {"scenario": scen, "policy": pol, "T_ms": t, "N": int(n), "overdue": od}
        if exp == "convergence":
            by_seed: dict[int, list[dict]] = {}
            for r in rs:
                by_seed.setdefault(int(r["seed"]), []).append(r)
            last = [sorted(v, key=lambda x: x["slot"])[-1] for v in by_seed.values()]
            entry["seeds"] = len(last)
            entry["slots"] = int(max(r["slot"] for r in rs)) + 1
            keys = [f"reward_ma{WINDOW}", f"normalised_reward_ma{WINDOW}", "loss"]
            keys += [k for k in (f"greedy_reward_ma{WINDOW}", f"random_reward_ma{WINDOW}", f"oracle_reward_ma{WINDOW}")
                     if any(k in x for x in last)]  # the references on the same draws
            entry["metrics"] = {k: mean_ci([x.get(k, float("nan")) for x in last]) for k in keys}
        else:
            entry["seeds"] = len(rs)
            entry["slots"] = int(rs[0]["slots"])
            entry["cell_wall_s"] = rs[0]["cell_wall_s"]
            entry["metrics"] = {k: mean_ci([x[k] for x in rs]) for k in
                                list(METRICS) + [f"final_{k}" for k in METRICS] + ["final_loss"]}
        out.append(entry)
    return out


def write_experiment(plan: Plan, exp: str, timing: dict) -> dict:
    """Rebuild the experiment's CSV, summary.json and figures from its finished cell files."""
    from .outputs import device_kind, write_json

    folder = plan.folder(exp)
    cells = plan.cells(exp)
    rows = collect(folder, exp, cells)
    conv = exp == "convergence"
    old = os.path.join(folder, "summary.json")
    if not timing and os.path.isfile(old):  # rebuilding files only: keep the run's timings
        with open(old) as f:
            timing = json.load(f).get("timing", {})
    write_csv(os.path.join(folder, f"{exp}.csv"), rows, CONV_COLUMNS if conv else SWEEP_COLUMNS)
    summary = {
        "experiment": exp, "seeds": plan.seeds, "slots": plan.slots, "overdue": list(plan.overdue),
        "critic_rounds": plan.critic_rounds, "variant": plan.variant,
        "n_values": [CONVERGENCE_N] if conv else list(plan.n_values),
        "t_values": [CONVERGENCE_T] if conv else list(plan.t_values),
        "final_window": final_window(plan.slots), "final_window_rule": FINAL_WINDOW_TEXT, "window": WINDOW, "device": device_kind(),
        "cells_total": len(cells), "cells_done": len({(r["policy"], r["T_ms"], r["N"], r["overdue"]) for r in rows}),
        "timing": timing, "cells": summarise_rows(rows, exp),
    }
    if conv:
        summary["normalised"] = any(np.isfinite(r[f"normalised_reward_ma{WINDOW}"]) for r in rows)
    else:
        summary["claims"] = claim_ratios(summary["cells"])
    write_json(os.path.join(folder, "summary.json"), summary)
    if rows:
        if conv:
            from .plots import experiment_convergence_figures

            experiment_convergence_figures(folder, rows, plan.overdue, plan.slots, WINDOW,
                                           f"convergence: base, N = {CONVERGENCE_N}, T = {CONVERGENCE_T:g} ms")
        else:
            from .plots import sweep_figures

            sweep_figures(folder, exp, summary["cells"], plan.policies or SWEEP_POLICIES, plan.overdue, plan.slots,
                          final_window(plan.slots))
    return summary


# ratio claims of the paper: (numerator, denominator, metric)
RATIOS = (("grle", "grl"), ("grle", "drooe"), ("drooe", "droo"), ("grle", "droo"))


def claim_ratios(cells: list[dict]) -> list[dict]:
    """Average-accuracy ratios between policies (final window and whole run) per (overdue, T, N)."""
    idx = {(c["policy"], c["overdue"], c["T_ms"], c["N"]): c for c in cells}
    out = []
    for num, den in RATIOS:
        for (p, od, t, n), c in sorted(idx.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][3])):
            if p != num or (den, od, t, n) not in idx:
                continue
            d = idx[(den, od, t, n)]
            row = {"ratio": f"{num}/{den}", "overdue": od, "T_ms": t, "N": n}
            for k in ("final_avg_accuracy", "avg_accuracy"):
                a, b = c["metrics"][k]["mean"], d["metrics"][k]["mean"]
                row[k] = a / b if b and np.isfinite(a) and np.isfinite(b) and b > 0 else None
            out.append(row)
    return out


# --- the paper's claims beside ours (docs/results.md) -------------------------------------------------------
PAPER_RATIOS = (  # (numerator, denominator, experiment, the paper's ratio of average accuracy)
    ("grle", "grl", "devices", 1.28), ("grle", "grl", "capacity", 2.8), ("grle", "grl", "inference", 2.86),
    ("grle", "grl", "csi", 3.41), ("grle", "drooe", "devices", 1.07), ("grle", "drooe", "capacity", 1.37),
    ("grle", "drooe", "inference", 1.39), ("grle", "drooe", "csi", 1.45), ("drooe", "droo", "devices", 1.24),
    ("drooe", "droo", "capacity", 2.28),
)


def _verdict(values: list[float], paper: float) -> str:
    """reproduced: within 10 % of the paper's ratio somewhere; direction only: above 1 but far from
    it; not reproduced: never above 1."""
    if not values:
        return "not run"
    if any(abs(v / paper - 1) <= 0.10 for v in values):
        return "reproduced"
    if max(values) > paper * 1.10:
        return "exceeded"
    if any(v > 1.0 for v in values):
        return "direction only"
    return "not reproduced"


def claims_report(root: str, key: str = "final_avg_accuracy") -> str:
    """Markdown rows of the claims table from the summaries under ``root`` (a ``paper`` folder)."""
    lines = ["| claim (paper) | overdue | ours: ratio at (N, T ms) | verdict |", "|---|---|---|---|"]
    summ = experiment_summaries(root)
    for num, den, exp, paper in PAPER_RATIOS:
        claims = summ.get(exp, {}).get("claims", [])
        for od in OVERDUE_RULES:
            sel = [c for c in claims if c["ratio"] == f"{num}/{den}" and c["overdue"] == od and c[key] is not None]
            vals = ", ".join(f"{c[key]:.2f} ({c['N']}, {c['T_ms']:g})" for c in sel) or "not run"
            lines.append(f"| {num.upper()}/{den.upper()} avg accuracy {paper} ({SWEEPS[exp]}) | {od} | {vals} | "
                         f"{_verdict([c[key] for c in sel], paper)} |")
    return "\n".join(lines)


def experiment_summaries(root: str) -> dict:
    """experiment -> summary.json under ``root``: a ``paper`` folder (one subfolder per experiment)
    or one experiment's own folder."""
    summ = {}
    paths = [os.path.join(root, exp, "summary.json") for exp in EXPERIMENTS] + [os.path.join(root, "summary.json")]
    for path in paths:
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("experiment") in EXPERIMENTS:
                summ.setdefault(data["experiment"], data)
    return summ


def claims_main(argv: list) -> int:
    """``python -m train.experiments claims DIR``: the claims table (and the slot-length check) of
    the summaries under DIR, as Markdown on stdout."""
    p = cli.Parser(prog="python -m train.experiments claims",
                description="The paper's claims beside ours, from the summary.json files of a results folder.")
    p.add_argument("dir", metavar="DIR", help="a results folder of `train.experiments paper` or of one sweep")
    p.add_argument("--key", default="final_avg_accuracy", choices=("final_avg_accuracy", "avg_accuracy"),
                   help="the ratio's metric (default: average accuracy over the final window, the last 10 %% of the slots)")
    box = {}

    def parse():
        args = box["args"] = p.parse_args(argv)
        if not os.path.isdir(args.dir):
            raise ConfigError("dir", f"not a folder: {args.dir}")
        summ = experiment_summaries(args.dir)
        if not any(e in summ for e in SWEEPS):
            raise ConfigError("dir", f"no sweep summary.json (devices, capacity, inference, csi) in {args.dir}")

    if cli.run(parse):
        return 2
    args = box["args"]
    print(claims_report(args.dir, args.key))
    slot = slot_length_report(args.dir)
    if slot.count("\n") > 1:
        print()
        print(slot)
    return 0


def slot_length_report(root: str) -> str:
    """Does T = 20 ms give higher throughput and lower SSP than T = 30 ms? Counts over (exp, policy, N)."""
    lines = ["| experiment | overdue | T=20 throughput higher | T=20 SSP lower |", "|---|---|---|---|"]
    summ = experiment_summaries(root)
    for exp in SWEEPS:
        if exp not in summ:
            continue
        cells = summ[exp]["cells"]
        idx = {(c["policy"], c["N"], c["overdue"], c["T_ms"]): c["metrics"] for c in cells}
        for od in OVERDUE_RULES:
            thr = ssp = total = 0
            for (p, n, o, t), m in idx.items():
                if o != od or t != 20.0 or (p, n, o, 30.0) not in idx:
                    continue
                m30 = idx[(p, n, o, 30.0)]
                total += 1
                thr += m["final_throughput_per_s"]["mean"] > m30["final_throughput_per_s"]["mean"]
                ssp += m["final_ssp"]["mean"] < m30["final_ssp"]["mean"]
            if total:
                lines.append(f"| {exp} | {od} | {thr}/{total} | {ssp}/{total} |")
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------------------
# --- the driver -----------------------------------------------------------------------------------------
def enable_compile_cache() -> None:
    """Persist compiled programs (so a resumed run compiles nothing it compiled before)."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    try:
        jax.config.update("jax_compilation_cache_dir", os.path.abspath(".jax_cache"))
        # from 0.5 s: programs compiled the fast way (train.compiling) take 1-2 s, and a warm
        # `paper --quick` then reuses 20 programs instead of 9 (38 s instead of 47 s)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    except Exception:  # pragma: no cover - an older jax without the option
        pass


# rough compile cost of a policy's programs, to start the longest first (the exact oracle of the
# convergence runs adds more); only the order of the compiling phase depends on it
COMPILE_RANK = {"grle": 6, "grl": 5, "drooe": 4, "droo": 3, "greedy": 2, "oracle": 2, "random": 1}


def program_of(cell: Cell) -> tuple:
    """What fixes a cell's compiled program: T, the scenario and the overdue rule are dynamic values,
    so every sweep and both rules share the programs of one (policy, N, rounds); convergence runs
    also carry the oracle."""
    return (cell.experiment == "convergence", cell.policy, cell.n, cell.rounds, cell.variant)


def fast_programs(plan: Plan, cells: list) -> dict:
    """``program_of(cell)`` -> whether that run program is compiled the fast way (train.compiling;
    the same numbers either way), by its planned work: devices x slots x seeds over every cell of
    ``cells`` that shares it. `paper --quick`'s programs plan 14,000-80,000 device-slots each (fast
    under ``auto``), the full grid's 1.4-24 million (compiled for speed of running)."""
    work: dict = {}
    for cell in cells:
        key = program_of(cell)
        work[key] = work.get(key, 0) + plan.seeds * plan.slots * cell.n
    return {key: choose(plan.compile, w) for key, w in work.items()}


def run(plan: Plan) -> dict:
    started = time.perf_counter()
    normalise = oracle_available()
    report = {}
    todo, skipped, cell_times = {}, {}, {}
    if plan.overwrite and len(plan.experiments) > 1 and os.path.isfile(os.path.join(plan.out, "timing.json")):
        os.remove(os.path.join(plan.out, "timing.json"))  # a paper run's, rewritten at the end
    for exp in plan.experiments:
        folder = plan.folder(exp)
        cells_dir = os.path.join(folder, "cells")
        if plan.overwrite:  # the cells and files of an earlier run here go, before any new cell
            clear_experiment(folder, exp)
        os.makedirs(cells_dir, exist_ok=True)
        from .outputs import write_json

        write_json(os.path.join(cells_dir, CELLS_FINGERPRINT), cells_fingerprint())
        cells = plan.cells(exp)
        todo[exp], skipped[exp], cell_times[exp] = [], 0, {}
        for i, cell in enumerate(cells):
            if plan.resume and cell_done(os.path.join(cells_dir, cell.name + ".csv"), plan.seeds, plan.slots,
                                         exp == "convergence"):
                skipped[exp] += 1
            else:
                todo[exp].append((i, cell))
    fast = fast_programs(plan, [cell for exp in plan.experiments for _, cell in todo[exp]])

    def one(item):
        i, cell = item
        exp = cell.experiment
        conv = exp == "convergence"
        recs, wall = run_cell(cell, plan.seeds, plan.slots, plan.chunk, normalise and conv, fast[program_of(cell)])
        check_finite(cell, recs, plan)
        if conv:
            rows = convergence_rows(cell, recs, wall, cell_references(cell, plan.seeds, plan.slots, plan.compile))
        else:
            rows = sweep_rows(cell, recs, wall)
        write_csv(os.path.join(plan.folder(exp), "cells", cell.name + ".csv"), rows,
                  CONV_COLUMNS if conv else SWEEP_COLUMNS)
        cell_times[exp][cell.name] = wall
        if not plan.quiet:
            extra = ""
            if not conv:
                acc = np.mean([r["final_avg_accuracy"] for r in rows])
                ssp = np.mean([r["final_ssp"] for r in rows])
                extra = f" accuracy {acc:.4f} SSP {ssp:.4f}"
            print(f"[{exp} {i + 1}/{len(plan.cells(exp))}] {cell.name}: {plan.seeds} seeds x {plan.slots} slots "
                  f"in {wall:.1f} s{extra}", flush=True)

    # Compilation dominates short runs. The first cell of every distinct program, over ALL the
    # experiments, runs in a pool of one thread per core, the costliest programs first, so that the
    # cores stay busy until the last compile. Every other cell then reuses a compiled program, in
    # the same pool: a cell's program is mostly small kernels that keep one core busy, so two cells
    # at once deliver 1.4x to 2.2x the run-slots per second of one on a 2-core CPU (docs/benchmarks.md,
    # "Cells side by side"). Each cell's numbers do not depend on what runs beside it.
    firsts, seen = [], set()
    for exp in plan.experiments:
        for item in todo[exp]:
            key = program_of(item[1])
            if key not in seen:
                firsts.append(item)
                seen.add(key)
    rest = {exp: [it for it in todo[exp] if id(it) not in {id(f) for f in firsts}] for exp in plan.experiments}
    workers = max(1, min(plan.workers, sum(len(v) for v in todo.values())))
    order = sorted(firsts, key=lambda it: (-(it[1].experiment == "convergence"),
                                           -COMPILE_RANK.get(it[1].policy, 0), -it[1].n))
    with ThreadPoolExecutor(workers) as pool:
        try:
            t_pool = time.perf_counter()
            for f in [pool.submit(one, it) for it in order]:
                f.result()
            if not plan.quiet and firsts:
                print(f"compiled {len(firsts)} programs ({min(workers, len(firsts))} threads) in "
                      f"{time.perf_counter() - t_pool:.1f} s", flush=True)
            futures = {exp: [pool.submit(one, it) for it in rest[exp]] for exp in plan.experiments}
            for exp in plan.experiments:  # experiment by experiment, as its cells finish
                for f in futures[exp]:
                    f.result()
                times = cell_times[exp]
                timing = {"wall_s": float(sum(times.values())), "cells_run": len(times),
                          "cells_skipped": skipped[exp], "cell_wall_s": times, "compile": plan.compile,
                          "cells_compiled_fast": sum(fast[program_of(c)] for _, c in todo[exp])}
                report[exp] = write_experiment(plan, exp, timing)
                if not plan.quiet:
                    print(f"{exp}: {len(plan.cells(exp))} cells ({skipped[exp]} already done), {timing['wall_s']:.1f} s "
                          f"of cell time -> {plan.folder(exp)}", flush=True)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the cells running finish and are written
            raise
    total = time.perf_counter() - started
    if len(plan.experiments) > 1:
        from .outputs import device_kind, write_json

        write_json(os.path.join(plan.out, "timing.json"),
                   {"wall_s": total, "device": device_kind(), "seeds": plan.seeds, "slots": plan.slots,
                    "n_values": list(plan.n_values), "t_values": list(plan.t_values),
                    "overdue": list(plan.overdue), "compile": plan.compile,
                    "programs_compiled_fast": f"{sum(fast.values())} of {len(fast)}",
                    "experiments_cell_s": {e: r["timing"]["wall_s"] for e, r in report.items()}})
    if not plan.quiet:
        print(f"total {total:.1f} s", flush=True)
    return report


def check_finite(cell: Cell, recs: dict, plan: Plan) -> None:
    """A cell whose loss or reward became NaN or infinite is not written; the run stops with one
    line naming the cell, seed and slot (the finished cells stay, --resume continues)."""
    from .rundir import first_nonfinite

    bad = first_nonfinite(recs)
    if bad is not None:
        raise ConfigError(bad.key, f"became {bad.value} at slot {bad.slot} of cell {cell.name} (seed {bad.run}); "
                                   f"the run stopped, the finished cells are kept in {plan.folder(cell.experiment)}"
                                   "/cells")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "claims":
        return claims_main(argv[1:])
    box = {}

    def parse():
        from .sweep import check_env

        box["plan"] = plan_from_args(build_parser().parse_args(argv))
        check_env()  # the groups' A/B switches, before anything starts

    if cli.run(parse):
        return 2
    os.makedirs(box["plan"].out, exist_ok=True)
    return cli.run(lambda: run(box["plan"]))  # a NaN or infinite loss or reward (check_finite) is one line too


if __name__ == "__main__":
    enable_compile_cache()
    sys.exit(main())
