r"""Figures: learning curves with a 95 % band over seeds, and RIM module activity.

matplotlib is imported inside each function with the ``Agg`` backend, so importing
this module is cheap and needs no display.

Learning curves are put on a common frame grid by linear interpolation; at each grid
point the band is the Student-t interval :math:`\bar x \pm t_{n-1, .975}\, s / \sqrt n`
over seeds (no band for one seed).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_curves", "plot_modules"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    curves: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
    path: str | pathlib.Path,
    *,
    ylabel: str = "success rate (last 100 episodes)",
    title: str = "",
    threshold: float | None = 0.8,
) -> None:
    """One line per learner (mean over seeds) with a shaded 95 % interval.

    Args:
        curves: ``{learner: [(frames, values) per seed]}``.
        path: PNG to write.
        ylabel: y-axis label.
        title: figure title.
        threshold: draw a dotted horizontal line there (``None``: none).
    """
    from scipy.stats import t as student

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in curves.items():
        runs = [(np.asarray(f, float), np.asarray(v, float)) for f, v in runs if len(f)]
        if not runs:
            continue
        top = min(f[-1] for f, _ in runs)
        grid = np.linspace(0, top, 100)
        # NaN before a run's first valid point (e.g. before its episode window is full)
        ys = np.stack([np.interp(grid, f[~np.isnan(v)], v[~np.isnan(v)], left=np.nan) if (~np.isnan(v)).any()
                       else np.full_like(grid, np.nan) for f, v in runs])
        mean = ys.mean(0)  # NaN wherever a seed has no value yet: the band needs every seed
        line = ax.plot(grid, mean, label=f"{name} (n={len(runs)})")[0]
        if len(runs) > 1:
            half = student.ppf(0.975, len(runs) - 1) * ys.std(0, ddof=1) / np.sqrt(len(runs))
            ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    if threshold is not None:
        ax.axhline(threshold, ls=":", color="grey")
    ax.set_xlim(left=0)
    ax.set_xlabel("frames")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_modules(activity: Mapping[str, Mapping[str, Any]], path: str | pathlib.Path) -> None:
    """Module activity of each RIM-based learner (one row each).

    Columns: activity per mission object, per mission colour (heat maps, modules on
    the x axis) and over the steps of an episode (one line per module). ``activity``
    maps a learner to :func:`metarim.evaluation.adaptation.module_activity` output.
    """
    plt = _pyplot()
    rows = max(len(activity), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(13, 3.2 * rows), squeeze=False)
    for r, (name, act) in enumerate(activity.items()):
        n = act["num_units"]
        for c, key in enumerate(("by_object", "by_color")):
            ax = axes[r][c]
            words = list(act[key])
            data = np.array([act[key][w] for w in words]) if words else np.zeros((0, n))
            im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_yticks(range(len(words)), words)
            ax.set_xticks(range(n), [f"m{i}" for i in range(n)])
            ax.set_title(f"{name}: activity by mission {key[3:]}", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[r][2]
        steps = np.array(act["by_step"])
        counts = np.array(act["steps"])
        keep = counts >= max(3, 0.05 * counts.max()) if counts.size else counts > 0
        for i in range(n):
            ax.plot(np.flatnonzero(keep), steps[keep, i], label=f"m{i}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step in episode")
        ax.set_title(f"{name}: activity over time", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
