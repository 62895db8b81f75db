"""The main job: ``python -m train.grle``.

Runs a policy for a number of slots, prints the metrics, and optionally writes a JSON Lines trace
(``--trace``) and a results folder (``--out``: config.json, metrics.csv, summary.json).

Bad input prints one line ``error: <field>: <why>`` and exits 2, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from grle_jax.config import OVERDUE_RULES, SCENARIOS, Config
from grle_jax.errors import ConfigError
from grle_jax.profile import DEFAULT_PROFILE, Profile

FIXED_POLICIES = ("random", "greedy", "oracle")
ALL_POLICIES = FIXED_POLICIES


def fixed_policy(name: str):
    """The act function of a non-learning policy."""
    if name == "oracle":
        from grle_jax.oracle import oracle_policy

        return oracle_policy
    from grle_jax.baselines import POLICIES

    return POLICIES[name]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one ``error: <field>: <why>`` line, exit 2."""

    def error(self, message: str):  # noqa: D401
        field = "arguments"
        if message.startswith("argument "):
            head, _, why = message[len("argument "):].partition(": ")
            field = head.split("/")[-1].lstrip("-").replace("-", "_")
            message = why
        raise ConfigError(field, message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m train.grle", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policy", default="greedy", help=f"one of {', '.join(ALL_POLICIES)}")
    p.add_argument("--scenario", default=None, help=f"preset: {', '.join(SCENARIOS)} (default base)")
    p.add_argument("--devices", type=int, default=None, help="N (default 14)")
    p.add_argument("--servers", type=int, default=None, help="M (default 2)")
    p.add_argument("--slots", type=int, default=10_000, help="number of time slots")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slot-ms", type=float, default=None, help="slot length T in ms (default 20)")
    p.add_argument("--deadline-ms", type=float, default=None, help="deadline D in ms (default 30)")
    p.add_argument("--overdue", default=None, help=f"{' or '.join(OVERDUE_RULES)} (default abort)")
    p.add_argument("--rho", type=float, default=None, help="late-task penalty weight (default 0)")
    p.add_argument("--p-link", type=float, default=None, help="probability a link is up (default 1)")
    p.add_argument("--p-active", type=float, default=None, help="probability a device is active (default 1)")
    p.add_argument("--topology-every", type=int, default=None, help="redraw links/activity every k slots")
    p.add_argument("--profile", default=None, metavar="PATH", help="exit profile JSON (default: the paper's table)")
    p.add_argument("--config", default=None, metavar="PATH", help="config JSON (flags override it)")
    p.add_argument("--out", default=None, metavar="DIR", help="write config.json, metrics.csv, summary.json here")
    p.add_argument("--trace", default=None, metavar="PATH", help="write a JSON Lines trace (MODEL.md section 7)")
    p.add_argument("--normalise", action="store_true",
                   help="also run the exact oracle every slot and report the normalised reward (eq. 17)")
    p.add_argument("--window", type=int, default=50, help="moving-average window in slots")
    p.add_argument("--chunk", type=int, default=1000, help="slots per compiled chunk (progress granularity)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


FLAG_FIELDS = {  # CLI flag dest -> Config field
    "devices": "devices", "servers": "servers", "slot_ms": "slot_ms", "deadline_ms": "deadline_ms",
    "overdue": "overdue", "rho": "rho", "p_link": "p_link", "p_active": "p_active",
    "topology_every": "topology_every",
}


def config_from_args(args) -> Config:
    """--config file (or defaults), then the --scenario preset, then explicit flags."""
    cfg = Config.load(args.config) if args.config else Config()
    if args.scenario is not None:
        if args.scenario not in SCENARIOS:
            raise ConfigError("scenario", f"unknown scenario {args.scenario!r} (choose from {', '.join(SCENARIOS)})")
        cfg = cfg.replace(scenario=args.scenario, **SCENARIOS[args.scenario])
    changes = {f: getattr(args, a) for a, f in FLAG_FIELDS.items() if getattr(args, a) is not None}
    return cfg.replace(**changes) if changes else cfg


def check_run_args(args, cfg: Config) -> None:
    if args.policy not in ALL_POLICIES:
        raise ConfigError("policy", f"unknown policy {args.policy!r} (choose from {', '.join(ALL_POLICIES)})")
    if args.slots < 1:
        raise ConfigError("slots", f"must be at least 1, got {args.slots}")
    if args.window < 1:
        raise ConfigError("window", f"must be at least 1, got {args.window}")
    if args.chunk < 1:
        raise ConfigError("chunk", f"must be at least 1, got {args.chunk}")
    if args.normalise and cfg.rho != 0:
        raise ConfigError("normalise", f"the normalised reward is defined for rho = 0 (MODEL.md 3), got rho = {cfg.rho}")
    check_output_path("trace", args.trace)
    check_output_path("out", args.out, is_dir=True)


def check_output_path(field: str, path: str | None, is_dir: bool = False) -> None:
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(field, f"folder does not exist: {parent}")
    if is_dir and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(field, f"exists and is not a folder: {path}")
    if not is_dir and os.path.isdir(path):
        raise ConfigError(field, f"is a folder: {path}")


def run_fixed(cfg: Config, profile: Profile, policy_name: str, slots: int, seed: int,
              trace_path: str | None = None, chunk: int = 1000, quiet: bool = False,
              normalise: bool = False) -> dict:
    """Run a non-learning policy; returns per-slot counts as numpy arrays (see grle_jax.metrics).
    With ``normalise`` the oracle's observed reward of every slot is in ``reward_oracle``."""
    import jax
    import numpy as np

    from grle_jax.rollout import run_chunk
    from grle_jax.scenario import reset
    from grle_jax.trace import TraceWriter, header

    from .progress import Progress

    static, params = cfg.static(profile), cfg.params(profile)
    policy = fixed_policy(policy_name)
    reference = fixed_policy("oracle") if normalise else None
    key = jax.random.key(seed)
    state = reset(static)
    record = trace_path is not None
    writer = TraceWriter(trace_path, header(cfg, profile, policy_name, seed)) if record else None
    bar = None if quiet else Progress(slots, desc=policy_name)
    parts = []
    done = 0
    try:
        while done < slots:
            n = min(chunk, slots - done)
            state, rec = run_chunk(static, policy, key, params, n, record, state, reference)
            if writer is not None:
                writer.write_chunk({**rec.pop("trace"), "reward_observed": rec["reward_observed"]})
            parts.append({k: np.asarray(v) for k, v in rec.items()})
            done += n
            if bar:
                bar.update(n)
    finally:
        if writer is not None:
            writer.close()
        if bar:
            bar.close()
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        cfg = config_from_args(args)
        check_run_args(args, cfg)
        profile = Profile.load(args.profile) if args.profile else DEFAULT_PROFILE
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from grle_jax.metrics import moving_mean, normalised_reward

    from .outputs import device_kind, run_summary, versions, write_json, write_metrics_csv

    t0 = time.perf_counter()
    counts = run_fixed(cfg, profile, args.policy, args.slots, args.seed, args.trace, args.chunk, args.quiet,
                       args.normalise)
    wall = time.perf_counter() - t0
    summary = run_summary(counts, cfg.slot_ms)
    extra = {}
    if args.normalise:
        norm = normalised_reward(counts["reward_observed"], counts.pop("reward_oracle"))
        extra[f"normalised_reward_ma{args.window}"] = moving_mean(norm, args.window)
        extra["normalised_reward"] = norm
        summary["normalised_reward_mean"] = float(norm.mean())
        summary[f"normalised_reward_ma{args.window}_final"] = float(extra[f"normalised_reward_ma{args.window}"][-1])
    summary.update({"policy": args.policy, "seed": args.seed, "wall_s": wall, "device": device_kind()})
    print(f"policy={args.policy} scenario={cfg.scenario} N={cfg.devices} M={cfg.servers} "
          f"T={cfg.slot_ms}ms D={cfg.deadline_ms}ms overdue={cfg.overdue} slots={args.slots} seed={args.seed}")
    print(f"  SSP {summary['ssp']:.4f}  avg accuracy {summary['avg_accuracy']:.4f}  "
          f"throughput {summary['throughput_per_s']:.1f} tasks/s ({summary['throughput_per_slot']:.3f}/slot)  "
          f"mean reward {summary['mean_reward']:.4f}  [{wall:.1f} s]")
    if args.normalise:
        print(f"  normalised reward: mean {summary['normalised_reward_mean']:.4f}, "
              f"last {args.window}-slot average {summary[f'normalised_reward_ma{args.window}_final']:.4f}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, "config.json"),
                   {"config": cfg.to_dict(), "profile": profile.to_dict(), "policy": args.policy,
                    "slots": args.slots, "seed": args.seed, "versions": versions(), "device": device_kind()})
        write_metrics_csv(os.path.join(args.out, "metrics.csv"), counts, cfg.slot_ms, args.window, extra)
        write_json(os.path.join(args.out, "summary.json"), summary)
        print(f"  results in {args.out}")
    if args.trace:
        print(f"  trace in {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
