"""JSON Lines traces (docs/model.md section 7), written on the host from stacked scan records.

Inside the simulator times are float32 and relative to the slot; here they become absolute ms
since the run began, in float64: ``g = t * slot_ms`` and ``absolute = g + relative``.
A queue that is empty at g is written as g (docs/model.md allows g or the earlier time).
"""

from __future__ import annotations

import json
import math

import numpy as np

from .config import Config
from .profile import Profile


def header(cfg: Config, profile: Profile, policy: str, seed: int, extra: dict | None = None) -> dict:
    h = {
        "kind": "header",
        "config": cfg.to_dict(),
        "exits": list(profile.exits),
        "acc": [float(a) for a in profile.acc],
        "c": [[float(x) for x in row] for row in profile.c_matrix(cfg.servers)],
        "policy": policy,
        "seed": int(seed),
    }
    if extra:
        h.update(extra)
    return h


def _f(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def slot_lines(trace: dict, slot_ms: float, n_exits: int) -> list[dict]:
    """Slot records from one chunk's stacked ``rec["trace"]`` (leading axis = slots) and its
    ``reward_observed``."""
    st, inp, opt, out = (jax_to_np(trace[k]) for k in ("state", "inputs", "option", "out"))
    rew_obs = np.asarray(trace["reward_observed"], np.float64)
    lines = []
    for i in range(len(st["t"])):
        t = int(st["t"][i])
        g = t * float(slot_ms)
        has = out["has_task"][i].astype(bool)
        served = out["served"][i].astype(bool)
        o = opt[i].astype(np.int64)
        m = np.where(has & (o >= 0), o // n_exits, -1)
        e = np.where(has & (o >= 0), o % n_exits, -1)

        def absolute(x):
            return [(g + float(v)) if s else None for v, s in zip(x, served)]

        lines.append({
            "kind": "slot",
            "t": t,
            "g": g,
            "s": [float(v) for v in inp["s"][i]],
            "r": [[float(v) for v in row] for row in inp["r"][i]],
            "r_hat": [[float(v) for v in row] for row in inp["r_hat"][i]],
            "phi": [float(v) for v in inp["phi"][i]],
            "eps": [float(v) for v in inp["eps"][i]],
            "L": [[int(v) for v in row] for row in inp["L"][i]],
            "active": [int(v) for v in inp["active"][i]],
            "radio_free_before": [g + float(v) for v in st["radio"][i]],
            "es_free_before": [g + float(v) for v in st["es"][i]],
            "m": [int(v) for v in m],
            "e": [int(v) for v in e],
            "A": absolute(out["A"][i]),
            "S": absolute(out["S"][i]),
            "F": absolute(out["F"][i]),
            "latency": [_f(v) if s else None for v, s in zip(out["latency"][i], served)],
            "ok": [bool(v) for v in out["ok"][i]],
            "acc": [float(v) for v in out["acc"][i]],
            "reward_observed": float(rew_obs[i]),
            "reward_true": float(out["reward"][i]),
        })
    return lines


def jax_to_np(tree):
    """A flax struct / array / dict of arrays -> dict (or array) of numpy arrays."""
    if hasattr(tree, "__dataclass_fields__"):
        return {k: np.asarray(getattr(tree, k)) for k in tree.__dataclass_fields__}
    return np.asarray(tree)


class TraceWriter:
    """Writes the header at open and slot lines chunk by chunk, so long runs stream to disk."""

    def __init__(self, path: str, head: dict):
        self.path = path
        self.f = open(path, "w")
        self.f.write(json.dumps(head) + "\n")
        self.n_exits = len(head["acc"])
        self.slot_ms = float(head["config"]["slot_ms"])

    def write_chunk(self, trace: dict) -> None:
        for line in slot_lines(trace, self.slot_ms, self.n_exits):
            self.f.write(json.dumps(line) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def read(path: str) -> tuple[dict, list[dict]]:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[0], rows[1:]
