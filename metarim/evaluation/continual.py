r"""Continual-learning metrics of a run trained under a schedule, from its ``metrics.csv``.

**The success curve.** Row :math:`i = 1..n` of ``metrics.csv`` holds the frames
:math:`f_i` after update :math:`i` (:math:`f_0 = 0`) and ``success_rate`` :math:`s_i`, the
mean success of the last (up to 100) episodes finished by then. Under a schedule the
window is emptied at every phase switch (``Learner.set_phase``), so after a switch it
holds the new phase's episodes only; an empty window (NaN: no episode finished yet)
counts as 0. The curve is the step function :math:`s(f) = s_i` for
:math:`f \in (f_{i-1}, f_i]`, and

.. math:: \bar s(a, b) = \frac{1}{b - a} \int_a^b s(f)\,df
          = \frac{1}{b - a} \sum_i s_i \,\big|(f_{i-1}, f_i] \cap (a, b]\big|

is its mean over :math:`(a, b]`.

**Phases.** Row :math:`i` belongs to the phase of the update it ends,
``schedule.phase_at(f_{i-1})``. Phase :math:`k` runs from :math:`S_k` (the frames at the
start of its first update: its scheduled start rounded up to a whole update) to
:math:`E_k` (the frames after its last update), :math:`L_k = E_k - S_k`.

**Per phase** (:func:`continual_metrics`, ``"phases"``):

* ``auc``: :math:`\mathrm{AUC}_k = \bar s(S_k, E_k)`, the area under the success curve of
  the phase normalised by its length (in :math:`[0, 1]`);
* ``forward_transfer``: :math:`\mathrm{FT}_k = (\mathrm{AUC}_k - \mathrm{AUC}^b_k) /
  (1 - \mathrm{AUC}^b_k)`, where :math:`\mathrm{AUC}^b_k = \bar s^b(0, L_k)` is the same
  area for a reference run trained from scratch on the phase's tasks alone (``scratch``);
  ``None`` without a reference or when :math:`\mathrm{AUC}^b_k = 1`.

**Per switch** into phase :math:`k \ge 1` (``"switches"``), with :math:`W` = ``window``
(10k frames) and :math:`W' = \min(W, L_k)`:

* ``success_before``: :math:`s` at the last row of phase :math:`k-1`;
* ``success_after``: :math:`\bar s(S_k, S_k + W')`, the success over the first :math:`W'`
  frames after the switch;
* ``frames_to_threshold``: :math:`f_i - S_k` for the first row :math:`i` of phase
  :math:`k` with :math:`s_i \ge` ``threshold`` (0.8); ``frames_to_before``: the same with
  :math:`s_i \ge` ``success_before`` (back to the pre-switch level); ``None``: not
  reached in the phase. Only rows whose window holds at least ``min_episodes`` (20)
  episodes of the phase count (when the curve has the ``episodes`` column): right after
  a switch the window holds the first one or two finished episodes, and their mean can
  be 1.0 by chance.

**Forgetting** when a phase comes back (``"forgetting"``): for a phase :math:`k` whose
task distribution equals that of an earlier phase :math:`j` (the latest such),
:math:`F = s_{end}(j) - \bar s(S_k, S_k + W')`, the success at the end of phase :math:`j`
minus the success over the first :math:`W'` frames of its return.

References:
    Wołczyk, Zając, Pascanu, Kuciński, Miłoś. "Continual World: A Robotic Benchmark For
    Continual Reinforcement Learning". NeurIPS 2021. arXiv:2105.10919. Their definitions:
    :math:`\mathrm{AUC}_i = \frac{1}{\Delta}\int_{(i-1)\Delta}^{i\Delta} p_i(t)\,dt`,
    :math:`\mathrm{FT}_i = (\mathrm{AUC}_i - \mathrm{AUC}^b_i)/(1 - \mathrm{AUC}^b_i)` and
    :math:`F_i = p_i(i\Delta) - p_i(T)`, with :math:`p_i(t)` the success on task
    :math:`i` at time :math:`t`. What differs here: (1) :math:`p_i` is measured by a
    separate evaluation there; here it is the success of the training episodes (the
    learner's stochastic policy, a 100-episode window), so the curve lags the policy;
    (2) their phases all last :math:`\Delta`; here each AUC is normalised by its own
    phase's length; (3) their forgetting compares the end of task :math:`i`'s phase with
    the end of all training (:math:`T`); here it compares it with the phase's *return*,
    measured on the first :math:`W'` frames of the returning phase rather than by a
    separate evaluation: those frames already re-learn, so :math:`F` under-states the
    loss at the return (:math:`W \to` one update approaches the loss itself, noisier);
    (4) the reference :math:`\mathrm{AUC}^b` comes from a run folder trained on the
    phase's tasks without a schedule, over its first :math:`L_k` frames.

Example:
    >>> f = np.array([100., 200., 300., 400.])
    >>> s = np.array([0.2, np.nan, 0.5, 1.0])
    >>> area_under(f, s, 0, 400), area_under(f, s, 150, 350)
    (0.425, 0.5)
    >>> frames_to_reach(f, s, 100, 400, 0.5)
    200.0
"""

from __future__ import annotations

import csv
import os
import pathlib
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from metarim.checkpoint import read_run_config
from metarim.tasks.schedule import Schedule

__all__ = [
    "area_under",
    "continual_metrics",
    "continual_report",
    "episode_counts",
    "forward_transfer",
    "frames_to_reach",
    "phase_rows",
    "success_curve",
    "window_sizes",
]

Curve = tuple[np.ndarray, np.ndarray]
Reference = Union[str, "os.PathLike[str]", Curve]


def _metrics_rows(run: str | os.PathLike[str]) -> list[dict[str, str]]:
    path = pathlib.Path(run) / "metrics.csv"
    if not path.is_file():
        raise ValueError(f"{run} has no metrics.csv (train it first)")
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"frames", "success_rate"} <= set(rows[0]):
        raise ValueError(f"{path} has no frames/success_rate columns")
    return rows


def _curve(rows: list[dict[str, str]]) -> Curve:
    return (np.array([float(r["frames"]) for r in rows]), np.array([float(r["success_rate"]) for r in rows]))


def _episodes(rows: list[dict[str, str]]) -> np.ndarray | None:
    if not rows or "episodes" not in rows[0]:
        return None
    return np.array([float(r["episodes"]) for r in rows])


def success_curve(run: str | os.PathLike[str]) -> Curve:
    """``(frames, success_rate)`` of a run's ``metrics.csv``, one entry per row (NaN kept).

    Raises:
        ValueError: the run has no ``metrics.csv`` or it lacks those columns.
    """
    return _curve(_metrics_rows(run))


def episode_counts(run: str | os.PathLike[str]) -> np.ndarray | None:
    """The ``episodes`` column of a run's ``metrics.csv`` (episodes finished in each
    update), or ``None`` if it has none.

    Raises:
        ValueError: as :func:`success_curve`.
    """
    return _episodes(_metrics_rows(run))


def _clean(success: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(success, dtype=float), nan=0.0)


def area_under(frames: np.ndarray, success: np.ndarray, start: float, end: float) -> float:
    r"""Mean of the step curve :math:`s(f) = s_i` on :math:`(f_{i-1}, f_i]` over
    :math:`(\text{start}, \text{end}]` (NaN counts as 0): :math:`\bar s(a, b)`."""
    if not end > start:
        raise ValueError(f"area_under: end={end} must be > start={start}")
    f = np.asarray(frames, dtype=float)
    lo = np.concatenate([[0.0], f[:-1]])
    overlap = np.clip(np.minimum(f, end) - np.maximum(lo, start), 0.0, None)
    return float((_clean(success) * overlap).sum() / (end - start))


def frames_to_reach(frames: np.ndarray, success: np.ndarray, start: float, end: float, level: float,
                    valid: np.ndarray | None = None) -> float | None:
    """Frames after ``start`` at the end of the first update in ``(start, end]`` whose
    success is at least ``level`` (NaN counts as 0), among the rows where ``valid`` is
    true (default: all); ``None`` if none is."""
    f, s = np.asarray(frames, dtype=float), _clean(success)
    ok = np.ones(f.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    hit = np.flatnonzero((f > start) & (f <= end) & (s >= level) & ok)
    return float(f[hit[0]] - start) if hit.size else None


def window_sizes(episodes: np.ndarray, phases: np.ndarray, capacity: int = 100) -> np.ndarray:
    """Episodes in the success window after each row: the episodes finished since the
    row's phase began (the window is emptied at a switch), at most ``capacity``.

    Example:
        >>> window_sizes(np.array([3, 5, 2, 4]), np.array([0, 0, 1, 1]), capacity=6)
        array([3, 6, 2, 6])
    """
    e = np.asarray(episodes, dtype=float)
    out = np.zeros(e.shape, dtype=np.int64)
    for k in np.unique(phases):
        idx = np.flatnonzero(phases == k)
        out[idx] = np.minimum(np.cumsum(e[idx]), capacity)
    return out


def phase_rows(frames: np.ndarray, schedule: Schedule) -> np.ndarray:
    """The phase of each row: ``schedule.phase_at`` of the frames its update started at."""
    starts = np.concatenate([[0.0], np.asarray(frames, dtype=float)[:-1]])
    return np.array([schedule.phase_at(int(x)) for x in starts], dtype=np.int64)


def forward_transfer(auc: float, auc_scratch: float) -> float | None:
    r""":math:`(\mathrm{AUC} - \mathrm{AUC}^b) / (1 - \mathrm{AUC}^b)`; ``None`` when
    :math:`\mathrm{AUC}^b = 1` (nothing left to transfer).

    Example:
        >>> forward_transfer(0.75, 0.5)
        0.5
    """
    return None if auc_scratch >= 1.0 else float((auc - auc_scratch) / (1.0 - auc_scratch))


def continual_metrics(
    frames: np.ndarray, success: np.ndarray, schedule: Schedule, *,
    scratch: Mapping[int | str, Curve] | None = None, window: int = 10_000, threshold: float = 0.8,
    episodes: np.ndarray | None = None, min_episodes: int = 20,
) -> dict[str, Any]:
    """Per-phase, per-switch and forgetting metrics of one success curve (module docstring).

    Args:
        frames: the frame counts of the run's curve (:func:`success_curve`).
        success: its success rates.
        schedule: the run's schedule.
        scratch: reference curves trained from scratch, by phase index or phase name
            (``Phase.name``: the level id of a one-level phase); a phase without one gets
            ``forward_transfer=None``.
        window: :math:`W`, frames after a switch for ``success_after`` and forgetting.
        threshold: the success level of ``frames_to_threshold``.
        episodes: the episodes finished in each row's update (``metrics.csv``'s
            ``episodes``); with it, the recovery frames count only rows whose window
            holds at least ``min_episodes`` of the phase's episodes.
        min_episodes: see ``episodes``.

    Returns:
        ``{"phases": [...], "switches": [...], "forgetting": [...], "window", "threshold"}``;
        phases the run never reached are left out.

    Raises:
        ValueError: a reference curve is shorter than its phase.
    """
    f = np.asarray(frames, dtype=float)
    s = np.asarray(success, dtype=float)
    which = phase_rows(f, schedule)
    valid = None if episodes is None else window_sizes(episodes, which) >= min_episodes
    scratch = scratch or {}
    spans: dict[int, tuple[float, float, int]] = {}  # phase -> (S_k, E_k, last row)
    for k in range(len(schedule.phases)):
        idx = np.flatnonzero(which == k)
        if idx.size:
            spans[k] = (float(f[idx[0] - 1]) if idx[0] else 0.0, float(f[idx[-1]]), int(idx[-1]))
    phases, switches, forgetting = [], [], []
    after: dict[int, float] = {}
    for k, (lo, hi, _) in spans.items():
        p = schedule.phases[k]
        auc = area_under(f, s, lo, hi)
        ref = scratch.get(k, scratch.get(p.name))
        auc_b = ft = None
        if ref is not None:
            rf, rs = np.asarray(ref[0], dtype=float), np.asarray(ref[1], dtype=float)
            if not rf.size or rf[-1] < hi - lo:
                got = rf[-1] if rf.size else 0
                raise ValueError(f"the scratch run of phase {k} ({p.name}) has {got:.0f} frames, fewer than the "
                                 f"phase's {hi - lo:.0f}; train it for at least that many")
            auc_b = area_under(rf, rs, 0.0, hi - lo)
            ft = forward_transfer(auc, auc_b)
        phases.append({"phase": k, "name": p.name, "start": lo, "end": hi, "auc": auc, "auc_scratch": auc_b,
                       "forward_transfer": ft})
        after[k] = area_under(f, s, lo, lo + min(window, hi - lo))
        if k - 1 in spans:
            before = float(_clean(s[spans[k - 1][2]]))
            switches.append({
                "to": k, "name": p.name, "frames": lo, "success_before": before, "success_after": after[k],
                "frames_to_threshold": frames_to_reach(f, s, lo, hi, threshold, valid),
                "frames_to_before": frames_to_reach(f, s, lo, hi, before, valid),
            })
        earlier = [j for j in spans if j < k and schedule.same_tasks(j, k)]
        if earlier:
            j = earlier[-1]
            end_j = float(_clean(s[spans[j][2]]))
            forgetting.append({"phase": j, "returns_in": k, "name": p.name, "success_end": end_j,
                               "success_return": after[k], "forgetting": end_j - after[k]})
    return {"phases": phases, "switches": switches, "forgetting": forgetting, "window": window,
            "threshold": threshold, "min_episodes": None if episodes is None else min_episodes}


def continual_report(
    run: str | os.PathLike[str], *, scratch: Mapping[int | str, Reference] | None = None,
    window: int = 10_000, threshold: float = 0.8, min_episodes: int = 20,
) -> dict[str, Any]:
    """:func:`continual_metrics` of a run folder trained under a schedule.

    Args:
        run: the run folder (its ``config.json`` holds the schedule).
        scratch: reference runs trained from scratch (run folders, or ``(frames,
            success)`` curves), by phase index or phase name.
        window: as :func:`continual_metrics`.
        threshold: as :func:`continual_metrics`.
        min_episodes: as :func:`continual_metrics` (the run's ``episodes`` column).

    Raises:
        ValueError: the run was not trained under a schedule, or a folder is not a run.
    """
    config = read_run_config(run)["config"]
    if config.get("schedule") is None:
        raise ValueError(f"{run} was trained without a schedule (metarim train --schedule FILE)")
    refs = {k: (v if isinstance(v, tuple) else success_curve(v)) for k, v in (scratch or {}).items()}
    rows = _metrics_rows(run)
    frames, success = _curve(rows)
    out = continual_metrics(frames, success, Schedule.from_dict(config["schedule"]), scratch=refs,
                            window=window, threshold=threshold, episodes=_episodes(rows),
                            min_episodes=min_episodes)
    return {"run": str(run), **out}
