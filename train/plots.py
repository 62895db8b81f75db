"""convergence.png: the paper's Fig. 5 for a run folder (normalised reward moving average and the
training loss against the slot), mean over seeds with a 95 % band, one line per grid point."""

from __future__ import annotations

import numpy as np


def _band(x: np.ndarray):
    """Mean and 95 % half-width over axis 0 (runs), ignoring NaN."""
    from .sweep import ci95

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
    return mean, ci95(x, axis=0)


def convergence(path: str, curves: dict, loss: dict, ylabel: str, title: str, slot_ms: float | None = None) -> None:
    """``curves`` and ``loss``: label -> (runs, slots) arrays. Writes a PNG with two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for label, y in curves.items():
        y = np.atleast_2d(y)
        x = np.arange(y.shape[1])
        m, h = _band(y)
        ax1.plot(x, m, lw=1.2, label=label)
        if y.shape[0] > 1:
            ax1.fill_between(x, m - h, m + h, alpha=0.25)
    ax1.set_ylabel(ylabel)
    ax1.grid(alpha=0.3)
    if len(curves) > 1 or any(k for k in curves):
        ax1.legend(fontsize=8, loc="lower right")
    ax1.set_title(title, fontsize=10)
    any_loss = False
    for label, y in loss.items():
        y = np.atleast_2d(y)
        if not np.isfinite(y).any():
            continue
        any_loss = True
        x = np.arange(y.shape[1])
        m, h = _band(y)
        ax2.plot(x, m, lw=1.2, label=label)
        if y.shape[0] > 1:
            ax2.fill_between(x, m - h, m + h, alpha=0.25)
    if not any_loss:
        ax2.text(0.5, 0.5, "no training (fixed policy)", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_ylabel("training loss (masked BCE)")
    ax2.set_xlabel("time slot")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
