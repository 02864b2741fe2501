"""Figure helpers in the paper's style (matplotlib, no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pclandscape.curvature import spectral_density  # noqa: E402

BP_COLOR = "#1f77b4"
PC_COLOR = "#d62728"
THEORY_COLOR = "black"

__all__ = ["plt", "heatmap", "spectra", "curves", "BP_COLOR", "PC_COLOR", "THEORY_COLOR", "new_figure"]


def new_figure(nrows: int, ncols: int, size=(3.2, 2.8), **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kw)
    return fig, axes


def heatmap(ax, h, title: str = "", normalise: bool = True):
    """A Hessian as a heat map, normalised to [-1, 1] like the paper's Fig 3."""
    h = np.asarray(h, np.float64)
    scale = np.max(np.abs(h)) if normalise and np.max(np.abs(h)) > 0 else 1.0
    im = ax.imshow(h / scale, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def spectra(ax, numeric, theory=None, title: str = "", label_numeric="numerical", label_theory="theory"):
    """Eigenvalue histograms: numerical (bars) against theory (outline)."""
    numeric = np.asarray(numeric, np.float64)
    vals = numeric if theory is None else np.concatenate([numeric, np.asarray(theory)])
    lo, hi = float(vals.min()), float(vals.max())
    pad = 0.05 * max(hi - lo, 1e-3)
    bins = np.linspace(lo - pad, hi + pad, 41)
    ax.hist(numeric, bins=bins, color=PC_COLOR, alpha=0.6, label=label_numeric)
    if theory is not None:
        ax.hist(np.asarray(theory), bins=bins, histtype="step", color=THEORY_COLOR, lw=1.5, label=label_theory)
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("eigenvalue")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def curves(ax, runs: dict, log: bool = True, ylabel: str = "train loss", xlabel: str = "step", colors=None):
    """Mean +- sd over seeds of several named series, each an array ``(seeds, steps)``."""
    colors = colors or {}
    for name, arr in runs.items():
        arr = np.atleast_2d(np.asarray(arr, np.float64))
        mean, sd = np.nanmean(arr, 0), np.nanstd(arr, 0)
        steps = np.arange(arr.shape[1])
        c = colors.get(name)
        ax.plot(steps, mean, label=name, color=c, lw=1.3)
        if arr.shape[0] > 1:
            lo = np.maximum(mean - sd, np.nanmin(arr) if log else -np.inf)
            ax.fill_between(steps, lo, mean + sd, color=c, alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def density(ax, eigenvalues, label, color=None):
    grid, dens = spectral_density(eigenvalues)
    ax.plot(grid, dens, label=label, color=color)
