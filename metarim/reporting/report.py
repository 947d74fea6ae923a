r"""Summaries of repeated runs: frames to a threshold, bootstrap intervals, Welch tests.

For each learner and metric the per-seed values :math:`x_1..x_n` are reported as their
mean with a 95 % bootstrap confidence interval (``scipy.stats.bootstrap``, percentile
method over the mean; a point when :math:`n < 2` or all values are equal) and, against a
reference learner (Meta-RIM), Welch's unequal-variance t-test
(``scipy.stats.ttest_ind(equal_var=False)``) on the same values.

Example:
    >>> frames_to_threshold([0, 10, 20, 30], [0.1, 0.5, 0.85, 0.9], 0.8)
    20
    >>> frames_to_threshold([0, 10], [0.1, 0.2], 0.8) is None
    True
    >>> bootstrap_ci([1.0, 1.0])
    (1.0, 1.0, 1.0)
    >>> finite_or_none({"p": float("nan"), "ci": [0.5, float("inf")], "n": 3})
    {'p': None, 'ci': [0.5, None], 'n': 3}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["bootstrap_ci", "finite_or_none", "frames_held_at", "frames_to_threshold", "summary_markdown", "summarize",
           "welch_p"]


def frames_to_threshold(frames: Sequence[float], success: Sequence[float], threshold: float = 0.8) -> int | None:
    """First frame count at which ``success`` reaches ``threshold`` (``None``: never)."""
    for f, s in zip(frames, success):
        if s is not None and not math.isnan(s) and s >= threshold:
            return int(f)
    return None


def frames_held_at(frames: Sequence[float], values: Sequence[float], threshold: float) -> int | None:
    """First frame count from which ``values`` stay at or above ``threshold`` to the end of
    the curve (``None``: the last value is below it, or there is none). Points without a
    value (``None``/NaN, e.g. before the averaging window filled) neither break nor start
    the run. Unlike :func:`frames_to_threshold`, a noisy curve that touches the threshold
    once and falls back does not count.

    Example:
        >>> frames_held_at([1, 2, 3, 4, 5], [0.9, 0.4, 0.8, float("nan"), 0.85], 0.8)
        3
        >>> frames_to_threshold([1, 2, 3, 4, 5], [0.9, 0.4, 0.8, float("nan"), 0.85], 0.8)
        1
        >>> frames_held_at([1, 2], [0.9, 0.7], 0.8) is None
        True
    """
    held: int | None = None
    for f, v in zip(frames, values):
        if v is None or math.isnan(v):
            continue
        if v >= threshold:
            held = int(f) if held is None else held
        else:
            held = None
    return held


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``(mean, low, high)`` with a bootstrap interval of the mean (NaNs dropped)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if len(x) < 2 or np.all(x == x[0]):
        return mean, mean, mean
    from scipy.stats import bootstrap

    res = bootstrap((x,), np.mean, confidence_level=confidence, method="percentile",
                    n_resamples=2000, rng=np.random.default_rng(seed))
    return mean, float(res.confidence_interval.low), float(res.confidence_interval.high)


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (NaN if a side has < 2 values or no variance)."""
    a = [v for v in a if v is not None and not math.isnan(v)]
    b = [v for v in b if v is not None and not math.isnan(v)]
    if len(a) < 2 or len(b) < 2 or (np.var(a) == 0 and np.var(b) == 0):
        return math.nan
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def summarize(per_learner: Mapping[str, Mapping[str, Sequence[float]]], reference: str = "metarim") -> dict[str, Any]:
    """``{learner: {metric: {"values", "mean", "ci95", "welch_p"}}}`` from per-seed values.

    ``welch_p`` is against ``reference`` (absent for the reference itself). A metric with
    ``None`` values (e.g. threshold never reached) keeps them in ``values`` and also
    reports ``"reached"``, the number of seeds with a value.
    """
    out: dict[str, Any] = {}
    ref = per_learner.get(reference, {})
    for learner, metrics in per_learner.items():
        out[learner] = {}
        for name, values in metrics.items():
            vals = [None if v is None else float(v) for v in values]
            clean = [v for v in vals if v is not None]
            mean, lo, hi = bootstrap_ci(clean)
            entry: dict[str, Any] = {"values": vals, "mean": mean, "ci95": [lo, hi],
                                     "reached": len(clean), "n": len(vals)}
            if learner != reference and name in ref:
                entry["welch_p"] = welch_p(clean, [v for v in ref[name] if v is not None])
            out[learner][name] = entry
    return out


def _cell(entry: Mapping[str, Any], *, integer: bool = False) -> str:
    if entry["reached"] == 0:
        return "not reached"
    fmt = (lambda v: f"{v:,.0f}") if integer else (lambda v: f"{v:.2f}")  # noqa: E731
    lo, hi = entry["ci95"]
    text = f"{fmt(entry['mean'])} [{fmt(lo)}, {fmt(hi)}]"
    if entry["reached"] < entry["n"]:
        text += f" ({entry['reached']}/{entry['n']} seeds)"
    p = entry.get("welch_p")
    if p is not None and not math.isnan(p):
        text += f", p={p:.3f}"
    return text


def summary_markdown(summary: Mapping[str, Any], columns: Sequence[tuple[str, str]], *, title: str = "") -> str:
    """A markdown table: one row per learner, one column per ``(metric, header)``.

    Cells read ``mean [95 % bootstrap CI], p=<Welch p vs Meta-RIM>``; frame counts are
    integers and "not reached" means no seed got there.
    """
    lines = [f"## {title}", ""] if title else []
    lines.append("| learner | " + " | ".join(h for _, h in columns) + " |")
    lines.append("|---" * (len(columns) + 1) + "|")
    for learner, metrics in summary.items():
        cells = []
        for name, _ in columns:
            entry = metrics.get(name)
            cells.append("–" if entry is None else _cell(entry, integer=name.startswith(("frames", "train_seconds"))))
        lines.append(f"| {learner} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def finite_or_none(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, ±inf) replaced by ``None``.

    Walks dicts, lists and tuples (tuples become lists); NumPy scalars become Python
    numbers. The result can be written with ``json.dumps(..., allow_nan=False)``, as
    strict JSON that any parser reads (a bare ``NaN`` is not JSON).
    """
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(v) for v in data]
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data
