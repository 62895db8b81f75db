"""Figures of a results folder, and ``python -m train.plots``: redraw or compare runs later.

``convergence.png`` (the paper's Fig. 5, written by ``train.grle``): per grid point the policy's
reward per slot (moving average) beside the references played on the SAME random draws (greedy,
random; the exact oracle's reward on observed values when ``--normalise`` ran), a normalised-reward
panel when it was computed, and the training loss of a learning policy (no empty panel for a fixed
one). Every line is the mean over seeds; from 3 seeds on a band shows the 95 % confidence interval
of the mean (Student t) clipped to the quantity's range, below 3 seeds each seed is drawn as a thin
line instead (a t-interval of 2 seeds is 12.7 standard errors wide).

    python -m train.plots RUN_DIR [RUN_DIR ...] [--out PNG]

redraws one ``train.grle`` results folder (default ``RUN_DIR/convergence.png``) or overlays several
(policies, seeds, settings; default ``compare.png`` in the current folder) from their metrics.csv
and summary.json, and prints a comparison table: final SSP, accuracy, throughput, reward and
normalised reward per seed, and per grid point the mean with its interval, each interval labelled.
Bad input prints one line ``error: <field>: <why>`` and exits 2.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import warnings

import numpy as np

from grle_jax import cli
from grle_jax.errors import ConfigError
from grle_jax.stats import ci95
from train.outputs import save_figure

MIN_CI_SEEDS = 3  # below this, figures draw every seed and tables give min-max instead of a t-interval
REF_STYLE = {"greedy": ("tab:orange", "--"), "random": ("tab:gray", ":"), "oracle": ("black", "-.")}
REF_LABEL = {"greedy": "greedy, same draws", "random": "random, same draws",
             "oracle": "oracle R* (observed values)"}


# --- intervals ---------------------------------------------------------------------------------------
def moving_mean(x, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` slots along the last axis, NaN left out (as
    ``grle_jax.metrics.moving_mean``, in numpy only)."""
    x = np.asarray(x, np.float64)
    have = np.isfinite(x)

    def wsum(v):
        c = np.cumsum(v, axis=-1)
        out = c.copy()
        out[..., window:] = c[..., window:] - c[..., :-window]
        return out

    count = wsum(have.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, wsum(np.where(have, x, 0.0)) / np.maximum(count, 1), np.nan)


POLICY_STYLE = {  # colour, marker
    "grle": ("tab:red", "o"), "grl": ("tab:blue", "s"), "drooe": ("tab:green", "^"),
    "droo": ("tab:purple", "v"), "greedy": ("tab:orange", "D"), "random": ("tab:gray", "x"),
    "oracle": ("black", "*"),
}
SWEEP_PANELS = (("avg_accuracy", "average accuracy"), ("ssp", "service success probability"),
                ("throughput_per_device", "throughput per device (on-time tasks/s)"))
POLICY_LINE = {"grle": "-", "grl": "--", "drooe": "-.", "droo": ":", "greedy": (0, (5, 2)),
               "random": (0, (1, 1)), "oracle": "-"}


def policy_style(pol: str) -> tuple:
    """(colour, marker, line style) of a policy in the sweep figures; greedy is the black reference."""
    colour, marker = POLICY_STYLE.get(pol, ("black", "."))
    if pol == "greedy":
        colour = "black"
    return colour, marker, POLICY_LINE.get(pol, "-")



def _band(x: np.ndarray):
    """Mean and 95 % half-width over axis 0 (runs), ignoring NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
    return mean, ci95(x, axis=0)


def interval(values) -> dict:
    """Mean of the finite values and what to show around it: the 95 % CI half-width (Student t)
    from ``MIN_CI_SEEDS`` values on, the min and max below (n = 2), nothing for one value."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"mean": float("nan"), "n": 0, "kind": "none"}
    out = {"mean": float(v.mean()), "n": n, "kind": "single"}
    if n >= MIN_CI_SEEDS:
        out.update(kind="ci95", half=float(ci95(v[:, None], axis=0)[0]))
    elif n > 1:
        out.update(kind="min-max", lo=float(v.min()), hi=float(v.max()))
    return out


def interval_text(values, fmt: str = "{:.4f}") -> str:
    """``0.9512 ± 0.0123 (95 % CI, n = 5)``, ``0.95 [0.93, 0.97] (min-max, n = 2)`` or ``0.95 (n = 1)``."""
    iv = interval(values)
    if iv["kind"] == "none":
        return "-"
    m = fmt.format(iv["mean"])
    if iv["kind"] == "ci95":
        return f"{m} ± {fmt.format(iv['half'])} (95 % CI, n = {iv['n']})"
    if iv["kind"] == "min-max":
        return f"{m} [{fmt.format(iv['lo'])}, {fmt.format(iv['hi'])}] (min-max, n = {iv['n']})"
    return f"{m} (n = 1)"


def band_note(n: int) -> str:
    return (f"line: mean of {n} seeds, band: 95 % CI of the mean" if n >= MIN_CI_SEEDS
            else ("thin lines: each seed, thick: their mean" if n > 1 else "one seed"))


# --- drawing -----------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(ax, y, colour, label: str | None, ls: str = "-", lw: float = 1.4, lo: float | None = None,
         hi: float | None = None, x=None, seeds_thin: bool = True) -> None:
    """One quantity over slots, (runs, S): the mean; from 3 runs a 95 % band clipped to [lo, hi],
    below that each run as a thin line."""
    y = np.atleast_2d(np.asarray(y, np.float64))
    if not np.isfinite(y).any():
        return
    x = np.arange(y.shape[1]) if x is None else x
    m, h = _band(y)
    n = y.shape[0]
    if n >= MIN_CI_SEEDS:
        low, high = m - h, m + h
        if lo is not None:
            low = np.maximum(low, lo)
        if hi is not None:
            high = np.minimum(high, hi)
        ax.fill_between(x, low, high, color=colour, alpha=0.18, lw=0)
    elif n > 1 and seeds_thin:
        for row in y:
            ax.plot(x, row, color=colour, lw=0.6, alpha=0.5, ls=ls)
    ax.plot(x, m, color=colour, lw=lw, ls=ls, label=label)


def convergence_figure(path: str, series: list[dict], title: str, window: int,
                       reward_floor: float | None = 0.0) -> list[str]:
    """``series``: one dict per line: ``label``, ``reward`` (runs, S) moving average, optional
    ``norm`` (normalised reward MA), ``loss``, ``refs`` {name: (runs, S) MA}. Panels: reward; the
    normalised reward if any series has one; the loss if any series has a finite loss."""
    plt = _plt()
    has_norm = any(s.get("norm") is not None and np.isfinite(s["norm"]).any() for s in series)
    has_loss = any(s.get("loss") is not None and np.isfinite(s["loss"]).any() for s in series)
    panels = 1 + has_norm + has_loss
    fig, axes = plt.subplots(panels, 1, figsize=(9.5, 2.2 + 2.4 * panels), sharex=True, squeeze=False)
    axes = axes[:, 0]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    one = len(series) == 1
    # references identical for every line (the same draws): drawn once, in their own colours
    names = list(dict.fromkeys(k for s in series for k in s.get("refs", {})))
    shared = {k for k in names if all(k in s.get("refs", {}) for s in series)
              and all(np.array_equal(s["refs"][k], series[0]["refs"][k], equal_nan=True) for s in series)}
    n_max = max(np.atleast_2d(s["reward"]).shape[0] for s in series)
    ax = axes[0]
    for i, s in enumerate(series):
        s.setdefault("colour", colours[i % len(colours)])
    for i, s in enumerate(series):
        c = s["colour"]
        draw(ax, s["reward"], c, s["label"], lo=reward_floor)
        for k, y in s.get("refs", {}).items():
            if k in shared:
                continue
            rc, rls = REF_STYLE.get(k, ("black", "--"))
            draw(ax, y, c, None, ls=rls, lw=1.0, lo=reward_floor, seeds_thin=False)
    for k in names:  # one legend entry per reference drawn in each line's own colour
        if k not in shared:
            ax.plot([], [], color="0.35", ls=REF_STYLE.get(k, ("black", "--"))[1], lw=1.0,
                    label=f"{REF_LABEL.get(k, k)} (in each line's colour)")
    for k in names:
        if k in shared:
            rc, rls = REF_STYLE.get(k, ("black", "--"))
            draw(ax, series[0]["refs"][k], rc, REF_LABEL.get(k, k), ls=rls, lw=1.1, lo=reward_floor,
                 seeds_thin=False)
    ax.set_ylabel(f"reward R per slot\n(moving average, {window} slots)", fontsize=9)
    ax.set_title(title + "\n" + band_note(n_max) + ("" if one else "; one colour per line"), fontsize=9)
    panel = 1
    if has_norm:
        ax = axes[panel]
        panel += 1
        for i, s in enumerate(series):
            if s.get("norm") is not None:
                draw(ax, s["norm"], s["colour"], s["label"], lo=0.0, hi=1.0)
        ax.set_ylabel(f"normalised reward R/R*\n(moving average, {window} slots)", fontsize=9)
    if has_loss:
        ax = axes[panel]
        for i, s in enumerate(series):
            if s.get("loss") is not None:
                draw(ax, s["loss"], s["colour"], s["label"], lo=0.0)
        ax.set_ylabel("training loss\n(nats)", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1].set_xlabel("time slot")
    fig.tight_layout()
    save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return ["reward"] + ["normalised reward"] * has_norm + ["loss"] * has_loss


def _point_label(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def convergence_from_columns(path: str, cols: dict, table: list[dict], window: int, title: str,
                             learning: bool, reward_floor: float | None, label: str) -> list[str]:
    """convergence.png of one results folder from its per-slot columns (run, slot arrays)."""
    groups: dict[str, dict] = {}
    for row in table:
        point = {k: v for k, v in row.items() if k not in ("run", "seed")}
        groups.setdefault(json.dumps(point, sort_keys=True), {"point": point, "runs": []})["runs"].append(row["run"])
    series = []
    for g in groups.values():
        r = g["runs"]
        s = {"label": _point_label(g["point"]) or label, "reward": cols[f"mean_reward_ma{window}"][r], "refs": {}}
        for k in cols:
            if k.endswith("_reward") and k[: -len("_reward")] in REF_STYLE:
                s["refs"][k[: -len("_reward")]] = moving_mean(cols[k][r], window)
        if "reward_oracle" in cols:
            s["refs"]["oracle"] = moving_mean(cols["reward_oracle"][r], window)
        if f"normalised_reward_ma{window}" in cols:
            s["norm"] = cols[f"normalised_reward_ma{window}"][r]
        if learning:
            s["loss"] = np.asarray(cols["loss"][r], np.float64)
        series.append(s)
    return convergence_figure(path, series, title, window, reward_floor)


# --- per-run table -------------------------------------------------------------------------------------
PER_RUN_KEYS = ("ssp", "avg_accuracy", "throughput_per_s", "mean_reward", "final_ssp", "final_avg_accuracy",
                "final_throughput_per_s", "final_mean_reward", "final_normalised_reward", "final_loss")


def write_per_run_csv(path: str, summary: dict) -> None:
    """One row per run (seed and grid point): its whole-run and final-window metrics, and the
    references' final reward and SSP on the same draws (empty where not computed)."""
    per_run = summary["per_run"]
    refs = summary.get("references", {})
    point_keys = list(summary["groups"][0]["point"])
    ref_cols = []
    for name, entry in refs.items():
        for k in ("final_mean_reward", "final_ssp", "final_avg_accuracy", "final_mean_reward_observed"):
            if entry["per_run"] and k in entry["per_run"][0]:
                ref_cols.append((name, k))
    header = ["run", "seed", *point_keys, *[k for k in PER_RUN_KEYS if k in per_run[0]],
              *[f"{n}_{k}" for n, k in ref_cols]]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, row in enumerate(per_run):
            vals = [row["run"], row["seed"], *[_cell(row[k]) for k in point_keys],
                    *[_cell(row.get(k)) for k in PER_RUN_KEYS if k in per_run[0]],
                    *[_cell(refs[n]["per_run"][i].get(k)) for n, k in ref_cols]]
            w.writerow(vals)
    os.replace(tmp, path)


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if v != v else repr(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


# --- train.experiments' figures ------------------------------------------------------------------
def sweep_figures(folder: str, exp: str, cells: list[dict], policies, overdue_rules, slots: int,
                  final: int) -> list[str]:
    """Per overdue rule: rows = T, columns = (average accuracy, SSP, throughput per device) against
    N; per policy the mean over seeds of the final-window metric, each policy with its own colour,
    marker and line style, greedy as the black dashed reference. From 3 seeds on a 95 % band (clipped
    to the metric's range), below that min-max bars. Throughput is shown per device with its ceiling
    (every task on time, 1000 / T per second), so that policies differ visibly at every N. Written
    as ``folder/<exp>_<overdue>.png``; ``final`` is the final window's length in slots."""
    plt = _plt()
    paths = []
    for od in overdue_rules:
        sel = [c for c in cells if c["overdue"] == od]
        if not sel:
            continue
        ts = sorted({c["T_ms"] for c in sel})
        fig, axes = plt.subplots(len(ts), 3, figsize=(13.5, 3.1 * len(ts) + 0.8), squeeze=False)
        for i, t in enumerate(ts):
            for j, (metric, label) in enumerate(SWEEP_PANELS):
                ax = axes[i, j]
                for pol in policies:
                    pts = sorted((c for c in sel if c["T_ms"] == t and c["policy"] == pol), key=lambda c: c["N"])
                    if not pts:
                        continue
                    key = "final_throughput_per_s" if metric == "throughput_per_device" else f"final_{metric}"
                    x = np.array([c["N"] for c in pts])
                    per = [np.asarray(c["metrics"][key]["values"], np.float64) for c in pts]
                    if metric == "throughput_per_device":
                        per = [v / n for v, n in zip(per, x)]
                    m = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in per])
                    colour, marker, ls = policy_style(pol)
                    ref = pol == "greedy"
                    ax.plot(x, m, color=colour, marker=marker, ms=6 if ref else 5, lw=2.2 if ref else 1.3, ls=ls,
                            mfc="none" if pol in ("grl", "droo") else colour, zorder=3 if ref else 2,
                            label=f"{pol.upper()} (reference)" if ref else pol.upper())
                    top = 1.0 if metric in ("avg_accuracy", "ssp") else np.inf
                    n_seeds = min(int(np.isfinite(v).sum()) for v in per)
                    if n_seeds >= MIN_CI_SEEDS:
                        h = np.array([ci95(v[:, None], axis=0)[0] for v in per])
                        ax.fill_between(x, np.maximum(m - h, 0.0), np.minimum(m + h, top), color=colour,
                                        alpha=0.07, lw=0)
                    elif n_seeds == 2:
                        lo = np.array([np.nanmin(v) for v in per])
                        hi = np.array([np.nanmax(v) for v in per])
                        ax.errorbar(x, m, yerr=[m - lo, hi - m], fmt="none", ecolor=colour, alpha=0.6, capsize=2,
                                    lw=0.8)
                if metric == "throughput_per_device":
                    ax.axhline(1000.0 / t, color="0.5", lw=0.8, ls=(0, (1, 2)))
                    ax.text(0.99, 0.98, "ceiling: every task on time", transform=ax.transAxes, ha="right",
                            va="top", fontsize=7, color="0.4")
                ax.set_xticks(sorted({c["N"] for c in sel}))
                ax.set_title(f"{label}, T = {t:g} ms", fontsize=9)
                ax.set_xlabel("number of IoT devices N")
                ax.set_ylabel(label, fontsize=8)
                ax.grid(alpha=0.3)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
        scen = sel[0]["scenario"]
        n_seeds = min(c["seeds"] for c in sel)
        spread = ("band: 95 % CI of the mean" if n_seeds >= MIN_CI_SEEDS
                  else "bars: min-max of the seeds" if n_seeds == 2 else "one seed")
        seeds_text = f"mean of {n_seeds} seeds, {spread}" if n_seeds > 1 else "one seed"
        fig.suptitle(f"{exp}: scenario {scen}, overdue = {od}; last {final} of {slots} slots, "
                     f"{seeds_text}", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        path = os.path.join(folder, f"{exp}_{od}.png")
        save_figure(fig, path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def experiment_convergence_figures(folder: str, rows: list[dict], overdue_rules, slots: int, window: int,
                                   head: str) -> list[str]:
    """Fig. 5 per overdue rule (``train.plots.convergence_figure``): per policy the reward's moving
    average beside greedy, random and the oracle's R* on the same draws, the normalised reward when
    the oracle ran, and the training loss; mean over seeds, a 95 % band from 3 seeds on (each seed
    below that), clipped to the quantity's range. ``rows``: train.experiments' convergence.csv
    rows; written as ``folder/convergence_<overdue>.png``, titled ``head`` and the rule."""
    paths = []
    refs = ("greedy", "random", "oracle")
    for od in overdue_rules:
        sel = [r for r in rows if r["overdue"] == od]
        if not sel:
            continue
        series = []
        for pol in dict.fromkeys(r["policy"] for r in sel):
            pr = [r for r in sel if r["policy"] == pol]
            seeds = sorted({int(r["seed"]) for r in pr})
            S = int(max(r["slot"] for r in pr)) + 1
            keys = [f"reward_ma{window}", f"normalised_reward_ma{window}", "loss"] + [f"{k}_reward_ma{window}"
                                                                                   for k in refs]
            arr = {k: np.full((len(seeds), S), np.nan) for k in keys}
            for r in pr:
                i, t = seeds.index(int(r["seed"])), int(r["slot"])
                for k in keys:
                    arr[k][i, t] = r.get(k, float("nan"))
            s = {"label": pol.upper(), "colour": POLICY_STYLE.get(pol, ("black", "."))[0],
                 "reward": arr[f"reward_ma{window}"], "norm": arr[f"normalised_reward_ma{window}"],
                 "loss": arr["loss"], "refs": {k: arr[f"{k}_reward_ma{window}"] for k in refs
                                               if np.isfinite(arr[f"{k}_reward_ma{window}"]).any()}}
            series.append(s)
        path = os.path.join(folder, f"convergence_{od}.png")
        convergence_figure(path, series, f"{head}, overdue = {od}, {slots} slots", window, 0.0)
        paths.append(path)
    return paths



# --- the CLI: redraw and compare ----------------------------------------------------------------------
def load_run(folder: str) -> dict:
    """A train.grle results folder: summary.json, config.json and the per-slot columns of metrics.csv."""
    if not os.path.isdir(folder):
        raise ConfigError("run_dir", f"not a folder: {folder}")
    paths = {n: os.path.join(folder, n) for n in ("summary.json", "metrics.csv", "config.json")}
    for n, p in paths.items():
        if not os.path.isfile(p):
            raise ConfigError("run_dir", f"no {n} in {folder} (not a train.grle results folder)")
    try:
        with open(paths["summary.json"]) as f:
            summary = json.load(f)
        with open(paths["config.json"]) as f:
            config = json.load(f)
        summary["per_run"], config["window"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError("run_dir", f"{folder}: unreadable summary.json or config.json ({err})") from None
    with open(paths["metrics.csv"], newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or "slot" not in header or "run" not in header:
            raise ConfigError("run_dir", f"{paths['metrics.csv']}: not a train.grle metrics.csv")
        rows = list(reader)
    i_slot = header.index("slot")
    names = header[i_slot + 1:]
    by_run: dict[int, list] = {}
    for r in rows:
        by_run.setdefault(int(r[0]), []).append(r)
    runs = sorted(by_run)
    S = max(len(v) for v in by_run.values())
    cols = {n: np.full((len(runs), S), np.nan) for n in names}
    for i, run in enumerate(runs):
        block = by_run[run]
        for j, n in enumerate(names):
            cols[n][i, : len(block)] = [float(b[i_slot + 1 + j]) if b[i_slot + 1 + j] != "" else np.nan for b in block]
    try:
        point_keys = list(summary["groups"][0]["point"])
    except (KeyError, IndexError, TypeError):
        raise ConfigError("run_dir", f"{folder}: summary.json has no groups (not written by train.grle)") from None
    table = [{k: row[k] for k in ("run", "seed", *point_keys)} for row in summary["per_run"]]
    return {"folder": folder, "summary": summary, "config": config, "cols": cols, "table": table,
            "window": int(config["window"]), "policy": summary.get("policy", config.get("policy", "?"))}


def series_of(run: dict, label_prefix: str) -> list[dict]:
    w = run["window"]
    cols = run["cols"]
    groups: dict[str, dict] = {}
    for i, row in enumerate(run["table"]):
        point = {k: v for k, v in row.items() if k not in ("run", "seed")}
        groups.setdefault(json.dumps(point, sort_keys=True), {"point": point, "idx": []})["idx"].append(i)
    out = []
    for g in groups.values():
        r = g["idx"]
        label = label_prefix + (f" ({_point_label(g['point'])})" if g["point"] else "")
        s = {"label": label, "reward": moving_mean(cols["reward"][r], w), "refs": {}}
        for k in cols:
            if k.endswith("_reward") and k[: -len("_reward")] in REF_STYLE:
                s["refs"][k[: -len("_reward")]] = moving_mean(cols[k][r], w)
        if "reward_oracle" in cols:
            s["refs"]["oracle"] = moving_mean(cols["reward_oracle"][r], w)
        if "normalised_reward" in cols:
            s["norm"] = moving_mean(cols["normalised_reward"][r], w)
        if "loss" in cols and np.isfinite(cols["loss"][r]).any():  # a learning policy
            s["loss"] = cols["loss"][r]
        out.append(s)
    return out


TABLE_COLUMNS = (("final_ssp", "SSP", "{:.4f}"), ("final_avg_accuracy", "accuracy", "{:.4f}"),
                 ("final_throughput_per_s", "throughput (tasks/s)", "{:.1f}"),
                 ("final_mean_reward", "reward R per slot", "{:.3f}"),
                 ("final_normalised_reward", "normalised reward", "{:.4f}"))


def comparison_table(runs: list[dict], labels: list[str]) -> str:
    """Markdown: per run folder and grid point, one row per seed and one with the mean and its
    interval; the references' rows (same draws) follow each folder's."""
    head = "| run | seed | " + " | ".join(t for _, t, _ in TABLE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (2 + len(TABLE_COLUMNS))]

    def block(name, per_run, groups):
        for g in groups:
            pr = [p for p in per_run if p["run"] in g]
            pl = name
            for p in pr:
                lines.append(f"| {pl} | {p['seed']} | " + " | ".join(
                    fmt.format(p[k]) if isinstance(p.get(k), (int, float)) else "-" for k, _, fmt in TABLE_COLUMNS)
                    + " |")
            if len(pr) > 1:
                lines.append(f"| {pl} | mean | " + " | ".join(
                    interval_text([p.get(k) for p in pr], fmt) if any(isinstance(p.get(k), (int, float)) for p in pr)
                    else "-" for k, _, fmt in TABLE_COLUMNS) + " |")

    for run, label in zip(runs, labels):
        summ = run["summary"]
        groups: dict[str, list] = {}
        names: dict[str, str] = {}
        for p in summ["per_run"]:
            point = {k: p[k] for k in run["table"][0] if k not in ("run", "seed")}
            key = json.dumps(point, sort_keys=True)
            groups.setdefault(key, []).append(p["run"])
            names[key] = label + (f" ({_point_label(point)})" if point else "")
        for key, g in groups.items():
            block(names[key], summ["per_run"], [g])
            for ref, entry in summ.get("references", {}).items():
                if ref == "oracle":
                    continue
                block(f"{names[key]}: {ref} (same draws)", entry["per_run"], [g])
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.Parser(prog="python -m train.plots", description=__doc__.split("\n\n")[0],
                   positional={"RUN_DIR": "run_dir"})
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="results folders of python -m train.grle")
    p.add_argument("--out", default=None, metavar="PNG",
                   help="figure to write (default RUN_DIR/convergence.png for one folder, compare.png for several)")
    p.add_argument("--no-table", action="store_true", help="do not print the comparison table")
    try:
        a = p.parse_args(argv)
        runs = [load_run(d) for d in a.runs]
        out = a.out or (os.path.join(a.runs[0], "convergence.png") if len(a.runs) == 1 else "compare.png")
        if not out.lower().endswith(".png"):
            raise ConfigError("out", f"must be a .png file, got {out}")
        parent = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(parent):
            raise ConfigError("out", f"folder does not exist: {parent}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    labels = _labels(runs)
    series = [s for run, lab in zip(runs, labels) for s in series_of(run, lab)]
    windows = {run["window"] for run in runs}
    title = _common_title(runs)
    floor = 0.0 if all(run["config"]["config"].get("rho", 0) == 0 for run in runs) else None
    convergence_figure(out, series, title, max(windows), floor)
    if not a.no_table:
        print(comparison_table(runs, labels))
        print("final = the last 10 % of each run's slots; reward R per slot = total accuracy of on-time tasks; "
              "intervals: 95 % CI of the mean (Student t) from 3 seeds on, min-max below")
    print(f"wrote {out}")
    return 0


def _labels(runs: list[dict]) -> list[str]:
    """Short labels: the policy, plus the folder name when policies repeat."""
    pols = [r["policy"].upper() for r in runs]
    out = []
    for r, pol in zip(runs, pols):
        out.append(pol if pols.count(pol) == 1 else f"{pol} {os.path.basename(os.path.normpath(r['folder']))}")
    return out


def _common_title(runs: list[dict]) -> str:
    """What every run shares: scenario, N, M, T, D, overdue (only where all agree)."""
    cfgs = [r["config"]["config"] for r in runs]
    sweeps = set().union(*[set(r["config"].get("sweep") or {}) for r in runs])
    parts = []
    for key, fmt in (("scenario", "{}"), ("devices", "N={}"), ("servers", "M={}"), ("slot_ms", "T={:g} ms"),
                     ("deadline_ms", "D={:g} ms"), ("overdue", "overdue {}")):
        vals = {json.dumps(c.get(key)) for c in cfgs}
        if len(vals) == 1 and key not in sweeps and cfgs[0].get(key) is not None:
            parts.append(fmt.format(cfgs[0][key]))
    pols = list(dict.fromkeys(r["policy"].upper() for r in runs))
    head = pols[0] if len(pols) == 1 else "comparison"
    return f"{head}: {' '.join(parts)}"


if __name__ == "__main__":
    sys.exit(main())
