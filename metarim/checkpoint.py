"""Atomic files and checkpoints that are data, not code.

Every write goes to a temporary file in the target folder, is flushed and ``fsync``-ed,
then renamed over the target (``os.replace`` is atomic on POSIX), so a reader — or a
run resumed after ``SIGKILL`` — sees either the old file or the new one, never half a
file. Checkpoints are ``torch.save`` dicts of tensors, numbers, strings, lists and
dicts, read back with ``torch.load(weights_only=True)``; a run keeps the last ``keep``,
so that when the newest is damaged (disk error, a copy cut short)
:func:`load_newest_checkpoint` can fall back to the one before it.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> p = save_checkpoint(d, {"algo": "ppo", "step": 3, "w": torch.ones(2)}, step=3)
    >>> p.name, load_checkpoint(latest_checkpoint(d))["step"]
    ('ckpt-00000003.pt', 3)
"""

from __future__ import annotations

import io
import json
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
    "load_newest_checkpoint",
    "read_run_config",
    "save_checkpoint",
]

CKPT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or not ours; ``path`` names it."""

    def __init__(self, message: str, path: pathlib.Path | None = None) -> None:
        super().__init__(message)
        self.path = path


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
    """Atomically writes ``state`` as checkpoint ``step``; keeps it and the ``keep - 1`` before it.

    Only checkpoints older than ``step`` are deleted, so the new one and its
    predecessor always survive, whatever else lies in the folder.
    """
    if keep < 1:
        raise ValueError(f"keep={keep} must be >= 1")
    d = pathlib.Path(run_dir) / CKPT_DIR
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    path = d / f"ckpt-{step:08d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    older = [p for p in list_checkpoints(run_dir) if p.name < path.name]
    for old in older[: len(older) - (keep - 1)]:
        old.unlink()
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads a checkpoint with ``weights_only=True``; raises :class:`CheckpointError`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a metarim checkpoint ({type(e).__name__})", path
        ) from None
    if not isinstance(state, dict) or "algo" not in state:
        raise CheckpointError(f"checkpoint {path} is not a metarim checkpoint", path)
    return state


def load_newest_checkpoint(
    run_dir: str | os.PathLike[str],
) -> tuple[pathlib.Path, dict[str, Any], list[CheckpointError]] | None:
    """The newest checkpoint of a run that loads, skipping damaged newer ones.

    Returns:
        ``None`` when the run has no checkpoint, else ``(path, state, skipped)``:
        the checkpoint used, its state, and the errors of the newer checkpoints that
        did not load (empty when the newest one loads). Nothing is moved or deleted.

    Raises:
        CheckpointError: there are checkpoints and none of them loads (one line
            naming the newest and what is wrong with it).
    """
    skipped: list[CheckpointError] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path), skipped
        except CheckpointError as e:
            skipped.append(e)
    if not skipped:
        return None
    n = len(skipped) - 1
    older = {0: "", 1: ", nor does the one before it"}.get(n, f", nor do the {n} before it")
    raise CheckpointError(f"{skipped[0]}{older}", skipped[0].path)


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a run: ``{"config": {...}, "seeds": ..., ...}``.

    Raises:
        ValueError: the file is missing, unreadable, not JSON, or holds no ``"config"``
            object (one line naming the file and what to do).
    """
    path = pathlib.Path(run_dir) / "config.json"
    fix = f"restore it from a copy, or train again with: metarim train --overwrite --out {run_dir}"
    if not path.is_file():
        raise ValueError(f"{pathlib.Path(run_dir)} is not a metarim run (no config.json)")
    try:
        data = json.loads(path.read_bytes().decode("utf8"))
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is damaged (not UTF-8 text); {fix}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is damaged (not valid JSON: {e.msg}, line {e.lineno}); {fix}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise ValueError(f'{path} is damaged (no "config" object); {fix}')
    return data
