"""Configuration: one frozen, validated dataclass, split into static shapes and dynamic values.

``Config`` is what users write (JSON, CLI flags). It splits into
- ``EnvStatic``: the sizes that fix array shapes (N, M, E). Hashable, passed to ``jit`` as a
  static argument.
- ``EnvParams``: every value that may vary inside one compiled program (slot length, deadline,
  ranges, probabilities, rho, the ``overdue`` rule, the exit table). A ``flax.struct.dataclass``
  of arrays, so a sweep over any of them is a ``vmap``.

Scenario presets (docs/model.md section 4) fill the ``phi``, ``eps`` and ``csi`` ranges.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import struct

from .errors import ConfigError
from .profile import DEFAULT_PROFILE, Profile

OVERDUE_RULES = ("abort", "keep")

# docs/model.md section 4: the four scenarios. Ranges are (low, high) of a uniform draw.
SCENARIOS: dict[str, dict] = {
    "base": {"phi_range": (1.0, 1.0), "eps_range": (1.0, 1.0), "csi_range": (1.0, 1.0)},
    "capacity": {"phi_range": (0.25, 1.0), "eps_range": (1.0, 1.0), "csi_range": (1.0, 1.0)},
    "inference": {"phi_range": (0.25, 1.0), "eps_range": (0.8, 1.2), "csi_range": (1.0, 1.0)},
    "csi": {"phi_range": (0.25, 1.0), "eps_range": (0.8, 1.2), "csi_range": (0.8, 1.2)},
}

# what the compiled programs hold: int32 indices and counts, float32 values (issue 15)
INT32_MAX = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)

RANGE_FIELDS = ("size_kb", "rate_mbps", "phi_range", "eps_range", "csi_range")
PROB_FIELDS = ("p_link", "p_active")


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Validated on construction; raises ``ConfigError(field, why)``."""

    # --- static: shapes and code paths (changing one recompiles) ------------------------------
    devices: int = 14  # N
    servers: int = 2  # M
    overdue: str = "abort"  # what an overdue task costs: 'abort' or 'keep' (docs/model.md 2, step 7)
    # --- dynamic: environment (vmappable) -----------------------------------------------------
    scenario: str = "base"  # label of the preset the ranges came from
    slot_ms: float = 20.0  # T
    deadline_ms: float = 30.0  # D
    size_kb: tuple[float, float] = (50.0, 100.0)
    rate_mbps: tuple[float, float] = (20.0, 100.0)
    phi_range: tuple[float, float] = (1.0, 1.0)  # available ES capacity, per ES per slot
    eps_range: tuple[float, float] = (1.0, 1.0)  # per-task compute fluctuation
    csi_range: tuple[float, float] = (1.0, 1.0)  # r_hat = r * U(csi_range)
    p_link: float = 1.0
    p_active: float = 1.0
    topology_every: int = 1  # links and activity redrawn every this many slots
    rho: float = 0.0  # late-task penalty weight (eq. 9)

    def __post_init__(self):
        for name in ("size_kb", "rate_mbps", "phi_range", "eps_range", "csi_range"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        check_int("devices", self.devices, 1)
        check_int("servers", self.servers, 1)
        check_int("topology_every", self.topology_every, 1)
        if self.overdue not in OVERDUE_RULES:
            raise ConfigError("overdue", f"must be one of {', '.join(OVERDUE_RULES)}, got {self.overdue!r}")
        check_scenario(self.scenario)
        for name in ("slot_ms", "deadline_ms"):
            _positive(name, getattr(self, name))
        for name in RANGE_FIELDS:
            _range(name, getattr(self, name))
        for name in ("size_kb", "rate_mbps", "phi_range", "eps_range", "csi_range"):
            lo, _ = getattr(self, name)
            if lo <= 0:
                raise ConfigError(name, f"low end must be positive, got {lo}")
        if self.phi_range[1] > 1.0:
            raise ConfigError("phi_range", f"capacity must lie in (0, 1], got high end {self.phi_range[1]}")
        for name in PROB_FIELDS:
            _probability(name, getattr(self, name))
        _finite_at_least("rho", self.rho, 0.0)

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def for_scenario(name: str, **overrides) -> "Config":
        """A config with the scenario preset ``name`` applied, then ``overrides``."""
        fields = dict(SCENARIOS[check_scenario(name)])
        fields.update(overrides)
        return Config(scenario=name, **fields)

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return to_dict(self)

    @staticmethod
    def from_dict(d: dict) -> "Config":
        return from_dict(Config, d, "config")

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @staticmethod
    def load(path: str) -> "Config":
        from .cli import read_json

        return Config.from_dict(read_json(path, "config"))

    # ------------------------------------------------------------------------------------------
    def static(self, profile: Profile = DEFAULT_PROFILE) -> "EnvStatic":
        return EnvStatic(n=self.devices, m=self.servers, e=profile.n_exits)

    def params(self, profile: Profile = DEFAULT_PROFILE) -> "EnvParams":
        return EnvParams.make(self, profile)


class EnvStatic(NamedTuple):
    """Shapes; hashable, a static argument of every jitted function. (The ``overdue`` rule is a
    dynamic value, ``EnvParams.abort``: both rules share one compiled program.)"""

    n: int  # devices
    m: int  # edge servers
    e: int  # candidate exits

    @property
    def options(self) -> int:
        """Number of (ES, exit) options per device."""
        return self.m * self.e


@struct.dataclass
class EnvParams:
    """Dynamic environment values; every leaf may carry a leading vmap axis."""

    slot_ms: jnp.ndarray  # ()
    deadline_ms: jnp.ndarray  # ()
    size_lo: jnp.ndarray  # ()
    size_hi: jnp.ndarray  # ()
    rate_lo: jnp.ndarray  # ()
    rate_hi: jnp.ndarray  # ()
    phi_lo: jnp.ndarray  # ()
    phi_hi: jnp.ndarray  # ()
    eps_lo: jnp.ndarray  # ()
    eps_hi: jnp.ndarray  # ()
    csi_lo: jnp.ndarray  # ()
    csi_hi: jnp.ndarray  # ()
    p_link: jnp.ndarray  # ()
    p_active: jnp.ndarray  # ()
    topology_every: jnp.ndarray  # () int32
    rho: jnp.ndarray  # ()
    abort: jnp.ndarray  # () bool: ``overdue == "abort"`` (docs/model.md section 2, step 7)
    acc: jnp.ndarray  # (E,)
    c: jnp.ndarray  # (M, E) nominal compute time in ms at full capacity

    @staticmethod
    def make(cfg: Config, profile: Profile = DEFAULT_PROFILE) -> "EnvParams":
        f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return EnvParams(
            slot_ms=f(cfg.slot_ms),
            deadline_ms=f(cfg.deadline_ms),
            size_lo=f(cfg.size_kb[0]),
            size_hi=f(cfg.size_kb[1]),
            rate_lo=f(cfg.rate_mbps[0]),
            rate_hi=f(cfg.rate_mbps[1]),
            phi_lo=f(cfg.phi_range[0]),
            phi_hi=f(cfg.phi_range[1]),
            eps_lo=f(cfg.eps_range[0]),
            eps_hi=f(cfg.eps_range[1]),
            csi_lo=f(cfg.csi_range[0]),
            csi_hi=f(cfg.csi_range[1]),
            p_link=f(cfg.p_link),
            p_active=f(cfg.p_active),
            topology_every=jnp.asarray(cfg.topology_every, jnp.int32),
            rho=f(cfg.rho),
            abort=jnp.asarray(cfg.overdue == "abort"),
            acc=f(profile.acc_array()),
            c=f(profile.c_matrix(cfg.servers)),
        )


# --- validation helpers (grle_jax.agent uses them too) ------------------------------------------
def check_scenario(name, field: str = "scenario") -> str:
    """A scenario preset's name (``SCENARIOS``); ``ConfigError(field, why)`` if not."""
    if not isinstance(name, str) or name not in SCENARIOS:
        raise ConfigError(field, f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    return name


def to_dict(obj) -> dict:
    """A config dataclass as a JSON-ready dict (tuples as lists)."""
    d = dataclasses.asdict(obj)
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    return d


def from_dict(cls, d, what: str):
    """``cls(**d)`` for a JSON object ``d``; an unknown key or a non-object is a ``ConfigError``."""
    if not isinstance(d, dict):
        raise ConfigError(what, "must be a JSON object")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(unknown[0], f"unknown {what} field (known: {', '.join(sorted(known))})")
    return cls(**d)


def is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def check_int(name: str, v, lo: int, hi: int = INT32_MAX) -> None:
    """An integer in [lo, hi] (by default what an int32 holds); ``ConfigError(name, why)`` if not."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
        raise ConfigError(name, f"must be an integer, got {v!r}")
    if v < lo:
        raise ConfigError(name, f"must be at least {lo}, got {v}")
    if v > hi:
        raise ConfigError(name, f"must be at most {hi}, got {v}")


def check_float32(name: str, v) -> None:
    """A finite number that float32 holds (|v| <= 3.4e38); ``ConfigError(name, why)`` if not."""
    if not is_num(v) or not math.isfinite(v) or abs(v) > FLOAT32_MAX:
        raise ConfigError(name, f"must be a finite number within float32's range (|x| <= {FLOAT32_MAX:.4g}), "
                                f"got {v!r}")


def _positive(name: str, v) -> None:
    if not is_num(v) or not math.isfinite(v) or v <= 0:
        raise ConfigError(name, f"must be a positive number, got {v!r}")
    check_float32(name, v)


def _finite_at_least(name: str, v, lo: float) -> None:
    if not is_num(v) or not math.isfinite(v) or v < lo:
        raise ConfigError(name, f"must be a finite number >= {lo}, got {v!r}")
    check_float32(name, v)


def _probability(name: str, v) -> None:
    if not is_num(v) or not (0.0 <= v <= 1.0):
        raise ConfigError(name, f"must be a probability in [0, 1], got {v!r}")


def _range(name: str, v) -> None:
    if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(is_num(x) and math.isfinite(x) for x in v):
        raise ConfigError(name, f"must be a pair [low, high] of finite numbers, got {v!r}")
    for x in v:
        check_float32(name, x)
    lo, hi = v
    if lo > hi:
        raise ConfigError(name, f"low {lo} is above high {hi}")
