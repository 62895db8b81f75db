"""Statistics over runs (seeds): the 95 % confidence interval of a mean. numpy only, so the
plotting CLI (``train.plots``) imports it without JAX."""

from __future__ import annotations

import warnings

import numpy as np


def ci95(x, axis: int = 0) -> np.ndarray:
    """Half-width of the 95 % confidence interval of the mean (Student t), NaN ignored; 0 for one value."""
    x = np.asarray(x, np.float64)
    n = np.sum(np.isfinite(x), axis=axis)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(x, axis=axis, ddof=1) if x.shape[axis] > 1 else np.zeros(np.delete(x.shape, axis))
    try:
        # Student t's quantile: scipy.stats.t.ppf computes it with this function (the same values);
        # scipy.special imports in a fraction of scipy.stats' time, and a ufunc call costs microseconds
        from scipy.special import stdtrit

        q = np.where(n > 1, stdtrit(np.maximum(n - 1, 1), 0.975), 0.0)
    except ImportError:  # pragma: no cover
        q = np.where(n > 1, 1.96, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1, q * sd / np.sqrt(np.maximum(n, 1)), 0.0)


def mean_ci(values) -> dict:
    """Mean, 95 % interval half-width, count and values of one metric over the seeds."""
    v = np.asarray(values, np.float64)
    mean = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return {"mean": mean, "ci95": float(ci95(v[:, None], axis=0)[0]), "n": int(np.isfinite(v).sum()),
            "values": [float(x) for x in v]}
