"""``metarim sweep-report DIR``: run folders → ``summary.md``, ``summary.json``, ``curves.png``.

The same tables and figures as ``examples/gotolocal_meta.py``
(:mod:`metarim.reporting.report`, :mod:`metarim.reporting.plotting`), one row and one curve per group (a
learner at one level and grid point, over its seeds). Per run, from ``metrics.csv``:

* the success curve: ``success_rate`` against ``frames``, counted once ``window``
  training episodes have been seen (the rate is over the last 100 episodes);
* ``frames_to_<threshold>``: the first frame count at which it reaches ``threshold``;
  ``frames_to_return_<threshold>`` the same for the return curve (``return_mean``, the
  last 100 episodes' mean return), which keeps rising after the success saturates;
* ``final_success`` / ``final_return``: mean over the last tenth of the curve;
* ``train_seconds``: the run's collection and update seconds (``collect_s + update_s``
  summed over its rows, or each row's frames over its ``fps`` where the learner logs
  only that; wall-clock, so read it with the machine's load).

A run folder may also hold ``measurements.json``, ``{metric: number}`` (e.g. fast
adaptation results written by an evaluation script); each metric becomes a column.
Cells: mean over seeds [95 % bootstrap CI], Welch p against the reference group.
``summary.json`` is strict JSON: a number that is not finite (a Welch p with one seed, a
metric never reached) is ``null``.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import re
from collections.abc import Sequence
from typing import Any

from metarim.reporting.plotting import plot_curves
from metarim.reporting.report import (
    finite_or_none,
    frames_to_threshold,
    summarize,
    summary_markdown,
)

__all__ = ["REFERENCE_ALGO", "curve_metrics", "read_runs", "sweep_report", "training_seconds"]

REFERENCE_ALGO = "metarim"
"""The learner (``config["algo"]`` of a run) whose group is the default reference of
the Welch tests: the method the comparisons are about."""


def curve_metrics(frames: Sequence[float], success: Sequence[float], returns: Sequence[float],
                  episodes: Sequence[float], *, window: int = 100, threshold: float = 0.8) -> dict[str, Any]:
    """Curves and scalar metrics of one run (values before ``window`` episodes are NaN).

    Example:
        >>> m = curve_metrics([10, 20, 30], [0.5, 0.9, 1.0], [0.1, 0.2, 0.3], [50, 60, 5])
        >>> s = m["success"]
        >>> m["frames_to_0.8"], m["final_success"], s[0]
        (20, 1.0, nan)
    """
    seen, total = [], 0.0
    for n in episodes:
        total += n
        seen.append(total)
    s = [v if n >= window else math.nan for v, n in zip(success, seen)]
    r = [v if n >= window else math.nan for v, n in zip(returns, seen)]

    def tail(xs: list[float]) -> float | None:
        vals = [v for v in xs[-max(1, len(xs) // 10):] if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else None

    return {"frames": list(frames), "success": s, "returns": r,
            f"frames_to_{threshold:g}": frames_to_threshold(frames, s, threshold),
            f"frames_to_return_{threshold:g}": frames_to_threshold(frames, r, threshold),
            "final_success": tail(s), "final_return": tail(r)}


def training_seconds(rows: list[dict[str, str]]) -> float | None:
    """Training wall seconds of ``metrics.csv`` rows: ``collect_s + update_s`` summed, or,
    for learners that log only ``fps`` (MAML, Reptile), each row's new frames over its
    ``fps``; ``None`` without either.

    Example:
        >>> training_seconds([{"frames": "100", "fps": "50"}, {"frames": "300", "fps": "100"}])
        4.0
    """
    if rows and "collect_s" in rows[0]:
        return sum(float(r["collect_s"] or 0.0) + float(r["update_s"] or 0.0) for r in rows)
    if rows and "fps" in rows[0]:
        before, total = 0.0, 0.0
        for r in rows:
            total += (float(r["frames"]) - before) / float(r["fps"])
            before = float(r["frames"])
        return total
    return None


def read_runs(folder: str | pathlib.Path, *, max_frames: float | None = None) -> list[dict[str, Any]]:
    """Every run folder under ``folder/runs`` with a ``metrics.csv``: name, group, config, columns.

    ``max_frames`` keeps each run's rows up to that many frames, so that runs trained for
    different budgets (or one still training) compare at the same budget."""
    folder = pathlib.Path(folder)
    groups = {}
    if (folder / "sweep.json").is_file():
        groups = {r["name"]: r["group"] for r in json.loads((folder / "sweep.json").read_text())["runs"]}
    runs = []
    for run in sorted(p for p in (folder / "runs").glob("*") if (p / "metrics.csv").is_file()):
        with open(run / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if max_frames is None or float(r["frames"]) <= max_frames]
        if not rows:
            continue
        cols = {k: [float(r[k]) for r in rows] for k in ("frames", "success_rate", "return_mean", "episodes")}
        seconds = training_seconds(rows)
        config = json.loads((run / "config.json").read_text())["config"]
        extra = json.loads((run / "measurements.json").read_text()) if (run / "measurements.json").is_file() else {}
        group = groups.get(run.name, re.sub(r"-s\d+$", "", run.name))
        runs.append({"name": run.name, "group": group, "config": config, "columns": cols, "measurements": extra,
                     "train_seconds": seconds,
                     "complete": cols["frames"][-1] >= min(config["frames"], max_frames or math.inf)})
    return runs


def sweep_report(folder: str | pathlib.Path, *, window: int = 100, threshold: float = 0.8,
                 reference: str | None = None, max_frames: float | None = None) -> dict[str, Any]:
    """Writes ``summary.md``, ``summary.json`` and ``curves.png`` into ``folder``; returns the summary.

    Args:
        folder: a sweep folder (``runs/<name>/`` below it).
        window: episodes before a run's success rate counts.
        threshold: success rate of ``frames_to_<threshold>``.
        reference: group for the Welch tests (default: the group of the first run whose
            learner is :data:`REFERENCE_ALGO`, else the first group).
        max_frames: cut every curve at this many frames (see :func:`read_runs`); the
            final success is then the success at that budget.

    Raises:
        ValueError: no run folder with metrics below ``folder/runs``.
    """
    folder = pathlib.Path(folder)
    runs = read_runs(folder, max_frames=max_frames)
    if not runs:
        raise ValueError(f"{folder} holds no run with metrics (expected {folder}/runs/<name>/metrics.csv)")
    per: dict[str, dict[str, list[Any]]] = {}
    curves: dict[str, list[tuple[list[float], list[float]]]] = {}
    key = f"frames_to_{threshold:g}"
    extra_cols: list[str] = []
    for r in runs:
        c = r["columns"]
        m = curve_metrics(c["frames"], c["success_rate"], c["return_mean"], c["episodes"],
                          window=window, threshold=threshold)
        d = per.setdefault(r["group"], {})
        for name in (key, f"frames_to_return_{threshold:g}", "final_success", "final_return"):
            d.setdefault(name, []).append(m[name])
        d.setdefault("train_seconds", []).append(r["train_seconds"])
        for name, v in r["measurements"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                d.setdefault(name, []).append(float(v))
                extra_cols += [name] if name not in extra_cols else []
        curves.setdefault(r["group"], []).append((m["frames"], m["success"]))
    if reference is None:
        reference = next((r["group"] for r in runs if r["config"].get("algo") == REFERENCE_ALGO), next(iter(per)))
    summary = summarize(per, reference=reference)
    cols = [(key, f"frames to {threshold:g}"), (f"frames_to_return_{threshold:g}", f"frames to return {threshold:g}"),
            ("final_success", "final success"), ("final_return", "final return")]
    cols += [(n, n) for n in extra_cols] + [("train_seconds", "training s")]
    levels = sorted({r["config"]["env"] for r in runs})
    unfinished = sum(not r["complete"] for r in runs)
    md = summary_markdown(summary, cols, title=f"Sweep {folder.name} ({', '.join(levels)})")
    cut = "" if max_frames is None else f"curves cut at {max_frames:,.0f} frames; "
    md += (f"\n{len(runs)} runs ({unfinished} unfinished) in {len(per)} groups; {cut}"
           f"cells: mean over seeds [95 % bootstrap CI], p = Welch t-test against {reference}.\n"
           f"Success is the training success rate over the last 100 episodes, counted once "
           f"{window} episodes have been seen; final = mean over the last tenth of the curve.\n")
    (folder / "summary.md").write_text(md)
    data = {"reference": reference, "window": window, "threshold": threshold, "max_frames": max_frames,
            "summary": summary,
            "runs": [{k: v for k, v in r.items() if k != "columns"} for r in runs]}
    # strict JSON: NaN (no Welch test, no value yet) is written as null
    (folder / "summary.json").write_text(json.dumps(finite_or_none(data), indent=1, default=float, allow_nan=False))
    plot_curves(curves, folder / "curves.png", title=f"{', '.join(levels)}", threshold=threshold)
    return data
