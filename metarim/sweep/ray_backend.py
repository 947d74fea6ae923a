"""The ``ray`` backend of ``metarim sweep``: one Ray core task per run.

What goes to a worker: the run's config (a dict) and, when the run folder already holds
a partial run, that folder as a gzipped tar (a few hundred kB: config, metrics and the
last two checkpoints). The task trains in a temporary folder on its node with
:func:`metarim.sweep.run.train_run` and returns its result together with the finished folder
as a tar, through Ray's object store; the driver unpacks it into ``DIR/runs/<name>/``
(into a sibling folder first, then renamed into place). So the cluster needs no shared
file system, only the same Python packages (``metarim``, torch, minigrid) on each node.

The driver holds the run's lock while its task is in flight. Tasks ask for one CPU
(``num_cpus=1``) and are never retried by Ray (``max_retries=0``): a failed run is
reported and is retried by the next ``metarim sweep``. Ray core tasks rather than Ray
Tune: a sweep here is a fixed list of independent runs with their own checkpointing and
run folders; Tune's trial schedulers, search algorithms and result folders would add a
second layout that ``metarim train`` does not write.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import metarim._version
from metarim.sweep.run import Result, RunLock, train_run
from metarim.sweep.spec import SweepRun

__all__ = ["pack_folder", "run", "unpack_folder"]

EXTRA = "pip install 'metarim[ray]'"


def pack_folder(folder: pathlib.Path) -> bytes:
    """The folder's files as an in-memory ``tar.gz`` (temporary ``.tmp`` files left out)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buf.getvalue()


def unpack_folder(data: bytes, folder: pathlib.Path) -> None:
    """Replaces ``folder`` by the tar's contents, renaming a complete copy into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    new = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.incoming-"))
    umask = os.umask(0)
    os.umask(umask)
    new.chmod(0o777 & ~umask)  # as a plain mkdir would make it, not mkdtemp's 0700
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(new, filter="data")
    old = None
    if folder.exists():
        old = pathlib.Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
        os.replace(folder, old / "run")
    os.replace(new, folder)
    if old is not None:
        shutil.rmtree(old)


def _task(config: dict[str, Any], name: str, data: bytes | None, argv: list[str]) -> Result:
    """Runs on a Ray worker: unpack, train, pack (``config.json`` records the driver's ``argv``)."""
    import torch

    torch.set_num_threads(1)
    saved, sys.argv[:] = list(sys.argv), argv  # what a spawned local worker inherits too
    try:
        with tempfile.TemporaryDirectory(prefix="metarim-sweep-") as tmp:
            folder = pathlib.Path(tmp) / name
            if data is not None:
                unpack_folder(data, folder)
            res = train_run(config, folder)
            res["node"] = os.uname().nodename
            res["folder"] = pack_folder(folder) if (folder / "config.json").is_file() else None
    finally:
        sys.argv[:] = saved
    return res


def _init(ray: Any, address: str | None, max_parallel: int | None) -> None:
    if ray.is_initialized():
        return
    if address is not None:
        # ship this metarim (the package folder) to the cluster, so its workers run the
        # driver's version
        package = str(pathlib.Path(metarim._version.__file__).parent)
        ray.init(address=address, runtime_env={"py_modules": [package]}, log_to_driver=True)
    else:
        ray.init(num_cpus=max_parallel or os.cpu_count() or 1, include_dashboard=False)


def run(todo: Sequence[SweepRun], out: pathlib.Path, *, address: str | None = None,
        max_parallel: int | None = None, report: Callable[[SweepRun, Result], None]) -> bool:
    """Trains ``todo`` as Ray tasks; returns ``False`` if interrupted by Ctrl-C.

    Args:
        todo: the runs to train.
        out: the sweep folder ``DIR``.
        address: Ray cluster address (``None`` starts a local Ray for the sweep).
        max_parallel: tasks at once (default: the CPU count on a local Ray; on a
            cluster, every run, and Ray's scheduler decides).
        report: called with each run and its :func:`~metarim.sweep.run.train_run`
            result as it finishes.

    Raises:
        ValueError: Ray is not installed (the message names the extra) or cannot connect.
    """
    try:
        import ray
    except ImportError:
        raise ValueError(f"--backend ray needs the optional extra: {EXTRA}") from None
    started = not ray.is_initialized()
    try:
        _init(ray, address, max_parallel)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ValueError(f"cannot start or reach Ray at {address or 'a local instance'}: {e}") from None
    task = ray.remote(num_cpus=1, max_retries=0)(_task)
    limit = max_parallel or len(todo) or 1
    pending, inflight = list(todo), {}
    try:
        while pending or inflight:
            while pending and len(inflight) < limit:
                job = pending.pop(0)
                folder = out / "runs" / job.name
                lock = RunLock(out / ".locks" / f"{job.name}.lock").__enter__()
                if not lock.acquired:
                    report(job, {"status": "busy", "error": "another process holds the run's lock", "seconds": 0.0})
                    continue
                data = pack_folder(folder) if (folder / "config.json").is_file() else None
                inflight[task.remote(job.config, job.name, data, sys.argv)] = (job, lock)
            if not inflight:
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1)
            job, lock = inflight.pop(ready[0])
            try:
                res = ray.get(ready[0])
            except Exception as e:  # the task or its worker died
                res = {"status": "failed", "error": f"ray task failed: {type(e).__name__}: {e}", "seconds": None}
            data = res.pop("folder", None)
            if data is not None:
                unpack_folder(data, out / "runs" / job.name)
            lock.__exit__()
            report(job, res)
    except KeyboardInterrupt:
        for ref, (_run, lock) in inflight.items():
            ray.cancel(ref, force=True)
            lock.__exit__()
        print("metarim: sweep interrupted; in-flight Ray runs were cancelled "
              "(a rerun starts them from their last returned state)", file=sys.stderr)
        return False
    finally:
        if started:
            ray.shutdown()
    return True
