"""``metarim sweep``: many runs in parallel, locally or on Ray, resumable and idempotent.

Each run of a sweep (:mod:`metarim.sweep.spec`) is an ordinary run folder
``DIR/runs/<name>/``, written by :class:`~metarim.train.Trainer` exactly as
``metarim train --config`` would write it. ``DIR/sweep.json`` lists the runs and
``DIR/sweep-status.json`` the outcome of the last invocation.

Before a run starts its folder is classified (:func:`run_state`): ``done`` (its latest
checkpoint has reached ``frames``: skipped), ``partial`` (resumed from the checkpoint),
``new`` (trained from scratch; a folder without a checkpoint is cleared first) or
``conflict`` (another config lives there: reported, never overwritten). A run is guarded
by an exclusive ``flock`` on ``DIR/.locks/<name>.lock``, held by the process that
writes the folder, so two sweeps on the same ``DIR`` never train the same run at once;
the kernel drops the lock when its holder dies, so there are no stale locks.

Backends: ``local`` starts one fresh process per run (forkserver), at most ``max_parallel`` at a
time; a process that raises or dies (even by a signal) fails only its own run.
``ray``: see :mod:`metarim.sweep.ray_backend`.

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
import multiprocessing as mp
import multiprocessing.connection
import os
import pathlib
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from metarim.sweep.spec import SweepRun

__all__ = ["RunLock", "check_runs", "run_state", "run_sweep", "train_run"]

Result = dict[str, Any]


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
        # through TrainConfig, so that a field added since the run was saved takes its
        # default instead of making every older run a conflict
        saved = TrainConfig.from_dict(json.loads((folder / "config.json").read_text())["config"]).to_dict()
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
    """Refuses unknown learners, memory cores and levels before anything starts."""
    from metarim.algorithms import LEARNERS
    from metarim.envs.minigrid import check_level
    from metarim.rl.memory import MEMORY_CORES

    for run in runs:
        c = run.config
        if c["algo"] not in LEARNERS:
            raise ValueError(f"sweep: run {run.name}: unknown algo {c['algo']!r}; choose one of {sorted(LEARNERS)}")
        if c["memory"] not in MEMORY_CORES:
            raise ValueError(f"sweep: run {run.name}: unknown memory {c['memory']!r}; "
                             f"choose one of {sorted(MEMORY_CORES)}")
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


def _child(conn: Any, config: dict[str, Any], folder: str, lock: str) -> None:
    import torch

    torch.set_num_threads(1)
    conn.send(train_run(config, folder, lock=lock))
    conn.close()


def _run_local(todo: Sequence[SweepRun], out: pathlib.Path, max_parallel: int,
               report: Callable[[SweepRun, Result], None]) -> bool:
    """One fresh process per run; returns ``False`` if interrupted by Ctrl-C.

    Processes are forked by a ``forkserver`` that has imported the training code once
    (no torch threads run in it), so a run starts in milliseconds rather than seconds.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["metarim.sweep.run", "metarim.train"])
    pending, running = list(todo), {}
    # Ctrl-C sets a flag rather than raising KeyboardInterrupt wherever the main thread is:
    # an exception raised inside a finaliser (a pipe's or a process handle's __del__) is
    # printed and dropped, and the sweep would go on starting runs. The second one raises.
    stopping, announced = [False], False

    def on_sigint(signum: int, frame: Any) -> None:
        if stopping[0]:
            raise KeyboardInterrupt
        stopping[0] = True

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        while running or (pending and not stopping[0]):
            while pending and not stopping[0] and len(running) < max_parallel:
                run = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_child, name=f"metarim-sweep-{run.name}", daemon=False,
                                args=(send, run.config, str(out / "runs" / run.name),
                                      str(out / ".locks" / f"{run.name}.lock")))
                p.start()
                send.close()
                running[p.sentinel] = (p, recv, run)
            if stopping[0] and not announced:
                announced = True
                print("metarim: sweep interrupted; waiting for running runs to checkpoint "
                      "(Ctrl-C again to kill them)", file=sys.stderr)
            if not running:
                break
            # a timeout, so that a Ctrl-C during the wait is announced without delay
            for sentinel in mp.connection.wait(list(running), timeout=0.5):
                p, recv, run = running.pop(sentinel)
                p.join()
                try:
                    res = recv.recv()
                except (EOFError, OSError):  # it died before it could answer
                    res = {"status": "failed", "error": f"worker process died (exit code {p.exitcode})",
                           "seconds": None}
                recv.close()
                report(run, res)
    except KeyboardInterrupt:  # second Ctrl-C: stop now
        for p, _, _ in running.values():
            p.terminate()
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, old)
    return not stopping[0]


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
    if backend not in ("local", "ray"):
        raise ValueError(f"backend={backend!r} must be 'local' or 'ray'")
    if address is not None and backend != "ray":
        raise ValueError("--address needs --backend ray")
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"max_parallel={max_parallel} must be >= 1")
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    from metarim.checkpoint import atomic_write_text

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

    if backend == "local":
        finished = _run_local(todo, out, max_parallel or os.cpu_count() or 1, report)
    else:
        from metarim.sweep.ray_backend import run_ray

        finished = run_ray(todo, out, address=address, max_parallel=max_parallel, report=report)
    for run in todo:
        results.setdefault(run.name, {"status": "not started", "error": None, "seconds": 0.0})
    status = {"finished": finished, "results": {r.name: results[r.name] for r in runs}}
    atomic_write_text(out / "sweep-status.json", json.dumps(status, indent=1))
    return status["results"]
