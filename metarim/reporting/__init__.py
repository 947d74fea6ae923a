"""Tables and figures from results: bootstrap CIs, Welch tests, frames to a threshold,
markdown summaries and learning-curve / module-activity plots (matplotlib on use)."""

from __future__ import annotations

from metarim.reporting.plotting import plot_curves, plot_modules
from metarim.reporting.report import (
           bootstrap_ci,
           finite_or_none,
           frames_to_threshold,
           summarize,
           summary_markdown,
           welch_p,
)

__all__ = ["bootstrap_ci", "finite_or_none", "frames_to_threshold", "plot_curves", "plot_modules", "summarize",
           "summary_markdown", "welch_p"]
