"""Exit profile: accuracy per candidate exit and compute time per exit on each device kind.

JSON format (written by ``profiling.build_profile``, read by ``python -m train.grle --profile``)::

    {
      "exits":   [1, 3, 4, 7, 17],                 # exit numbers of VGG-16 (1..17), increasing
      "acc":     [0.800, 0.850, 0.885, 0.905, 0.935],
      "devices": [{"name": "RTX 2080 Ti", "time_ms": [0.36, 0.46, 0.54, 0.71, 1.26]},
                  {"name": "GTX 1080 Ti", "time_ms": [0.73, 0.89, 1.06, 1.40, 2.42]}],
      "es_map":  [{"device": "RTX 2080 Ti", "scale": 1.0}, ...],   # optional
      "meta":    {...}                                              # optional, free form
    }

ES ``m`` uses ``es_map[m]`` (device name or index, and a time scale factor) when the map is
given, else device column ``m mod len(devices)`` with scale 1 (docs/model.md section 1). With more
ES than ``es_map`` entries the map is cycled the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Profile:
    exits: tuple[int, ...]
    acc: tuple[float, ...]
    device_names: tuple[str, ...]
    time_ms: tuple[tuple[float, ...], ...]  # (devices, E)
    es_map: tuple[tuple[int, float], ...] | None = None  # per ES: (device index, scale)
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        _validate(self)

    @property
    def n_exits(self) -> int:
        return len(self.exits)

    def es_device(self, m: int) -> tuple[int, float]:
        """(device index, time scale) of ES ``m``."""
        if self.es_map:
            return self.es_map[m % len(self.es_map)]
        return (m % len(self.device_names), 1.0)

    def c_matrix(self, servers: int) -> np.ndarray:
        """Nominal compute time ``c[m, e]`` in ms at full capacity, shape (servers, E)."""
        rows = []
        for m in range(servers):
            d, scale = self.es_device(m)
            rows.append([t * scale for t in self.time_ms[d]])
        return np.asarray(rows, dtype=np.float64)

    def acc_array(self) -> np.ndarray:
        return np.asarray(self.acc, dtype=np.float64)

    def to_dict(self) -> dict:
        out = {
            "exits": list(self.exits),
            "acc": list(self.acc),
            "devices": [{"name": n, "time_ms": list(t)} for n, t in zip(self.device_names, self.time_ms)],
        }
        if self.es_map:
            out["es_map"] = [{"device": self.device_names[d], "scale": s} for d, s in self.es_map]
        if self.meta:
            out["meta"] = self.meta
        return out

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @staticmethod
    def from_dict(d, where: str = "profile") -> "Profile":
        if not isinstance(d, dict):
            raise ConfigError(where, "must be a JSON object with exits, acc and devices")
        unknown = sorted(set(d) - set(PROFILE_FIELDS))
        if unknown:  # as Config.from_dict refuses a misspelt field (issue 15)
            raise ConfigError(f"{where}.{unknown[0]}", f"unknown profile field (known: {', '.join(PROFILE_FIELDS)})")
        for key in ("exits", "acc", "devices"):
            if key not in d:
                raise ConfigError(f"{where}.{key}", "missing")
        exits, acc, devices = d["exits"], d["acc"], d["devices"]
        if not isinstance(exits, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in exits):
            raise ConfigError(f"{where}.exits", f"must be a list of integers, got {exits!r}")
        if not isinstance(acc, list) or not all(_is_number(x) for x in acc):
            raise ConfigError(f"{where}.acc", f"must be a list of numbers, got {acc!r}")
        if not isinstance(devices, list) or not devices:
            raise ConfigError(f"{where}.devices", "must be a non-empty list of {name, time_ms}")
        names, times = [], []
        for i, dev in enumerate(devices):
            if not isinstance(dev, dict) or "time_ms" not in dev:
                raise ConfigError(f"{where}.devices[{i}]", "must be an object with name and time_ms")
            t = dev["time_ms"]
            if not isinstance(t, list) or not all(_is_number(x) for x in t):
                raise ConfigError(f"{where}.devices[{i}].time_ms", f"must be a list of numbers, got {t!r}")
            names.append(str(dev.get("name", f"device{i}")))
            times.append(tuple(float(x) for x in t))
        es_map = None
        if d.get("es_map") is not None:
            raw = d["es_map"]
            if not isinstance(raw, list) or not raw:
                raise ConfigError(f"{where}.es_map", "must be a non-empty list of {device, scale}")
            es_map = []
            for i, ent in enumerate(raw):
                if not isinstance(ent, dict) or "device" not in ent:
                    raise ConfigError(f"{where}.es_map[{i}]", "must be an object with device (name or index)")
                dev = ent["device"]
                if isinstance(dev, str):
                    if dev not in names:
                        raise ConfigError(f"{where}.es_map[{i}].device", f"unknown device {dev!r} (have {names})")
                    idx = names.index(dev)
                elif isinstance(dev, int) and not isinstance(dev, bool) and 0 <= dev < len(names):
                    idx = dev
                else:
                    raise ConfigError(f"{where}.es_map[{i}].device", f"must name one of {names}, got {dev!r}")
                scale = ent.get("scale", 1.0)
                if not _is_number(scale) or not (math.isfinite(scale) and scale > 0):
                    raise ConfigError(f"{where}.es_map[{i}].scale", f"must be a positive number, got {scale!r}")
                es_map.append((idx, float(scale)))
            es_map = tuple(es_map)
        meta = d.get("meta") or {}
        return Profile(tuple(exits), tuple(float(a) for a in acc), tuple(names), tuple(times), es_map, meta)

    @staticmethod
    def load(path: str) -> "Profile":
        from .cli import read_json

        return Profile.from_dict(read_json(path, "profile"))


PROFILE_FIELDS = ("exits", "acc", "devices", "es_map", "meta")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _validate(p: Profile) -> None:
    E = len(p.exits)
    if E < 1:
        raise ConfigError("profile.exits", "must hold at least one exit")
    if len(p.acc) != E:
        raise ConfigError("profile.acc", f"has {len(p.acc)} entries but there are {E} exits")
    if any(not (1 <= x <= 17) for x in p.exits):
        raise ConfigError("profile.exits", f"exit numbers must lie in 1..17, got {list(p.exits)}")
    if list(p.exits) != sorted(set(p.exits)):
        raise ConfigError("profile.exits", f"must be strictly increasing, got {list(p.exits)}")
    for e, a in enumerate(p.acc):
        if not math.isfinite(a) or not (0.0 <= a <= 1.0):
            raise ConfigError(f"profile.acc[{e}]", f"must lie in [0, 1], got {a}")
    if not p.device_names:
        raise ConfigError("profile.devices", "must hold at least one device")
    for i, t in enumerate(p.time_ms):
        if len(t) != E:
            raise ConfigError(f"profile.devices[{i}].time_ms", f"has {len(t)} entries but there are {E} exits")
        for e, x in enumerate(t):
            if not math.isfinite(x):
                raise ConfigError(f"profile.devices[{i}].time_ms[{e}]", f"must be finite, got {x}")
            if x <= 0:
                raise ConfigError(f"profile.devices[{i}].time_ms[{e}]", f"must be positive, got {x}")
            if x > 3.4e38:
                raise ConfigError(f"profile.devices[{i}].time_ms[{e}]", f"must be within float32's range, got {x}")


# docs/model.md section 1: the paper's table (VGG-16 on CIFAR-10, exits 1, 3, 4, 7, 17).
DEFAULT_PROFILE = Profile(
    exits=(1, 3, 4, 7, 17),
    acc=(0.800, 0.850, 0.885, 0.905, 0.935),
    device_names=("RTX 2080 Ti", "GTX 1080 Ti"),
    time_ms=((0.36, 0.46, 0.54, 0.71, 1.26), (0.73, 0.89, 1.06, 1.40, 2.42)),
    meta={"source": "GLOBECOM 2022 GRLE paper, Table (docs/model.md section 1)"},
)
