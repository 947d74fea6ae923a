"""Sweeps: many (learner, level, seed, hyper-parameter) runs as ordinary run folders.

:mod:`~metarim.sweep.spec` expands a sweep file into runs, :mod:`~metarim.sweep.run`
trains them (locally or on Ray), :mod:`~metarim.sweep.report` aggregates them and
:mod:`~metarim.sweep.cli` is ``metarim sweep`` / ``metarim sweep-report``.
"""

from __future__ import annotations

from metarim.sweep.run import RunLock, check_runs, run_state, run_sweep, train_run
from metarim.sweep.spec import SweepRun, expand_sweep, load_sweep

__all__ = ["RunLock", "SweepRun", "check_runs", "expand_sweep", "load_sweep", "run_state", "run_sweep",
           "train_run"]
