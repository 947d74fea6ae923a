"""Evaluation of trained policies: success and return with confidence intervals, GIFs,
fast adaptation, zero-shot transfer and RIM module activity."""

from __future__ import annotations

from metarim.evaluation.adaptation import (
           adaptation_report,
           fast_adaptation,
           module_activity,
           zero_shot,
)
from metarim.evaluation.evaluate import evaluate, load_run, render
from metarim.evaluation.stats import mean_ci, wilson_interval

__all__ = ["adaptation_report", "evaluate", "fast_adaptation", "load_run", "mean_ci", "module_activity",
           "render", "wilson_interval", "zero_shot"]
