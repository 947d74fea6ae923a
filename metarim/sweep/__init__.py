"""Sweeps: many (learner, level, seed, hyper-parameter) runs as ordinary run folders.

``metarim sweep``: many runs in parallel, locally or on Ray, resumable and idempotent.
:mod:`~metarim.sweep.spec` expands a sweep file into runs; :func:`run_sweep` trains the
unfinished ones through a backend, :mod:`~metarim.sweep.local` (a process per run) or
:mod:`~metarim.sweep.ray_backend` (a Ray task per run), each of which calls
:func:`~metarim.sweep.run.train_run` (a run's folder state, lock and training) in its
workers; :mod:`~metarim.sweep.report` aggregates the run folders and
:mod:`~metarim.sweep.cli` is ``metarim sweep`` / ``metarim sweep-report``.

``DIR/sweep.json`` lists the runs and ``DIR/sweep-status.json`` the outcome of the last
invocation; each run is the folder ``DIR/runs/<name>/``.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

from metarim.checkpoint import atomic_write_text
from metarim.sweep import local, ray_backend
from metarim.sweep.run import Result, RunLock, check_runs, run_state, train_run
from metarim.sweep.spec import SweepRun, expand_sweep, load_sweep

__all__ = ["BACKENDS", "RunLock", "SweepRun", "check_runs", "expand_sweep", "load_sweep", "run_state",
           "run_sweep", "train_run"]

Backend = Callable[..., bool]

BACKENDS: dict[str, Backend] = {"local": local.run, "ray": ray_backend.run}
"""Backend name → ``run(todo, out, *, address, max_parallel, report) -> finished``."""


def run_sweep(runs: Sequence[SweepRun], out: str | os.PathLike[str], *, backend: str = "local",
              address: str | None = None, max_parallel: int | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Result]:
    """Runs every unfinished run of a sweep; returns ``{name: result}`` (see :func:`train_run`).

    As with any ``multiprocessing`` code, a script that calls this must do so under
    ``if __name__ == "__main__":`` (the local backend's processes import ``__main__``).

    Args:
        runs: from :func:`metarim.sweep.spec.expand_sweep`.
        out: the sweep folder ``DIR``.
        backend: ``local`` (process pool) or ``ray``.
        address: Ray cluster address (``ray`` only; ``None`` starts a local Ray).
        max_parallel: runs at once (default: the CPU count for ``local`` and a local
            Ray, unlimited on a cluster, where Ray's scheduler decides).
        log: progress lines (default: stderr).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {sorted(BACKENDS)}")
    if address is not None and backend != "ray":
        raise ValueError("--address needs --backend ray")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel={max_parallel} must be >= 1")
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = pathlib.Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    listing = {"runs": [r.to_dict() for r in runs]}
    atomic_write_text(out / "sweep.json", json.dumps(listing, indent=1))
    results: dict[str, Result] = {}
    todo = []
    for run in runs:
        state = run_state(out / "runs" / run.name, run.config)
        if state == "done":
            results[run.name] = {"status": "skipped", "error": None, "seconds": 0.0}
        elif state == "conflict":
            results[run.name] = {"status": "failed", "seconds": 0.0, "error":
                                 f"{out / 'runs' / run.name} holds another config or a corrupt run"}
        else:
            todo.append(run)
    say(f"metarim sweep: {len(runs)} runs, {len(runs) - len(todo)} finished or refused, "
        f"{len(todo)} to train on {backend}")
    done = [0]

    def report(run: SweepRun, res: Result) -> None:
        results[run.name] = res
        done[0] += 1
        secs = f" in {res['seconds']:.0f} s" if res.get("seconds") else ""
        err = f": {res['error']}" if res.get("error") else ""
        say(f"[{done[0]}/{len(todo)}] {run.name}: {res['status']}{secs}{err}")

    finished = BACKENDS[backend](todo, out, address=address, max_parallel=max_parallel, report=report)
    for run in todo:
        results.setdefault(run.name, {"status": "not started", "error": None, "seconds": 0.0})
    status = {"finished": finished, "results": {r.name: results[r.name] for r in runs}}
    atomic_write_text(out / "sweep-status.json", json.dumps(status, indent=1))
    return status["results"]
