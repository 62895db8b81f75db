"""The ablation of our GRLE (docs/training.md, "Our GRLE and GRL"): each ingredient of the default
switched off alone (and ``--samples 8`` added), beside the paper's variant, at N = 14 (base,
capacity, csi: normalised reward over the final window, the exact oracle there) and under load
(capacity at N = 20 and 30: final average accuracy).

    python -m benchmarks.ablation [--rows ours,no-lookahead,...] [--settings n14,n20-capacity,n30-capacity]
                                  [--seeds 5] [--t-ms 20] [--json PATH] [--quiet]

Every (row, setting) is one compiled program running its seeds (and, at N = 14, the three
scenarios) side by side, seeds 0 .. S-1, overdue = abort; the final window is the one of every
command (``grle_jax.metrics.final_window``). Prints a Markdown table: mean ± 95 % interval over the
seeds and the worst seed.
"""

from __future__ import annotations

import json
import sys
import time

from grle_jax import cli
from grle_jax.errors import ConfigError

ROWS = {  # name -> AgentConfig overrides of GRLE
    "ours": {},
    "no-lookahead": {"lookahead": 0.0},
    "no-greedy-candidate": {"greedy_candidate": False},
    "bce": {"loss": "bce"},
    "rounds1": {"critic_rounds": 1},
    "samples8": {"samples": 8},
    "paper": {"variant": "paper"},
}
SETTINGS = {  # name -> (N, scenarios, slots, metric)
    "n14": (14, ("base", "capacity", "csi"), 2000, "normalised"),
    "n20-capacity": (20, ("capacity",), 3000, "accuracy"),
    "n30-capacity": (30, ("capacity",), 3000, "accuracy"),
}


def _names(text: str, known: dict, field: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise ConfigError(field, "is empty")
    for n in names:
        if n not in known:
            raise ConfigError(field, f"unknown {field[:-1]} {n!r} (choose from {', '.join(known)})")
    return names


def run_cell(row: str, setting: str, seeds: int, t_ms: float) -> dict:
    """{scenario: per-seed values} of one (row, setting)."""
    import numpy as np

    from grle_jax.agent import AgentConfig
    from grle_jax.config import Config
    from grle_jax.metrics import final_window, normalised_reward
    from train.sweep import Executor, build_runs, run_batched

    n, scenarios, slots, metric = SETTINGS[setting]
    final = final_window(slots)
    norm = metric == "normalised"
    rs = build_runs(Config(devices=n, slot_ms=t_ms, overdue="abort"), AgentConfig(policy="grle", **ROWS[row]),
                    seeds=seeds, seed=0, grid={"scenario": list(scenarios)}, normalise=norm,
                    normalise_from=slots - final)
    _, rec = run_batched(Executor(rs), slots, 1000)
    out = {}
    for i, sc in enumerate(scenarios):
        rows = slice(i * seeds, (i + 1) * seeds)
        if norm:
            v = normalised_reward(rec["reward_observed"][rows, -final:], rec["reward_oracle"][rows, -final:]).mean(1)
        else:
            acc, tasks = rec["acc_sum"][rows, -final:].sum(1), rec["tasks"][rows, -final:].sum(1)
            v = acc / np.maximum(tasks, 1)
        out[sc] = [float(x) for x in v]
    return out


def table(results: dict, rows: list[str], settings: list[str]) -> str:
    import numpy as np

    from grle_jax.stats import ci95

    cols = [(s, sc) for s in settings for sc in SETTINGS[s][1]]
    head = [f"N = {SETTINGS[s][0]} {sc} ({'normalised reward' if SETTINGS[s][3] == 'normalised' else 'accuracy'})"
            for s, sc in cols]
    lines = ["| variant | " + " | ".join(head) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for s, sc in cols:
            v = np.asarray(results[r][s][sc])
            cells.append(f"{v.mean():.3f} ± {float(ci95(v[:, None])[0]):.3f} [{v.min():.3f}]")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(ROWS), help="comma list of " + ", ".join(ROWS))
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma list of " + ", ".join(SETTINGS))
    cli.add(p, "seeds", "quiet", seeds=5)
    p.add_argument("--t-ms", type=float, default=20.0, help="slot length T in ms")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the per-seed values here")
    box = {}

    def parse():
        a = box["a"] = p.parse_args(argv)
        box["rows"] = _names(a.rows, ROWS, "rows")
        box["settings"] = _names(a.settings, SETTINGS, "settings")
        a.seeds = cli.value(a, "seeds", seeds=5)
        from grle_jax.config import Config, check_int

        check_int("seeds", a.seeds, 1)
        Config(slot_ms=a.t_ms)  # validates T
        if a.json is not None:
            from profiling._cli import check_output

            check_output(a.json, "json")

    if cli.run(parse):
        return 2
    a, rows, settings = box["a"], box["rows"], box["settings"]
    results: dict = {}
    for r in rows:
        for s in settings:
            t0 = time.perf_counter()
            results.setdefault(r, {})[s] = run_cell(r, s, a.seeds, a.t_ms)
            if not a.quiet:
                print(f"{r} {s}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"GRLE, abort, T = {a.t_ms:g} ms, {a.seeds} seeds; mean ± 95 % interval [worst seed]")
    print(table(results, rows, settings))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"t_ms": a.t_ms, "seeds": a.seeds, "rows": {r: ROWS[r] for r in rows}, "results": results}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
