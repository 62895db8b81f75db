"""The main job: ``python -m train.grle``.

With no flags it trains GRLE online at the paper's setting (N = 14, M = 2, E = 5, T = 20 ms,
D = 30 ms, base scenario) for 10,000 slots, with a progress bar, and writes the results to
``runs/grle-base-seed0``. ``--policy`` picks any of grle, grl, droo, drooe (learning online) or
random, greedy, oracle (fixed). ``--seeds S`` and ``--sweep FILE`` run many runs side by side in
one compiled program (vmapped, and sharded over the local devices when there are several).

The output folder (``--out DIR``) holds config.json (everything needed to rerun or resume),
metrics.csv (one row per run and slot, with ``time_ms``; units in docs/training.md), summary.json
(per-run metrics, and mean with a 95 % interval over seeds per grid point), per_run.csv (one row
per run) and convergence.png (the paper's Fig. 5: the reward's moving average beside greedy and
random played on the same draws, ``--references``, and the oracle's with ``--normalise``; the
normalised reward with ``--normalise``; the training loss of a learning policy).
``--checkpoint-every K`` saves the whole state every K slots under DIR/checkpoints; ``--resume DIR``
continues such a run (printing the slot it resumes at, or that the run is already complete) and
ends with exactly the results of an uninterrupted one.

Bad input prints one line ``error: <field>: <why>`` and exits 2, before anything is written.
Every output path is checked before any work; a folder that already holds a run, or a trace that
exists, is refused unless ``--overwrite``; ``--resume`` refuses a folder whose fingerprint does not
match; a NaN or infinite loss or reward stops the run at that slot, the slots before it saved
(``train.rundir``, docs/reliability.md).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field

from grle_jax import cli
from grle_jax.agent import ALL_POLICIES, LEARNING_POLICIES, AgentConfig
from grle_jax.config import INT32_MAX, SCENARIOS, Config, check_int, check_scenario
from grle_jax.errors import ConfigError
from grle_jax.metrics import FINAL_WINDOW_TEXT
from grle_jax.profile import DEFAULT_PROFILE, Profile

from .compiling import check_mode

DEFAULT_WINDOW = 50  # moving-average window (slots) of the curves
LEARNING_FLAGS = cli.AGENT_FLAGS + cli.VARIANT_FLAGS
RESUME_FLAGS_OK = ("resume", "quiet", "chunk", "stop_after", "checkpoint_every", "slots", "compile")
PROCESS_FLAGS = ("coordinator", "num_processes", "process_id")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m train.grle", description=__doc__.split("\n\n")[0])
    cli.add(p, "policy", "scenario", "devices", "servers", "slots", "seed", "seeds", *cli.ENV_FLAGS[2:])
    p.add_argument("--profile", default=None, metavar="PATH", help="exit profile JSON (default: the paper's table)")
    p.add_argument("--config", default=None, metavar="PATH", help="config JSON (flags override it)")
    # learning (grle, grl, droo, drooe), the variant and its ingredients
    cli.add(p, *LEARNING_FLAGS)
    p.add_argument("--sweep", default=None, metavar="FILE",
                   help="JSON grid {field: [values]} of dynamic hyperparameters run side by side")
    # outputs and running
    p.add_argument("--out", default=None, metavar="DIR",
                   help="results folder (default runs/<policy>-<scenario>-seed<seed>)")
    p.add_argument("--trace", default=None, metavar="PATH", help="write a JSON Lines trace (docs/model.md section 7)")
    p.add_argument("--normalise", action="store_true", default=None,
                   help="also run the exact oracle every slot and report the normalised reward (eq. 17)")
    p.add_argument("--window", type=int, default=None, help=f"moving-average window in slots (default {DEFAULT_WINDOW})")
    p.add_argument("--references", default=None, metavar="LIST",
                   help="fixed policies played on the same random draws for comparison: greedy,random (the "
                        "default), one of them, or none")
    cli.add(p, "chunk")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                   help="save a checkpoint every K slots in DIR/checkpoints")
    p.add_argument("--resume", default=None, metavar="DIR", help="continue the run whose results folder is DIR")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace the run already in --out (and an existing --trace file); without it they are refused")
    p.add_argument("--stop-after", type=int, default=None, metavar="SLOTS",
                   help="stop after this many slots as if killed (to test --resume); only checkpoints are written")
    cli.add(p, "quiet", "compile")
    # several processes (hosts): one JAX job, the runs split over every process's devices
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-process run: address of process 0 (all processes pass the same)")
    p.add_argument("--num-processes", type=int, default=None, help="multi-process run: number of processes")
    p.add_argument("--process-id", type=int, default=None, help="multi-process run: this process's index")
    return p


def config_from_args(args) -> Config:
    """--config file (or defaults), then the --scenario preset, then explicit flags."""
    cfg = Config.load(args.config) if args.config else Config()
    if args.scenario is not None:
        cfg = cfg.replace(scenario=args.scenario, **SCENARIOS[check_scenario(args.scenario)])
    changes = cli.given(args, cli.ENV_FLAGS)  # the flags are named after Config's fields
    return cfg.replace(**changes) if changes else cfg


def check_output_path(field: str, path: str | None, is_dir: bool = False) -> None:
    if path is None:
        return
    if not path.strip():
        raise ConfigError(field, f"must be a path, got {path!r}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(field, f"folder does not exist: {parent}")
    if is_dir and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(field, f"exists and is not a folder: {path}")
    if not is_dir and os.path.isdir(path):
        raise ConfigError(field, f"is a folder: {path}")


def _check_seeds(seed, seeds) -> None:
    """Run keys are jax.random.key(seed + i): every seed must lie in 0 .. 2^31 - 1 (larger ones wrap)."""
    check_int("seed", seed, 0)
    check_int("seeds", seeds, 1)
    if seed + seeds - 1 > INT32_MAX:
        raise ConfigError("seeds", f"seed + seeds - 1 = {seed + seeds - 1} is above {INT32_MAX}")


def _at_least(field: str, v, lo: int) -> None:
    if v is not None:
        check_int(field, v, lo)  # and within int32 (issue 15)


# --- the plan of a run ----------------------------------------------------------------------------------
@dataclass
class Plan:
    cfg: Config
    agent: AgentConfig
    profile: Profile
    profile_path: str | None
    slots: int
    seed: int
    seeds: int
    grid: dict | None
    sweep_path: str | None
    normalise: bool
    window: int
    chunk: int
    out: str
    trace: str | None
    checkpoint_every: int | None
    stop_after: int | None
    quiet: bool
    resume: bool = False
    multiprocess: bool = False
    references: tuple = ("greedy", "random")  # played on the same draws beside the run (train/references.py)
    extra: dict = field(default_factory=dict)
    stopped: object = None  # train.rundir.NonFinite when a loss or reward became NaN/inf
    overwrite: bool = False
    slots_given: bool = False  # --resume --slots: the run is extended (slots may differ from config.json's)
    compile: str = "auto"  # how the run programs are compiled (train.compiling): not in the fingerprint,
    # since it changes no number

    def fast_compile(self, runs: int) -> bool:
        """Whether ``runs`` runs of this plan's slots are compiled the fast way (train.compiling)."""
        from .compiling import choose

        return choose(self.compile, runs * self.slots * self.cfg.devices)

    @property
    def policy(self) -> str:
        return self.agent.policy

    def to_json(self) -> dict:
        return {
            "config": self.cfg.to_dict(), "agent": self.agent.explicit().to_dict(), "profile": self.profile.to_dict(),
            "policy": self.policy, "slots": self.slots, "seed": self.seed, "seeds": self.seeds,
            "sweep": self.grid, "normalise": self.normalise, "window": self.window, "chunk": self.chunk,
            "checkpoint_every": self.checkpoint_every, "references": list(self.references),
        }

    def fingerprint(self) -> dict:
        """Everything that determines the numbers (train.rundir.fingerprint)."""
        from .outputs import device_kind, versions
        from .rundir import fingerprint

        return fingerprint(self.to_json(), versions(), device_kind())


def default_out(policy: str, cfg: Config, seed: int, seeds: int, sweep_path: str | None) -> str:
    name = f"{policy}-{cfg.scenario}"
    if sweep_path:
        name += "-sweep-" + os.path.splitext(os.path.basename(sweep_path))[0]
    name += f"-seed{seed}" + (f"x{seeds}" if seeds > 1 else "")
    return os.path.join("runs", name)


def check_process_args(args) -> tuple | None:
    """(coordinator, num_processes, process_id) of a multi-process run, or None."""
    given = [f for f in PROCESS_FLAGS if getattr(args, f) is not None]
    if not given:
        return None
    if len(given) < 3:
        missing = next(f for f in PROCESS_FLAGS if getattr(args, f) is None)
        raise ConfigError(missing, "--coordinator, --num-processes and --process-id go together")
    host, sep, port = args.coordinator.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("coordinator", f"must be HOST:PORT, got {args.coordinator!r}")
    _at_least("num_processes", args.num_processes, 1)
    if not 0 <= args.process_id < args.num_processes:
        raise ConfigError("process_id", f"must lie in 0..{args.num_processes - 1}, got {args.process_id}")
    if args.checkpoint_every or args.resume:
        raise ConfigError("checkpoint_every" if args.checkpoint_every else "resume",
                          "checkpoints are written by one-process runs only (for now)")
    if args.trace:
        raise ConfigError("trace", "a trace records one run in one process")
    return args.coordinator, args.num_processes, args.process_id


def plan_from_args(args) -> Plan:
    compile_mode = check_mode(cli.value(args, "compile"))
    cfg = config_from_args(args)
    policy = cli.value(args, "policy")
    if policy not in ALL_POLICIES:
        raise ConfigError("policy", f"unknown policy {policy!r} (choose from {', '.join(ALL_POLICIES)})")
    learning = policy in LEARNING_POLICIES
    given = cli.given(args, LEARNING_FLAGS)
    if not learning and given:
        f = next(iter(given))
        raise ConfigError(f, f"applies to the learning policies ({', '.join(LEARNING_POLICIES)}), not {policy}")
    agent = AgentConfig(policy=policy, **given)
    static = cfg.static()
    slots = cli.value(args, "slots")
    _at_least("slots", slots, 1)
    seed, seeds = cli.value(args, "seed"), cli.value(args, "seeds")
    _check_seeds(seed, seeds)
    window = DEFAULT_WINDOW if args.window is None else args.window
    _at_least("window", window, 1)
    chunk = cli.value(args, "chunk")
    _at_least("chunk", chunk, 1)
    _at_least("checkpoint_every", args.checkpoint_every, 1)
    _at_least("stop_after", args.stop_after, 1)
    normalise = bool(args.normalise)
    if normalise and cfg.rho != 0:
        raise ConfigError("normalise", f"the normalised reward is defined for rho = 0 (docs/model.md 3), got rho = {cfg.rho}")
    profile = Profile.load(args.profile) if args.profile else DEFAULT_PROFILE
    if normalise or policy == "oracle":
        _need_oracle()
        from grle_jax.oracle import check_oracle_config

        check_oracle_config(cfg, profile.n_exits)
    static = cfg.static(profile)
    agent.check(static)
    grid = None
    if args.sweep is not None:
        from .sweep import AGENT_FIELDS, apply_point, grid_points, load_sweep

        grid = load_sweep(args.sweep)
        if not learning:
            bad = [k for k in grid if k in AGENT_FIELDS]
            if bad:
                raise ConfigError(f"sweep.{bad[0]}", f"applies to the learning policies, not {policy}")
        for point in grid_points(grid):
            apply_point(cfg, agent, point)
    if args.trace is not None and (seeds > 1 or grid is not None):
        raise ConfigError("trace", "a trace records one run: use it without --seeds > 1 and --sweep")
    if args.trace is not None:
        from .outputs import make_output_root

        make_output_root(args.trace)  # --trace runs/NAME.jsonl in a fresh clone
    check_output_path("trace", args.trace)
    if args.stop_after is not None and not args.checkpoint_every:
        raise ConfigError("stop_after", "only makes sense with --checkpoint-every (it simulates a killed run)")
    out = args.out if args.out is not None else default_out(policy, cfg, seed, seeds, args.sweep)
    if args.out is None:
        if os.path.exists(out) and not os.path.isdir(out):
            raise ConfigError("out", f"exists and is not a folder: {out}")
        try:
            os.makedirs(os.path.dirname(out), exist_ok=True)  # runs/
        except OSError as err:
            raise ConfigError("out", f"cannot create {os.path.dirname(out)} ({err.strerror or err})") from None
    from .outputs import make_output_root

    make_output_root(out)  # --out runs/NAME in a fresh clone
    check_output_path("out", out, is_dir=True)
    check_outputs(args, out)
    from .references import parse_references

    references = parse_references(args.references, policy)
    return Plan(cfg=cfg, agent=agent, profile=profile, profile_path=args.profile, slots=slots, seed=seed,
                seeds=seeds, grid=grid, sweep_path=args.sweep, normalise=normalise, window=window, chunk=chunk,
                out=out, trace=args.trace, checkpoint_every=args.checkpoint_every, stop_after=args.stop_after,
                quiet=bool(args.quiet), overwrite=bool(args.overwrite), references=references,
                compile=compile_mode)


def check_outputs(args, out: str) -> None:
    """Before any work (issue 15): --out can be created and written and holds no earlier run, the
    trace's folder is writable and the trace does not exist, unless --overwrite. A process other
    than 0 of a multi-process run writes nothing, so it does not check."""
    from . import rundir

    if args.process_id:
        return
    rundir.check_out_dir("out", out, bool(args.overwrite))
    rundir.check_out_file("trace", args.trace, bool(args.overwrite), out_dir=out)


def plan_from_resume(args) -> Plan:
    from . import checkpoint

    bad = [a for a, v in vars(args).items() if v is not None and a not in RESUME_FLAGS_OK + PROCESS_FLAGS]
    if bad:
        raise ConfigError("resume", f"takes the run's settings from its config.json; drop --{bad[0].replace('_', '-')}")
    compile_mode = check_mode(cli.value(args, "compile"))
    d = args.resume
    path = os.path.join(d, "config.json")
    if not os.path.isfile(path):
        raise ConfigError("resume", f"no config.json in {d} (not a results folder)")
    try:
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            from .rundir import json_kind

            raise ValueError(f"a JSON {json_kind(saved)}, not an object")
        cfg = Config.from_dict(saved["config"])
        agent = AgentConfig.from_dict(saved["agent"])
        profile = Profile.from_dict(saved["profile"])
        fields = {k: saved[k] for k in ("slots", "seed", "seeds", "normalise", "window")}
    except (KeyError, TypeError, ValueError, ConfigError) as err:  # JSONDecodeError is a ValueError
        why = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise ConfigError("resume", f"{path} is not a config.json written by train.grle ({why})") from None
    from .rundir import clean_stale_tmp

    clean_stale_tmp(os.path.join(d, "checkpoints"))  # what a killed checkpoint write left
    if checkpoint.latest(os.path.join(d, "checkpoints")) is None:
        raise ConfigError("resume", f"no checkpoint in {os.path.join(d, 'checkpoints')}")
    slots = fields["slots"] if args.slots is None else args.slots
    _at_least("slots", slots, 1)
    try:  # values of the file, as the checks of the flags see them
        _check_seeds(fields["seed"], fields["seeds"])
        _at_least("window", fields["window"], 1)
    except ConfigError as err:
        raise ConfigError("resume", f"{path}: {err}") from None
    _at_least("checkpoint_every", args.checkpoint_every, 1)
    _at_least("stop_after", args.stop_after, 1)
    _at_least("chunk", args.chunk, 1)
    chunk = args.chunk or saved.get("chunk") or 1000
    _at_least("chunk", chunk, 1)
    every = args.checkpoint_every or saved.get("checkpoint_every")
    _at_least("checkpoint_every", every, 1)
    grid = saved.get("sweep")
    if grid is not None:
        from .sweep import apply_point, check_grid, grid_points

        check_grid(grid)
        for point in grid_points(grid):
            apply_point(cfg, agent, point)
    plan = Plan(cfg=cfg, agent=agent, profile=profile, profile_path=None, slots=slots, seed=fields["seed"],
                seeds=fields["seeds"], grid=grid, sweep_path=None, normalise=bool(fields["normalise"]),
                window=fields["window"], chunk=chunk, out=d, trace=None, checkpoint_every=every,
                stop_after=args.stop_after, quiet=bool(args.quiet), resume=True, slots_given=args.slots is not None,
                references=tuple(saved.get("references", ())), compile=compile_mode)
    check_resume_fingerprint(plan, saved)
    return plan


def check_resume_fingerprint(plan: Plan, saved: dict) -> None:
    """--resume continues only the run config.json describes, with checkpoints of that run, on an
    installation that gives the same numbers (train.rundir.check_fingerprints)."""
    from . import checkpoint, rundir

    ckdir = os.path.join(plan.out, "checkpoints")
    metas = []
    for p in checkpoint.complete(ckdir):
        try:
            metas.append((p, checkpoint.read_meta(p)))
        except (OSError, ValueError) as err:
            raise ConfigError("resume", f"unreadable checkpoint {p} ({err})") from None
    rundir.check_fingerprints(plan.out, saved.get("fingerprint"), plan.fingerprint(), metas, plan.slots_given)
    rundir.probe_writable("resume", plan.out)


# --- running ---------------------------------------------------------------------------------------------
def run_plan(plan: Plan) -> tuple[dict, list[dict]] | None:
    """Execute; returns (records with a leading run axis, run table), or None when stopped early."""
    import jax

    from . import checkpoint, rundir
    from .loop import RECORD_KEYS
    from .progress import Progress
    from .sweep import Executor, build_runs, concat_records, run_batched

    if plan.normalise:
        _need_oracle()
    # every policy, fixed or learning, runs through the one runner (train.loop.Trainer via train.sweep)
    rs = build_runs(plan.cfg, plan.agent, plan.seeds, plan.seed, plan.grid, plan.profile, plan.normalise,
                    record_trace=plan.trace is not None)
    ex = Executor(rs, fast_compile=plan.fast_compile(rs.runs))
    ckdir = os.path.join(plan.out, "checkpoints")
    state = records = None
    start = 0
    rundir.clean_stale_tmp(ckdir)  # folders of a checkpoint write that was killed
    if plan.resume:
        template = jax.eval_shape(ex.init)
        try:
            start, state, records = checkpoint.restore(ckdir, template)
            rundir.check_restored(template, state, records, rs.runs, start,
                                  RECORD_KEYS + (("reward_oracle",) if plan.normalise else ()),
                                  f"checkpoint of slot {start} in {ckdir}")
        except ConfigError:
            raise
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError("resume", str(err)) from None
        state = jax.tree_util.tree_map(lambda x: x[: rs.runs], state)
        plan.extra["start"] = start
        if jax.process_index() == 0:
            print(f"resuming at slot {min(start, plan.slots)} of {plan.slots}", flush=True)
        if start >= plan.slots:
            records = {k: v[:, : plan.slots] for k, v in records.items()}
            return records, rs.table
    writer = None
    if plan.trace:
        from grle_jax.trace import TraceWriter, header

        writer = TraceWriter(plan.trace, header(plan.cfg, plan.profile, plan.policy, plan.seed))
    stop = plan.slots if plan.stop_after is None else min(plan.slots, plan.stop_after)
    bar = None if plan.quiet or jax.process_index() != 0 else Progress(
        stop, desc=f"{plan.policy} x{rs.runs} runs" if rs.runs > 1 else plan.policy, start=start)
    meta = {"policy": plan.policy, "runs": rs.runs, "slots": plan.slots, "fingerprint": plan.fingerprint()}

    finite = {"loss": rundir.loss_was_finite(records) if records else None}

    def on_chunk(st, t_end, parts, trace, length):
        # NaN/inf: stop, keep the slots before it (only the new chunk is looked at)
        bad = rundir.first_nonfinite(parts[-1], finite["loss"], t_end - length)
        finite["loss"] = rundir.loss_was_finite(parts[-1], finite["loss"])
        keep = length if bad is None else max(0, bad.slot - (t_end - length))
        if writer is not None and trace is not None and keep:
            one = jax.tree_util.tree_map(lambda x: x[0][:keep], trace)
            writer.write_chunk({**one, "reward_observed": parts[-1]["reward_observed"][0][:keep]})
        if bad is not None:
            bad.records = rundir.cut_records(concat_records(parts), bad.slot)
            raise bad
        if plan.checkpoint_every and t_end % plan.checkpoint_every == 0:
            checkpoint.save(ckdir, t_end, ex.to_host(st), concat_records(parts), meta)
        if bar:
            bar.update(length)

    try:
        _, recs = run_batched(ex, plan.slots, plan.chunk, state, start, records, on_chunk,
                              plan.checkpoint_every, plan.stop_after)
    except rundir.NonFinite as bad:
        plan.stopped = bad
        return bad.records, rs.table
    finally:
        if writer is not None:
            writer.close()
        if bar:
            bar.close()
    if plan.stop_after is not None and plan.stop_after < plan.slots:
        return None
    return recs, rs.table


def _need_oracle():
    try:
        from grle_jax.oracle import oracle_policy  # noqa: F401
    except ImportError as err:
        raise ConfigError("normalise", f"the exact oracle (grle_jax.oracle) is not available: {err}") from None


# --- outputs ---------------------------------------------------------------------------------------------
def per_run_metrics(recs: dict, slot_ms: float, window: int, normalise: bool) -> tuple[dict, dict]:
    """(per-slot columns (R, S), per-run summary values (R,)) from the records."""
    import numpy as np

    from grle_jax.metrics import final_window, moving, moving_mean, normalised_reward, summarise

    counts = {k: recs[k] for k in ("tasks", "on_time", "acc_sum", "reward")}
    S = recs["reward"].shape[1]
    cols = {
        "reward": recs["reward"], "reward_observed": recs["reward_observed"], "tasks": recs["tasks"],
        "on_time": recs["on_time"], "acc_sum": recs["acc_sum"],
    }
    for k, v in moving(counts, slot_ms, window).items():
        cols[f"{k}_ma{window}"] = v
    summ = dict(summarise(counts, slot_ms))
    final = final_window(S)
    fin = summarise({k: v[:, -final:] for k, v in counts.items()}, slot_ms)
    for k in ("ssp", "avg_accuracy", "throughput_per_s", "throughput_per_slot", "mean_reward"):
        summ[f"final_{k}"] = fin[k]
    if normalise:  # the oracle's reward is NaN where it was not run (benchmarks: before the final window)
        oracle = np.asarray(recs["reward_oracle"], np.float64)
        norm = np.where(np.isnan(oracle), np.nan, normalised_reward(recs["reward_observed"], oracle))
        ma = moving_mean(norm, window)
        cols["reward_oracle"] = recs["reward_oracle"]
        cols["normalised_reward"] = norm
        cols[f"normalised_reward_ma{window}"] = ma
        summ["normalised_reward_mean"] = np.nanmean(norm, axis=1) if np.isfinite(norm).any() else norm[:, 0]
        summ[f"normalised_reward_ma{window}_final"] = ma[:, -1]
        summ["final_normalised_reward"] = norm[:, -final:].mean(axis=1)
    cols["loss"] = recs["loss"]
    cols["k"] = recs["k"]
    cols["k_pos"] = recs["k_pos"]
    summ["final_loss"] = recs["loss"][:, -1]
    summ["final_k"] = recs["k"][:, -1]
    summ.pop("slots")
    summ["final_window"] = np.full(recs["reward"].shape[0], final)
    return cols, summ


def slot_start_ms(table: list[dict], slot_ms: float, slots: int):
    """(R, S) start time of every slot in ms, t * T (T of each run's grid point when swept)."""
    import numpy as np

    t = np.array([float(row.get("slot_ms", slot_ms)) for row in table])
    return t[:, None] * np.arange(slots)[None, :]


def write_metrics_csv(path: str, cols: dict, table: list[dict]) -> None:
    """One row per (run, slot): run, seed, the grid point's values, slot, then ``cols``."""
    import numpy as np

    names = list(cols)
    point_keys = [k for k in table[0] if k not in ("run", "seed")]
    header = ["run", "seed", *point_keys, "slot", *names]
    S = cols[names[0]].shape[1]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(",".join(header) + "\n")
        for r, row in enumerate(table):
            prefix = ",".join([str(row["run"]), str(row["seed"])] + [_csv_value(row[k]) for k in point_keys])
            block = np.column_stack([np.arange(S)] + [np.asarray(cols[k][r], np.float64) for k in names])
            buf = io.StringIO()
            np.savetxt(buf, block, fmt="%.12g", delimiter=",")
            lines = buf.getvalue().replace("nan", "").splitlines()
            f.write("".join(f"{prefix},{line}\n" for line in lines))
    os.replace(tmp, path)


def _csv_value(v) -> str:
    s = json.dumps(v)
    return f'"{s}"' if "," in s else s.strip('"')


def summarise_groups(summ: dict, table: list[dict]) -> list[dict]:
    """Mean and 95 % interval over the seeds of every grid point."""
    from grle_jax.stats import mean_ci

    groups: dict[str, list[int]] = {}
    points: dict[str, dict] = {}
    for row in table:
        point = {k: v for k, v in row.items() if k not in ("run", "seed")}
        key = json.dumps(point, sort_keys=True)
        groups.setdefault(key, []).append(row["run"])
        points[key] = point
    out = []
    for key, runs in groups.items():
        out.append({"point": points[key], "runs": runs,
                    "metrics": {k: mean_ci([v[r] for r in runs]) for k, v in summ.items()}})
    return out


def write_outputs(plan: Plan, recs: dict, table: list[dict], wall: float, compile_note: str = "",
                  refs: dict | None = None) -> dict:
    """config.json, metrics.csv, summary.json, per_run.csv and convergence.png; ``refs``: the
    reference policies' per-slot counts on the same draws (train/references.py)."""
    from .outputs import device_kind, versions, write_json
    from .plots import convergence_from_columns, write_per_run_csv

    os.makedirs(plan.out, exist_ok=True)
    cols, summ = per_run_metrics(recs, plan.cfg.slot_ms, plan.window, plan.normalise)
    cols = {"time_ms": slot_start_ms(table, plan.cfg.slot_ms, recs["reward"].shape[1]), **cols}
    for name, counts in (refs or {}).items():  # each reference's reward per slot, same draws
        cols[f"{name}_reward"] = counts["reward"]
    groups = summarise_groups(summ, table)
    R, S = recs["reward"].shape
    summary = {
        "policy": plan.policy, "scenario": plan.cfg.scenario, "devices": plan.cfg.devices,
        "servers": plan.cfg.servers, "slots": S, "seed": plan.seed, "seeds": plan.seeds, "runs": R,
        "wall_s": wall, "agent_slots_per_s": _speed(R, S - plan.extra.get("start", 0), wall),
        "device": device_kind(), "final_window_rule": FINAL_WINDOW_TEXT,
    }
    if len(groups) == 1:  # one grid point: its mean over seeds at top level (a single run's values)
        for k, v in groups[0]["metrics"].items():
            summary[k] = v["mean"]
            if R > 1:
                summary[f"{k}_ci95"] = v["ci95"]
    summary["groups"] = groups
    summary["per_run"] = [{**row, **{k: _num(v[row["run"]]) for k, v in summ.items()}} for row in table]
    if refs or plan.normalise:
        from .references import reference_summaries

        summary["references"] = reference_summaries(refs or {}, recs, table, plan.cfg.slot_ms,
                                                    int(summ["final_window"][0]))
    write_json(os.path.join(plan.out, "config.json"),
               {**plan.to_json(), "fingerprint": plan.fingerprint(), "runs": table, "versions": versions(),
                "device": device_kind()})
    write_metrics_csv(os.path.join(plan.out, "metrics.csv"), cols, table)
    write_json(os.path.join(plan.out, "summary.json"), summary)
    write_per_run_csv(os.path.join(plan.out, "per_run.csv"), summary)
    convergence_from_columns(os.path.join(plan.out, "convergence.png"), cols, table, plan.window,
                             run_title(plan), learning=plan.policy in LEARNING_POLICIES,
                             reward_floor=0.0 if plan.cfg.rho == 0 else None, label=plan.policy.upper())
    return summary


def print_references(summary: dict, point: dict, final: str) -> None:
    """One line: the references' final reward (same draws) beside the policy's, for one grid point."""
    refs = summary.get("references", {})
    parts = []
    for name, entry in refs.items():
        for g in entry["groups"]:
            if g["point"] == point:
                key = "final_mean_reward_observed" if name == "oracle" else "final_mean_reward"
                parts.append(f"{name} {g['metrics'][key]['mean']:.4f}")
    if parts:
        print(f"  same draws, {final}, mean reward: " + ", ".join(parts)
              + (" (oracle: on observed values)" if "oracle" in refs else ""))


def run_title(plan: Plan) -> str:
    """The figure title: only what every run of the folder shares (swept fields left out)."""
    swept = set(plan.grid or {})
    cfg = plan.cfg
    parts = [f"N={cfg.devices}", f"M={cfg.servers}"]
    if "slot_ms" not in swept:
        parts.append(f"T={cfg.slot_ms:g} ms")
    if "deadline_ms" not in swept:
        parts.append(f"D={cfg.deadline_ms:g} ms")
    parts.append(f"overdue {cfg.overdue}")
    head = plan.policy.upper() + ("" if "scenario" in swept else f" {cfg.scenario}")
    return f"{head}: {' '.join(parts)}"


def _speed(runs: int, slots_run: int, wall: float):
    """Agent-slots per second of the slots this process ran (a resumed run: those after the checkpoint)."""
    return runs * slots_run / wall if wall > 0 and slots_run > 0 else None


def resume_complete(plan: Plan) -> bool:
    """A resumed run whose results are already written for all its slots: its summary.json has
    ``plan.slots`` slots and is newer than the newest checkpoint."""
    from . import checkpoint

    path = os.path.join(plan.out, "summary.json")
    ck = checkpoint.latest(os.path.join(plan.out, "checkpoints"))
    if ck is None or not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            slots = json.load(f).get("slots")
    except (OSError, ValueError):
        return False
    return slots == plan.slots and os.path.getmtime(path) >= os.path.getmtime(os.path.join(ck, checkpoint.META))


def _num(v):
    import numpy as np

    v = np.asarray(v).item()
    return None if isinstance(v, float) and v != v else v


def print_summary(plan: Plan, summary: dict) -> None:
    cfg = plan.cfg
    swept = set(plan.grid or {})  # swept values are printed per grid point below, not here
    print(f"policy={plan.policy}" + ("" if "scenario" in swept else f" scenario={cfg.scenario}")
          + f" N={cfg.devices} M={cfg.servers}" + ("" if "slot_ms" in swept else f" T={cfg.slot_ms}ms")
          + ("" if "deadline_ms" in swept else f" D={cfg.deadline_ms}ms")
          + f" overdue={cfg.overdue} slots={summary['slots']} seed={plan.seed}"
          + (f" seeds={plan.seeds}" if plan.seeds > 1 else "") + (f" runs={summary['runs']}" if plan.grid else ""))
    n = len(summary["groups"][0]["runs"])
    if n >= 3:
        print(f"  (+-: half-width of the 95 % CI of the mean over the seeds, Student t, n = {n})")
    elif n == 2:
        print("  ([a, b]: min and max of the 2 seeds; a 95 % CI needs 3 or more)")
    for g in summary["groups"]:
        m = g["metrics"]

        def f(k, fmt="{:.4f}"):
            s = fmt.format(m[k]["mean"])
            if m[k]["n"] >= 3:
                return s + f" +- {fmt.format(m[k]['ci95'])}"
            vals = [v for v in m[k]["values"] if v == v]
            return s + (f" [{fmt.format(min(vals))}, {fmt.format(max(vals))}]" if len(vals) > 1 else "")

        head = ("  " + ", ".join(f"{k}={v}" for k, v in g["point"].items()) + ":") if g["point"] else ""
        if head:
            print(head)
        print(f"  SSP {f('ssp')}  avg accuracy {f('avg_accuracy')}  throughput {f('throughput_per_s', '{:.1f}')} "
              f"tasks/s  mean reward {f('mean_reward')}")
        print(f"  last {int(m['final_window']['mean'])} slots: SSP {f('final_ssp')}  avg accuracy "
              f"{f('final_avg_accuracy')}  mean reward {f('final_mean_reward')}"
              + (f"  loss {m['final_loss']['mean']:.4f}" if plan.policy in LEARNING_POLICIES else ""))
        if plan.normalise:
            print(f"  normalised reward: mean {f('normalised_reward_mean')}, "
                  f"last {plan.window}-slot average {f(f'normalised_reward_ma{plan.window}_final')}")
        print_references(summary, g["point"], f"last {int(m['final_window']['mean'])} slots")
    speed = summary["agent_slots_per_s"]
    print(f"  [{summary['wall_s']:.1f} s, " + (f"{speed:.0f} agent-slots/s, " if speed else "")
          + f"{summary['device']}]")


def start_run_folder(plan: Plan) -> None:
    """Before the first slot (issue 15): with --overwrite the earlier run's files go, then
    config.json with the run's fingerprint (what --resume checks) is written."""
    from . import rundir
    from .outputs import device_kind, versions, write_json

    os.makedirs(plan.out, exist_ok=True)
    if plan.overwrite:
        rundir.clear_run(plan.out)
    write_json(os.path.join(plan.out, "config.json"),
               {**plan.to_json(), "fingerprint": plan.fingerprint(), "versions": versions(), "device": device_kind()})


def report_nonfinite(plan: Plan, recs: dict, table: list[dict], wall: float) -> int:
    """A loss or reward became NaN or infinite: keep the slots before it, say where, exit 2."""
    bad = plan.stopped
    seed = table[bad.run]["seed"] if bad.run < len(table) else plan.seed
    saved = "nothing to save"
    if bad.slot > 0:
        write_outputs(plan, recs, table, wall)
        saved = f"slots 0..{bad.slot - 1} saved in {plan.out}"
    hint = f" (learning rate {plan.agent.lr:g} too high?)" if bad.key == "loss" else ""
    print(f"error: {bad.key}: became {bad.value} at slot {bad.slot} (run {bad.run}, seed {seed}){hint}; "
          f"the run stopped there, {saved}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        processes = check_process_args(args)
        if args.resume is not None and args.overwrite:
            raise ConfigError("overwrite", "contradicts --resume (which continues the run in its folder)")
        plan = plan_from_resume(args) if args.resume is not None else plan_from_args(args)
        if plan.normalise:
            _need_oracle()
        from .sweep import check_env

        check_env()  # the groups' A/B switches, before anything starts
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if plan.resume and resume_complete(plan):
        print(f"already complete: nothing to do ({plan.slots} slots; results in {plan.out})")
        return 0
    if processes is not None:
        from .sweep import distributed_init

        distributed_init(*processes)
        plan.multiprocess = True
    if not plan.resume and (processes is None or processes[2] == 0):
        start_run_folder(plan)
    pending = None
    finishing = plan.stop_after is None or plan.stop_after >= plan.slots
    if plan.references and finishing and processes is None:  # beside the run, on the same draws
        from .references import expected_table, start_references

        table = expected_table(plan.grid, plan.seeds, plan.seed)
        pending = start_references(plan.cfg, plan.profile, table, plan.slots, plan.references,
                                   plan.fast_compile(len(table)))
    t0 = time.perf_counter()
    try:
        result = run_plan(plan)
    except ConfigError as err:  # a checkpoint that does not fit the run (--resume): nothing was run
        print(f"error: {err}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    if processes is not None and processes[2] != 0:
        return 0  # process 0 writes the results
    if result is None:
        print(f"stopped after {plan.stop_after} slots; checkpoints in {os.path.join(plan.out, 'checkpoints')}")
        return 0
    recs, table = result
    if plan.stopped is not None:
        return report_nonfinite(plan, recs, table, wall)
    refs = None
    if plan.references:
        from .references import expected_table, run_references

        t1 = time.perf_counter()
        if pending is not None and table == expected_table(plan.grid, plan.seeds, plan.seed):
            refs, seconds = pending()
        else:
            refs, seconds = run_references(plan.cfg, plan.profile, table, recs["reward"].shape[1], plan.references,
                                           plan.fast_compile(len(table))), 0
        if not plan.quiet:
            print(f"references {', '.join(plan.references)} on the same draws: {seconds:.1f} s in a thread beside "
                  f"the run, {time.perf_counter() - t1:.1f} s after it", file=sys.stderr)
    summary = write_outputs(plan, recs, table, wall, refs=refs)
    print_summary(plan, summary)
    print(f"  results in {plan.out}")
    if plan.trace:
        print(f"  trace in {plan.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
