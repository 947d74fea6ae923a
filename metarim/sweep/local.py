"""The ``local`` backend of ``metarim sweep``: one fresh process per run on this machine.

At most ``max_parallel`` runs train at a time, each in its own process started by a
``forkserver``; a process that raises or dies (even by a signal) fails only its own run.
Ctrl-C stops starting runs and lets the running ones checkpoint and stop; a second Ctrl-C
terminates them.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import pathlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from metarim.sweep.run import Result, train_run
from metarim.sweep.spec import SweepRun

__all__ = ["run"]


def _child(conn: Any, config: dict[str, Any], folder: str, lock: str) -> None:
    import torch

    torch.set_num_threads(1)
    conn.send(train_run(config, folder, lock=lock))
    conn.close()


def run(todo: Sequence[SweepRun], out: pathlib.Path, *, address: str | None = None,
        max_parallel: int | None = None, report: Callable[[SweepRun, Result], None]) -> bool:
    """Trains ``todo``, one fresh process per run; returns ``False`` if interrupted by Ctrl-C.

    Args:
        todo: the runs to train.
        out: the sweep folder ``DIR``.
        address: must be ``None`` (a Ray setting; here for the common backend signature).
        max_parallel: processes at once (default: the CPU count).
        report: called with each run and its :func:`~metarim.sweep.run.train_run`
            result as it finishes.

    Processes are forked by a ``forkserver`` that has imported the training code once
    (no torch threads run in it), so a run starts in milliseconds rather than seconds.
    """
    if address is not None:
        raise ValueError("--address needs --backend ray")
    max_parallel = max_parallel or os.cpu_count() or 1
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["metarim.sweep.local", "metarim.train"])
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
                job = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_child, name=f"metarim-sweep-{job.name}", daemon=False,
                                args=(send, job.config, str(out / "runs" / job.name),
                                      str(out / ".locks" / f"{job.name}.lock")))
                p.start()
                send.close()
                running[p.sentinel] = (p, recv, job)
            if stopping[0] and not announced:
                announced = True
                print("metarim: sweep interrupted; waiting for running runs to checkpoint "
                      "(Ctrl-C again to kill them)", file=sys.stderr)
            if not running:
                break
            # a timeout, so that a Ctrl-C during the wait is announced without delay
            for sentinel in mp.connection.wait(list(running), timeout=0.5):
                p, recv, job = running.pop(sentinel)
                p.join()
                try:
                    res = recv.recv()
                except (EOFError, OSError):  # it died before it could answer
                    res = {"status": "failed", "error": f"worker process died (exit code {p.exitcode})",
                           "seconds": None}
                recv.close()
                report(job, res)
    except KeyboardInterrupt:  # second Ctrl-C: stop now
        for p, _, _ in running.values():
            p.terminate()
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, old)
    return not stopping[0]
