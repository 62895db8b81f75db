"""Reference policies on the SAME random draws as a run: greedy and random beside any policy.

Slot ``t`` of a run with seed ``s`` draws its inputs from ``fold_in(key(s), t)`` whatever the
policy (``grle_jax.scenario.slot_keys``), so a reference
played with the run's seed sees exactly the draws the run saw, and equals a lone
``train.grle --policy greedy --seed s`` run: it IS such a run, by the one runner of every policy
(``train.loop.Trainer``). Each distinct (seed, environment grid point) is played once, all of them
side by side in one compiled ``vmap(scan)``.
"""

from __future__ import annotations

import numpy as np

from grle_jax.config import Config
from grle_jax.profile import Profile

DEFAULT_REFERENCES = ("greedy", "random")
KEEP = ("tasks", "on_time", "acc_sum", "reward", "reward_observed")


def parse_references(text: str | None, policy: str) -> tuple:
    """``--references``: comma-separated fixed policies, or ``none``; the run's own policy is dropped."""
    from grle_jax.errors import ConfigError

    if text is None:
        names = DEFAULT_REFERENCES
    elif text.strip() == "none":
        names = ()
    else:
        names = tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
        if not names:
            raise ConfigError("references", "is empty (use 'none' for no references)")
        for n in names:
            if n not in DEFAULT_REFERENCES:
                raise ConfigError("references", f"unknown reference {n!r} (choose from "
                                                f"{', '.join(DEFAULT_REFERENCES)}, or none)")
    return tuple(n for n in names if n != policy)


def expected_table(grid: dict | None, seeds: int, seed: int) -> list[dict]:
    """The run table ``train.sweep.build_runs`` makes: every grid point with every seed."""
    from .sweep import grid_points

    rows: list[dict] = []
    for p in grid_points(grid):
        for i in range(seeds):
            rows.append({"run": len(rows), "seed": seed + i, **p})
    return rows


def start_references(cfg: Config, profile: Profile, table: list[dict], slots: int, names: tuple,
                     fast_compile: bool = False):
    """Run the references in a background thread (compiling and running beside the main run);
    returns a zero-argument function that waits for and returns their counts (and seconds taken)."""
    import threading
    import time

    box: dict = {}

    def work():
        t0 = time.perf_counter()
        try:
            box["refs"] = run_references(cfg, profile, table, slots, names, fast_compile)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err
        box["seconds"] = time.perf_counter() - t0

    th = threading.Thread(target=work, name="references", daemon=True)
    th.start()

    def result():
        th.join()
        if "error" in box:
            raise box["error"]
        return box["refs"], box["seconds"]

    return result


def run_references(cfg: Config, profile: Profile, table: list[dict], slots: int, names: tuple,
                   fast_compile: bool = False) -> dict:
    """name -> per-slot counts (R, slots) of that fixed policy, run r on run r's seed and grid point.
    ``fast_compile``: their run programs compiled the fast way (``train.compiling``, the same numbers)."""
    import jax
    import jax.numpy as jnp

    from grle_jax.agent import AgentConfig

    from .loop import Hyper, make_trainer
    from .sweep import ENV_FIELDS, apply_point

    if not names:
        return {}
    uniq, index, keys, params = {}, [], [], []
    for row in table:
        point = {k: v for k, v in row.items() if k in ENV_FIELDS}
        tag = repr((row["seed"], sorted(point.items())))
        if tag not in uniq:
            uniq[tag] = len(keys)
            c = apply_point(cfg, AgentConfig(policy="greedy"), point)[0] if point else cfg
            keys.append(jax.random.key(row["seed"]))
            params.append(c.params(profile))
        index.append(uniq[tag])
    keys = jnp.stack(keys)
    env = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *params)
    out = {}
    for name in names:
        agent = AgentConfig(policy=name)
        trainer = make_trainer(cfg, agent, profile)
        hyper = Hyper(env=env, agent=agent.params(trainer.env))
        axes = Hyper(env=jax.tree_util.tree_map(lambda _: 0, env),
                     agent=jax.tree_util.tree_map(lambda _: None, hyper.agent))
        # one compiled program per (trainer, axes), cached by the Trainer: a repeated run compiles nothing new
        _, recs = trainer.batched("train", axes, fast_compile)(keys, hyper, slots)
        out[name] = {k: np.asarray(recs[k])[index] for k in KEEP}
    return out


def reference_summaries(refs: dict, recs: dict, table: list[dict], slot_ms: float, final: int) -> dict:
    """summary.json's ``references``: per reference, per run and per grid point (mean and interval
    over seeds) the whole-run and final-window metrics; ``oracle`` (with ``--normalise``) its mean
    reward on observed values (eq. 17's R*)."""
    from grle_jax.metrics import summarise

    from grle_jax.stats import mean_ci

    keys = ("ssp", "avg_accuracy", "throughput_per_s", "mean_reward")
    per = {}
    for name, counts in refs.items():
        c = {k: counts[k] for k in ("tasks", "on_time", "acc_sum", "reward")}
        whole = summarise(c, slot_ms)
        fin = summarise({k: v[:, -final:] for k, v in c.items()}, slot_ms)
        per[name] = {**{k: np.asarray(whole[k]) for k in keys}, **{f"final_{k}": np.asarray(fin[k]) for k in keys}}
    if "reward_oracle" in recs:
        o = np.asarray(recs["reward_oracle"], np.float64)
        with np.errstate(invalid="ignore"):
            per["oracle"] = {"mean_reward_observed": np.nanmean(o, axis=1),
                             "final_mean_reward_observed": np.nanmean(o[:, -final:], axis=1)}
    out = {}
    for name, vals in per.items():
        groups: dict[str, dict] = {}
        for row in table:
            point = {k: v for k, v in row.items() if k not in ("run", "seed")}
            g = groups.setdefault(repr(sorted(point.items())), {"point": point, "runs": []})
            g["runs"].append(row["run"])
        entry = {"per_run": [{"run": row["run"], "seed": row["seed"],
                              **{k: _num(v[row["run"]]) for k, v in vals.items()}} for row in table],
                 "groups": [{**g, "metrics": {k: mean_ci([v[r] for r in g["runs"]]) for k, v in vals.items()}}
                            for g in groups.values()]}
        if len(entry["groups"]) == 1:
            entry.update({k: m["mean"] for k, m in entry["groups"][0]["metrics"].items()})
        if name == "oracle":
            entry["note"] = "the exact per-slot optimum's reward on observed values (R* of eq. 17)"
        else:
            entry["note"] = f"{name} played on the same random draws (same seeds) as the run"
        out[name] = entry
    return out


def _num(v):
    v = float(v)
    return None if v != v else v
