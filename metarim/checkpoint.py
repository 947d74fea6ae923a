"""Atomic files and checkpoints that are data, not code.

Every write goes to a temporary file in the target folder, is flushed and ``fsync``-ed,
then renamed over the target (``os.replace`` is atomic on POSIX), so a reader — or a
run resumed after ``SIGKILL`` — sees either the old file or the new one, never half a
file. Checkpoints are ``torch.save`` dicts of tensors, numbers, strings, lists and
dicts, read back with ``torch.load(weights_only=True)``; a run keeps the last ``keep``.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> p = save_checkpoint(d, {"algo": "ppo", "step": 3, "w": torch.ones(2)}, step=3)
    >>> p.name, load_checkpoint(latest_checkpoint(d))["step"]
    ('ckpt-00000003.pt', 3)
"""

from __future__ import annotations

import io
import os
import pathlib
import tempfile
from typing import Any

import torch

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]

CKPT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or not ours."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` via a flushed, fsync-ed temp file and a rename."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf8"))


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Complete checkpoints of a run, oldest first (temp files are ignored)."""
    d = pathlib.Path(run_dir) / CKPT_DIR
    return sorted(d.glob("ckpt-*.pt")) if d.is_dir() else []


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> pathlib.Path | None:
    """The newest complete checkpoint, or ``None``."""
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(
    run_dir: str | os.PathLike[str], state: dict[str, Any], *, step: int, keep: int = 2
) -> pathlib.Path:
    """Atomically writes ``state`` as checkpoint ``step`` and keeps the newest ``keep``."""
    d = pathlib.Path(run_dir) / CKPT_DIR
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    path = d / f"ckpt-{step:08d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True``; raises :class:`CheckpointError`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a metarim checkpoint ({type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or "algo" not in state:
        raise CheckpointError(f"checkpoint {path} is not a metarim checkpoint")
    return state
