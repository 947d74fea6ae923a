"""Worker processes of the env package, and the pipes to talk to them.

A worker is a fresh ``python`` process that runs one function ``main(rfd, wfd)`` of a
metarim module (:func:`spawn_worker`); the parent and the worker exchange length-prefixed
pickles (:func:`send`, :func:`recv`) over two pipes. Nothing is forked from a process that
holds torch threads, and the caller's ``__main__`` is not re-imported as
``multiprocessing``'s spawn would. A worker stops when it reads EOF: :class:`WorkerPool`
closes the pipes and reaps its workers on ``close()`` or when it is garbage-collected.
Ctrl-C reaches the whole process group; workers ignore it, so that the parent can still
use them (a training run writes a final checkpoint) before it closes the pipes.

Used by :mod:`metarim.envs.worker` and :mod:`metarim.envs.tensor.prefetch`.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerPool", "read", "ready", "recv", "send", "serve", "shutdown", "spawn_worker"]

_HEADER = struct.Struct("<Q")


def send(fd: int, obj: Any) -> None:
    """Writes ``obj`` as an 8-byte length and its pickle."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read(fd: int, n: int) -> bytes:
    """Reads exactly ``n`` bytes; ``EOFError`` if the other end closed first."""
    chunks, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError("worker pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv(fd: int) -> Any:
    """Reads one object written by :func:`send`."""
    (n,) = _HEADER.unpack(read(fd, _HEADER.size))
    return pickle.loads(read(fd, n))


def ready(fd: int) -> bool:
    """Whether ``fd`` can be read without blocking."""
    return bool(select.select([fd], [], [], 0)[0])


def spawn_worker(main: Callable[[int, int], None]) -> tuple[int, int, subprocess.Popen]:
    """Starts a process that runs ``main(rfd, wfd)`` (see :func:`serve`).

    ``main`` must be a module-level function of an importable module; the worker imports
    it the way this process imports metarim (same ``sys.path``).

    Returns:
        ``(read fd, write fd, process)``: the parent's ends of the two pipes.
    """
    target = f"{main.__module__}:{main.__qualname__}"
    r_child, w_parent = os.pipe()
    r_parent, w_child = os.pipe()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = f"from {__name__} import serve; serve()"
    proc = subprocess.Popen([sys.executable, "-c", code, target, str(r_child), str(w_child)],
                            pass_fds=(r_child, w_child), stdin=subprocess.DEVNULL, env=env)
    os.close(r_child)
    os.close(w_child)
    return r_parent, w_parent, proc


def serve() -> None:
    """A worker's entry point: ``sys.argv[1:]`` is ``module:function RFD WFD``.

    Ignores Ctrl-C (see module docstring) and runs the function on the two pipe ends.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    target, rfd, wfd = sys.argv[1:4]
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(int(rfd), int(wfd))


def shutdown(conns: list[tuple[int, int]], procs: list[subprocess.Popen]) -> None:
    """Closes the pipes (each worker then sees EOF and exits) and reaps the workers."""
    for rfd, wfd in conns:
        os.close(wfd)
        os.close(rfd)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerPool:
    """``count`` workers running ``main``, stopped by :meth:`close` or garbage collection.

    Args:
        main: the workers' function (see :func:`spawn_worker`).
        count: number of workers, ``>= 1``.

    Attributes:
        conns: ``(read fd, write fd)`` of each worker, the parent's ends.
        procs: the worker processes.
    """

    def __init__(self, main: Callable[[int, int], None], count: int) -> None:
        if count < 1:
            raise ValueError(f"count={count} must be >= 1")
        self.conns: list[tuple[int, int]] = []
        self.procs: list[subprocess.Popen] = []
        # registered first, so that the workers started before a failure are stopped too
        self._finalizer = weakref.finalize(self, shutdown, self.conns, self.procs)
        for _ in range(count):
            rfd, wfd, proc = spawn_worker(main)
            self.conns.append((rfd, wfd))
            self.procs.append(proc)

    def close(self) -> None:
        """Stops the workers (a second call does nothing)."""
        self._finalizer()
