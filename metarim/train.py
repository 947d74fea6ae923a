"""The training loop behind ``metarim train``: run folder, metrics, checkpoints.

A run folder holds ``config.json`` (config, seeds, library versions), ``vocab.json``,
``metrics.csv`` (one row per learner step, first column ``updates``) and
``checkpoints/ckpt-*.pt`` (the last two, written atomically). On ``--resume`` the newest
checkpoint that loads is used and ``metrics.csv`` is cut back to the rows it covers, so
a run killed at any moment continues without missing or duplicated rows (a run killed
before its first checkpoint starts over). A damaged newer checkpoint is renamed to
``ckpt-*.pt.corrupt`` (kept, never deleted) and the run resumes from the one before it,
saying so on stderr; when no checkpoint loads, nothing in the folder changes. ``SIGINT``
stops after the current step with a final checkpoint; a non-finite loss or gradient
stops before the parameters change and leaves the last good checkpoint in place.

Under a schedule (``config.schedule``, :mod:`metarim.tasks.schedule`) the loop calls
``Learner.follow_schedule`` before each update, so the phase of an update is the one its
starting frame count falls in, and ``metrics.csv`` gains a ``schedule_phase`` column.
"""

from __future__ import annotations

import json
import pathlib
import platform
import random
import signal
import sys
from typing import Any

import numpy as np
import torch

from metarim.algorithms import make_learner
from metarim.checkpoint import (
    CheckpointError,
    atomic_write_text,
    latest_checkpoint,
    load_newest_checkpoint,
    read_run_config,
    save_checkpoint,
)
from metarim.config import TrainConfig

__all__ = ["Trainer", "csv_column", "versions"]


def csv_column(key: str) -> str:
    """Metric key → CSV column: ``rollout/x`` and ``time/x`` → ``x``, ``losses/x`` → ``loss_x``."""
    group, _, name = key.rpartition("/")
    return {"rollout": name, "time": name, "losses": f"loss_{name}", "": name}.get(group, key.replace("/", "_"))


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on."""
    import gymnasium
    import minigrid

    from metarim._version import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "gymnasium": gymnasium.__version__,
            "minigrid": minigrid.__version__, "metarim": __version__}


class Trainer:
    """Prepares a run folder and a learner; :meth:`run` trains to ``config.frames``.

    Construction does all the checking (and raises ``ValueError`` on bad input) before
    the folder is touched; :meth:`run` only trains.
    """

    def __init__(
        self, config: TrainConfig, out: pathlib.Path, *, resume: bool = False,
        progress: bool = True, tensorboard: Any = None,
    ) -> None:
        self.config, self.out, self.progress = config, pathlib.Path(out), progress
        found = None
        if resume:
            try:
                found = load_newest_checkpoint(self.out)
            except CheckpointError as e:
                raise CheckpointError(f"{e}; nothing was changed (to start over instead, train "
                                      f"again with --overwrite)", e.path) from None
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)
        torch.set_num_threads(config.threads)
        self.learner = make_learner(config)
        try:
            self._prepare_folder(found, resume)
            self.writer = tensorboard(log_dir=str(self.out)) if tensorboard else None
        except BaseException:
            self.learner.close()
            raise
        self.interrupted = False

    def _prepare_folder(
        self, found: tuple[pathlib.Path, dict[str, Any], list[CheckpointError]] | None, resume: bool
    ) -> None:
        """Restores the checkpoint ``found`` (or starts afresh) and writes the run files."""
        config = self.config
        self.metrics_path = self.out / "metrics.csv"
        if found is not None:
            ckpt, state, skipped = found
            self.learner.load_state_dict(state)
            random.setstate(_tuple(state["py_rng"]))
            if skipped:
                self._set_aside(skipped, ckpt)
            self._truncate_metrics(self.learner.updates)
        elif resume:  # killed before its first checkpoint: start over in the same folder
            print(f"metarim: {self.out} has no checkpoint yet; starting from the beginning", file=sys.stderr)
            self._truncate_metrics(0)
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            meta = {"config": config.to_dict(), "seeds": {"python": config.seed, "numpy": config.seed,
                    "torch": config.seed, "envs": config.seed}, "versions": versions(),
                    "command": sys.argv}
            atomic_write_text(self.out / "config.json", json.dumps(meta, indent=2))
        data = read_run_config(self.out)
        if data["config"]["frames"] != config.frames:
            data["config"]["frames"] = config.frames
            atomic_write_text(self.out / "config.json", json.dumps(data, indent=2))
        atomic_write_text(self.out / "vocab.json", json.dumps(self.learner.vocab.to_dict()))

    def _set_aside(self, skipped: list[CheckpointError], used: pathlib.Path) -> None:
        """Renames damaged checkpoints newer than ``used`` to ``*.corrupt`` and says so."""
        kept = []
        for e in skipped:
            if e.path is not None and e.path.is_file():
                aside, n = e.path.with_name(e.path.name + ".corrupt"), 1
                while aside.exists():  # an earlier one of the same step stays too
                    n += 1
                    aside = e.path.with_name(f"{e.path.name}.corrupt-{n}")
                e.path.rename(aside)
                kept.append(aside.name)
        print(f"metarim: {'; '.join(str(e) for e in skipped)}; resuming from {used.name}"
              + (f" (kept as {', '.join(kept)})" if kept else ""), file=sys.stderr)

    def _truncate_metrics(self, updates: int) -> None:
        if not self.metrics_path.is_file():
            return
        lines = self.metrics_path.read_text().splitlines(keepends=True)
        keep = lines[:1] + [ln for ln in lines[1:] if ln.endswith("\n") and int(ln.split(",")[0]) <= updates]
        atomic_write_text(self.metrics_path, "".join(keep))

    def checkpoint(self) -> pathlib.Path:
        """Atomically saves the learner's state and the Python RNG."""
        state = self.learner.state_dict()
        state["py_rng"] = list(random.getstate())
        return save_checkpoint(self.out, state, step=self.learner.updates)

    def _write_row(self, metrics: dict[str, float]) -> None:
        new = not self.metrics_path.is_file() or self.metrics_path.stat().st_size == 0
        if new:
            self.columns = ["updates", *[csv_column(k) for k in metrics]]
            self.metrics_path.write_text(",".join(self.columns) + "\n")
        elif not hasattr(self, "columns"):
            self.columns = self.metrics_path.read_text().splitlines()[0].split(",")
        row = {"updates": float(self.learner.updates), **{csv_column(k): v for k, v in metrics.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(",".join(str(int(row["updates"])) if c == "updates" else repr(float(row.get(c, "nan")))
                             for c in self.columns) + "\n")
            f.flush()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupted = True

    def run(self) -> int:
        """Trains until ``config.frames``; returns the exit status (130 on Ctrl-C)."""
        from tqdm import tqdm

        c, learner = self.config, self.learner
        old = signal.signal(signal.SIGINT, self._on_sigint)
        bar = tqdm(total=c.frames, initial=learner.frames, unit="frame", disable=not self.progress,
                   file=sys.stderr, dynamic_ncols=True)
        try:
            while learner.frames < c.frames and not self.interrupted:
                before = learner.frames
                learner.follow_schedule()  # a schedule's phase switch, before the update it governs
                try:
                    m = learner.step()
                except FloatingPointError as e:
                    last = latest_checkpoint(self.out)
                    print(f"metarim: error: {e}; stopped before the update, last good checkpoint: {last}",
                          file=sys.stderr)
                    return 1
                if learner.schedule is not None:
                    m["schedule/phase"] = float(learner.phase)
                self._write_row(m)
                if self.writer is not None:
                    for k, v in m.items():
                        self.writer.add_scalar(k, v, learner.frames)
                bar.update(learner.frames - before)
                bar.set_postfix(fps=f"{m.get('time/fps', 0):.0f}", ret=f"{m.get('rollout/return_mean', 0):.2f}",
                                success=f"{m.get('rollout/success_rate', 0):.2f}")
                if learner.updates % c.checkpoint_every == 0:
                    self.checkpoint()
            self.checkpoint()
        finally:
            bar.close()
            signal.signal(signal.SIGINT, old)
            if self.writer is not None:
                self.writer.close()
            learner.close()
        if self.interrupted:
            print(f"metarim: interrupted at {learner.frames} frames; resume with: "
                  f"metarim train --resume --out {self.out}", file=sys.stderr)
            return 130
        return 0


def _tuple(x: Any) -> Any:
    return tuple(_tuple(v) for v in x) if isinstance(x, list) else x
