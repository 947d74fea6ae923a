"""Sweep files: learners × levels × hyper-parameter grid × seeds → named run configs.

A sweep file is a JSON object (or YAML, when PyYAML is installed and the file ends in
``.yaml``/``.yml``) with these keys:

* ``learners`` (required): ``{label: TrainConfig overrides}``, e.g.
  ``{"lstm": {"algo": "ppo", "memory": "lstm"}}``;
* ``seeds`` (required): a list of integers;
* ``levels``: a list of level ids (default: ``base.env``, else the TrainConfig default);
* ``grid``: ``{field: [values]}``, the Cartesian product of which is swept;
* ``base``: overrides shared by every run;
* ``notes``: text for readers (JSON has no comments), a string or ``{label: text}``;
  not used to build runs.

A run's config is ``TrainConfig`` defaults < ``base`` < learner < grid point <
``{"env": level, "seed": seed}``. Its name, which is also its folder under
``DIR/runs/``, is ``<learner>[-<level>][-<field><value>...]-s<seed>``; the level part
appears only when the sweep has more than one level (``BabyAI-``/``MiniGrid-``
prefixes and ``-v0`` dropped).

Example:
    >>> runs = expand_sweep({"learners": {"lstm": {"memory": "lstm"}}, "seeds": [0, 1],
    ...                      "grid": {"lr": [0.001]}, "base": {"frames": 2048}})
    >>> [r.name for r in runs], runs[1].config["seed"], runs[1].config["lr"]
    (['lstm-lr0.001-s0', 'lstm-lr0.001-s1'], 1, 0.001)
    >>> expand_sweep({"learners": {}, "seeds": [0]})
    Traceback (most recent call last):
    ...
    ValueError: sweep: 'learners' must be a non-empty object of {label: config overrides}
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import re
from typing import Any

__all__ = ["SweepRun", "expand_sweep", "load_sweep"]

_KEYS = {"learners", "seeds", "levels", "grid", "base", "notes"}


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its folder name, its group and its full config."""

    name: str
    """Folder name under ``DIR/runs/`` (unique in the sweep)."""
    group: str
    """Everything but the seed (``<learner>[-<level>][-<grid point>]``): one curve in the report."""
    learner: str
    """Learner label from the sweep file."""
    config: dict[str, Any]
    """Complete :class:`~metarim.config.TrainConfig` as a dict."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return dataclasses.asdict(self)


def _short_level(level: str) -> str:
    return re.sub(r"-v\d+$", "", re.sub(r"^(BabyAI|MiniGrid)-", "", level))


def _token(key: str, value: Any) -> str:
    text = f"{key}{json.dumps(value) if not isinstance(value, str) else value}"
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", text.replace("_", ""))


def load_sweep(path: str | pathlib.Path) -> dict[str, Any]:
    """Reads a sweep file (JSON, or YAML with PyYAML); raises ``ValueError`` on bad input."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read sweep file {path}: {e.strerror}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"sweep file {path} is YAML: pip install pyyaml, or write it as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"sweep file {path} is not valid YAML ({e})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"sweep file {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"sweep file {path} must hold an object")
    return data


def expand_sweep(spec: dict[str, Any]) -> list[SweepRun]:
    """All runs of a sweep spec, seeds outermost; every config is validated, and
    ``inner_lr=None`` takes its learner's default (``Learner.default_inner_lr``), so that
    a run's config is what its ``config.json`` will hold. The learners' own checks run
    in :func:`~metarim.sweep.run.check_runs`.

    Raises:
        ValueError: unknown keys, wrong shapes, an invalid config (naming the run), or
            two runs with the same name.
    """
    from metarim.algorithms import LEARNERS
    from metarim.config import TrainConfig

    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ValueError(f"sweep: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    learners, seeds = spec.get("learners"), spec.get("seeds")
    base, grid = spec.get("base", {}), spec.get("grid", {})
    if not isinstance(learners, dict) or not learners or not all(isinstance(v, dict) for v in learners.values()):
        raise ValueError("sweep: 'learners' must be a non-empty object of {label: config overrides}")
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise ValueError("sweep: 'seeds' must be a non-empty list of integers")
    if not isinstance(base, dict):
        raise ValueError("sweep: 'base' must be an object of config overrides")
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError("sweep: 'grid' must be an object of {field: [values, ...]}")
    notes = spec.get("notes", "")
    if not isinstance(notes, str) and not (isinstance(notes, dict) and all(isinstance(v, str) for v in notes.values())):
        raise ValueError("sweep: 'notes' must be a string or an object of strings")
    levels = spec.get("levels", [base.get("env", TrainConfig.env)])
    if not isinstance(levels, list) or not levels or not all(isinstance(v, str) for v in levels):
        raise ValueError("sweep: 'levels' must be a non-empty list of level ids")
    for reserved in ("env", "seed"):
        if reserved in grid or any(reserved in o for o in learners.values()):
            raise ValueError(f"sweep: set {reserved!r} through 'levels'/'seeds', not per learner or grid")
    runs: list[SweepRun] = []
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for seed, label, level, point in itertools.product(seeds, learners, levels, points):
        parts = [re.sub(r"[^A-Za-z0-9._+-]", "_", label)]
        if len(levels) > 1:
            parts.append(_short_level(level))
        parts += [_token(k, v) for k, v in point.items()]
        group = "-".join(parts)
        data = {**base, **learners[label], **point, "env": level, "seed": seed}
        try:
            cfg = TrainConfig.from_dict(data)
            if cfg.inner_lr is None and cfg.algo in LEARNERS:  # an unknown algo: check_runs refuses it
                cfg.inner_lr = LEARNERS[cfg.algo].default_inner_lr_of(cfg)
            config = cfg.to_dict()
        except (TypeError, ValueError) as e:
            raise ValueError(f"sweep: run {group}-s{seed}: {e}") from None
        runs.append(SweepRun(f"{group}-s{seed}", group, label, config))
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"sweep: run names collide: {dupes}; use distinct learner labels")
    return runs
