"""Metrics over a run (docs/model.md section 3).

Per slot the scan records four counts (``slot_counts``); every metric over a run or a moving
window is a ratio of sums of them, so they are exact however the run is chunked:
- SSP = on-time tasks / all tasks;
- average accuracy = sum of achieved accuracy / all tasks;
- throughput = on-time tasks per second of simulated time, and per slot;
- mean reward = mean of R per slot.
A window with no task has SSP and accuracy NaN (nothing to measure).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .dynamics import in_order
from .types import Outcome

COUNT_KEYS = ("tasks", "on_time", "acc_sum", "reward")

FINAL_FRACTION = 0.1  # "final" metrics: the last 10 % of the slots ...
FINAL_MIN = 50  # ... and at least 50 slots (all of a shorter run)
FINAL_WINDOW_TEXT = "the last 10 % of the slots, at least 50 (all of a shorter run)"


def final_window(slots: int) -> int:
    """The number of slots every ``final_*`` metric is computed over, in every command
    (train.grle, train.experiments, benchmarks.policy_quality, train.plots): the last 10 % of a
    run's slots, at least 50 (all of a run shorter than 50)."""
    slots = int(slots)
    return max(min(FINAL_MIN, slots), slots // 10)


def slot_counts(out: Outcome) -> dict:
    """The per-slot sums every metric is built from (jnp scalars; works under vmap/scan)."""
    return {
        "tasks": jnp.sum(out.has_task.astype(jnp.float32)),
        "on_time": jnp.sum(out.ok.astype(jnp.float32)),
        "acc_sum": in_order(out.acc, axis=-1),  # a float sum: in one fixed order (dynamics.in_order)
        "reward": out.reward,
    }


def _ratio(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def summarise(counts: dict, slot_ms: float, axis: int = -1) -> dict:
    """Run-level metrics from stacked per-slot counts (time along ``axis``); leading axes kept."""
    tasks = np.sum(np.asarray(counts["tasks"], np.float64), axis=axis)
    on_time = np.sum(np.asarray(counts["on_time"], np.float64), axis=axis)
    acc = np.sum(np.asarray(counts["acc_sum"], np.float64), axis=axis)
    slots = np.shape(counts["tasks"])[axis]
    return {
        "slots": slots,
        "tasks": tasks,
        "ssp": _ratio(on_time, tasks),
        "avg_accuracy": _ratio(acc, tasks),
        "throughput_per_s": on_time / (slots * slot_ms / 1000.0),
        "throughput_per_slot": on_time / slots,
        "mean_reward": np.mean(np.asarray(counts["reward"], np.float64), axis=axis),
    }


def window_sum(x, window: int) -> np.ndarray:
    """Trailing sum over the last ``window`` slots (fewer at the start), along the last axis."""
    x = np.asarray(x, np.float64)
    c = np.cumsum(x, axis=-1)
    shifted = np.zeros_like(c)
    if window < x.shape[-1]:
        shifted[..., window:] = c[..., :-window]
    return c - shifted


def moving(counts: dict, slot_ms: float, window: int = 50) -> dict:
    """Moving-window metrics per slot (trailing window; the first slots use what exists)."""
    n = np.shape(counts["tasks"])[-1]
    length = np.minimum(np.arange(1, n + 1), window)
    tasks = window_sum(counts["tasks"], window)
    on_time = window_sum(counts["on_time"], window)
    return {
        "ssp": _ratio(on_time, tasks),
        "avg_accuracy": _ratio(window_sum(counts["acc_sum"], window), tasks),
        "throughput_per_s": on_time / (length * slot_ms / 1000.0),
        "throughput_per_slot": on_time / length,
        "mean_reward": window_sum(counts["reward"], window) / length,
    }


def normalised_reward(reward, reward_oracle) -> np.ndarray:
    """Eq. 17 per slot: R(x_t) / R(x*_t), 1 where R(x*_t) = 0 (defined for rho = 0)."""
    r = np.asarray(reward, np.float64)
    o = np.asarray(reward_oracle, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(o > 0, r / np.where(o > 0, o, 1.0), 1.0)


def moving_mean(x, window: int = 50) -> np.ndarray:
    """Trailing mean over the last ``window`` slots (fewer at the start), along the last axis.
    NaN marks a slot without a value (the oracle not run there): it is left out of every window,
    and a window with no value at all is NaN (a NaN never spreads to the slots after it)."""
    x = np.asarray(x, np.float64)
    have = np.isfinite(x)
    count = window_sum(have, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, window_sum(np.where(have, x, 0.0), window) / np.maximum(count, 1), np.nan)
