"""Evaluation of trained policies: success and return with confidence intervals, GIFs,
fast adaptation, zero-shot and easy → hard transfer, RIM module activity, and the
continual-learning metrics of a run trained under a schedule."""

from __future__ import annotations

from metarim.evaluation.adaptation import (
           adaptation_report,
           fast_adaptation,
           module_activity,
           zero_shot,
)
from metarim.evaluation.continual import continual_metrics, continual_report
from metarim.evaluation.evaluate import evaluate, load_run, render
from metarim.evaluation.stats import mean_ci, wilson_interval
from metarim.evaluation.transfer import TRANSFER_FAMILIES, transfer, transfer_report

__all__ = ["TRANSFER_FAMILIES", "adaptation_report", "continual_metrics", "continual_report", "evaluate", "fast_adaptation", "load_run", "mean_ci",
           "module_activity", "render", "transfer", "transfer_report", "wilson_interval", "zero_shot"]
