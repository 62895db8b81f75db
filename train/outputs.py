"""What a run leaves in ``--out DIR``: config.json, metrics.csv, summary.json."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform

import numpy as np


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


def save_figure(fig, path: str, **kwargs) -> None:
    """``fig.savefig`` to a temporary name beside ``path``, then renamed into place: a killed run
    never leaves a half-written figure (docs/reliability.md)."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    fig.savefig(tmp, **kwargs)
    os.replace(tmp, path)
