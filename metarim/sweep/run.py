"""One run of a sweep: its folder's state, its lock and its training, whatever the backend.

Each run of a sweep (:mod:`metarim.sweep.spec`) is an ordinary run folder
``DIR/runs/<name>/``, written by :class:`~metarim.train.Trainer` exactly as
``metarim train --config`` would write it.

Before a run starts its folder is classified (:func:`run_state`): ``done`` (its latest
checkpoint has reached ``frames``: skipped), ``partial`` (resumed from the checkpoint),
``new`` (trained from scratch; a folder without a checkpoint is cleared first) or
``conflict`` (another config lives there: reported, never overwritten). A run is guarded
by an exclusive ``flock`` on ``DIR/.locks/<name>.lock`` (:class:`RunLock`), held by the
process that writes the folder, so two sweeps on the same ``DIR`` never train the same
run at once; the kernel drops the lock when its holder dies, so there are no stale locks.

:func:`train_run` does all of this for one run and never raises; the backends
(:mod:`metarim.sweep.local`, :mod:`metarim.sweep.ray_backend`) call it in their workers.

Example:
    >>> from metarim.sweep.spec import expand_sweep
    >>> import tempfile
    >>> run = expand_sweep({"learners": {"lstm": {}}, "seeds": [0]})[0]
    >>> run_state(pathlib.Path(tempfile.mkdtemp()) / run.name, run.config)
    'new'
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import shutil
import time
import traceback
from collections.abc import Sequence
from typing import Any

from metarim.sweep.spec import SweepRun

__all__ = ["Result", "RunLock", "check_runs", "run_state", "train_run"]

Result = dict[str, Any]
"""What :func:`train_run` returns (``status``, ``error``, ``seconds``, ...)."""


class RunLock:
    """Non-blocking exclusive ``flock`` on a file; ``acquired`` says whether we hold it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        self.fd: int | None = None
        self.acquired = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.acquired = True
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.uname().nodename} {os.getpid()}\n".encode())
        except BlockingIOError:
            self.acquired = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
        self.acquired = False


def run_state(folder: pathlib.Path, config: dict[str, Any]) -> str:
    """``new``, ``partial``, ``done`` or ``conflict`` (see the module docstring)."""
    from metarim.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

    if not folder.is_dir() or not any(folder.iterdir()):
        return "new"
    from metarim.config import TrainConfig

    try:
        # through TrainConfig, so that a field added since the run was saved takes the
        # value that reproduces the old run (config.LEGACY): it matches a config that
        # asks for that value, and conflicts with one that asks for another
        saved = TrainConfig.from_dict(json.loads((folder / "config.json").read_text())["config"],
                                      legacy=True).to_dict()
    except (OSError, ValueError, KeyError, TypeError):
        return "conflict"
    if {k: v for k, v in saved.items() if k != "frames"} != {k: v for k, v in config.items() if k != "frames"}:
        return "conflict"
    ckpt = latest_checkpoint(folder)
    if ckpt is None:
        return "new"
    try:
        frames = int(load_checkpoint(ckpt)["frames"])
    except (CheckpointError, KeyError):
        return "conflict"
    return "done" if frames >= config["frames"] else "partial"


def check_runs(runs: Sequence[SweepRun]) -> None:
    """Refuses unknown learners, memory cores, settings a learner does not support
    (``Learner.check_config``) and unknown levels before anything starts."""
    from metarim.algorithms import LEARNERS
    from metarim.config import TrainConfig
    from metarim.envs.minigrid import check_level
    from metarim.rl.memory import MEMORY_CORES

    for run in runs:
        c = run.config
        if c["algo"] not in LEARNERS:
            raise ValueError(f"sweep: run {run.name}: unknown algo {c['algo']!r}; choose one of {sorted(LEARNERS)}")
        if c["memory"] not in MEMORY_CORES:
            raise ValueError(f"sweep: run {run.name}: unknown memory {c['memory']!r}; "
                             f"choose one of {sorted(MEMORY_CORES)}")
        try:
            LEARNERS[c["algo"]].check_config(TrainConfig.from_dict(c))
        except ValueError as e:
            raise ValueError(f"sweep: run {run.name}: {e}") from None
    for level in sorted({r.config["env"] for r in runs}):
        check_level(level)


def train_run(config: dict[str, Any], folder: str | os.PathLike[str], *,
              lock: str | os.PathLike[str] | None = None) -> Result:
    """Trains one run to completion in ``folder``; never raises.

    Holds ``lock`` (when given) for the whole run, skips a finished run, resumes a
    partial one and refuses a folder that holds another config.

    Returns:
        ``{"status": "done" | "skipped" | "busy" | "failed" | "interrupted",
        "error": str | None, "seconds": float, "frames": int | None}``.
    """
    t0 = time.perf_counter()
    folder = pathlib.Path(folder)
    res: Result = {"status": "failed", "error": None, "seconds": 0.0}
    lk = RunLock(lock) if lock is not None else None
    try:
        if lk is not None and not lk.__enter__().acquired:
            return {**res, "status": "busy", "error": "another process holds the run's lock"}
        state = run_state(folder, config)
        if state == "conflict":
            res["error"] = f"{folder} holds another config or a corrupt run; move it away to rerun"
        elif state == "done":
            res["status"] = "skipped"
        else:
            from metarim.config import TrainConfig
            from metarim.train import Trainer

            if state == "new" and folder.exists():
                shutil.rmtree(folder)  # our config, no checkpoint yet: start clean
            code = Trainer(TrainConfig.from_dict(config), folder, resume=state == "partial", progress=False).run()
            res["status"] = {0: "done", 130: "interrupted"}.get(code, "failed")
            if code not in (0, 130):
                res["error"] = f"training stopped with status {code} (non-finite loss?)"
    except Exception as e:  # a failed run is reported, never fatal to the sweep
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    finally:
        if lk is not None:
            lk.__exit__()
    return {**res, "seconds": time.perf_counter() - t0}

