"""What a run leaves in ``--out DIR``: config.json, metrics.csv, summary.json."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import platform

import numpy as np

from grle_jax.metrics import moving, summarise

PACKAGES = ("grle_jax", "jax", "jaxlib", "flax", "optax", "jraph", "chex", "orbax-checkpoint", "numpy", "matplotlib")


OUTPUT_ROOTS = ("runs", "results")  # git-ignored folders of this project's outputs, created when missing


def make_output_root(path: str) -> None:
    """Create ``runs/`` or ``results/`` (relative to the current folder) when ``path`` lies directly
    in one of them and it does not exist yet, so the documented ``--out runs/NAME`` works in a fresh
    clone; any other missing parent stays an error of the caller."""
    parent = os.path.dirname(os.path.normpath(path))
    if parent in OUTPUT_ROOTS and not os.path.exists(parent):
        os.makedirs(parent, exist_ok=True)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def device_kind() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{d.device_kind}"


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if x != x else x
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_metrics_csv(path: str, counts: dict, slot_ms: float, window: int = 50, extra: dict | None = None) -> None:
    """One row per slot (of one run): the slot's own figures and the trailing-window metrics.
    ``extra`` adds per-slot columns (name -> array over slots)."""
    mv = moving(counts, slot_ms, window)
    n = len(np.asarray(counts["tasks"]))
    cols = {
        "slot": np.arange(n),
        "reward": np.asarray(counts["reward"], np.float64),
        "tasks": np.asarray(counts["tasks"], np.float64),
        "on_time": np.asarray(counts["on_time"], np.float64),
        "acc_sum": np.asarray(counts["acc_sum"], np.float64),
    }
    if "reward_observed" in counts:
        cols["reward_observed"] = np.asarray(counts["reward_observed"], np.float64)
    for k, v in mv.items():
        cols[f"{k}_ma{window}"] = v
    for k, v in (extra or {}).items():
        cols[k] = np.asarray(v)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        for i in range(n):
            w.writerow([_cell(cols[k][i]) for k in cols])
    os.replace(tmp, path)


def _cell(v):
    if isinstance(v, (np.integer, int)):
        return int(v)
    v = float(v)
    return "" if v != v else repr(v)


def run_summary(counts: dict, slot_ms: float) -> dict:
    s = summarise(counts, slot_ms)
    return {k: (float(v) if np.ndim(v) == 0 else v) for k, v in s.items()}
