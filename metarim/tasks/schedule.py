r"""Training schedules: phases of task distributions, and per-column task streams.

A :class:`Schedule` is a list of :class:`Phase` s. Each phase is a task distribution (one
level; one level with a :class:`~metarim.tasks.task.MissionFilter`; or a weighted set of
tasks) and a length in frames; the last phase may leave its length open (it then lasts to
the end of training, and so does the last phase of any schedule once its length is used
up). A phase with ``every = M`` is the *periodic mode*: each env column keeps one task for
``M`` finished episodes, then draws a different one from the set.

Frames are counted as the learner counts them (``Learner.frames``, the ``frames`` column
of ``metrics.csv``). Phase :math:`k` starts at :math:`s_k = \sum_{j<k} L_j` and governs
every learner update that *starts* at a frame count :math:`f` with
:math:`s_k \le f < s_{k+1}` (:meth:`Schedule.phase_at`): the switch happens before the
first update (a PPO rollout of ``num_steps × num_envs`` frames, a Meta-RIM update, a
MAML or Reptile meta-batch) that starts at or after :math:`s_k`, and that update's
rollouts are entirely the new phase's (every column starts a fresh episode of it). The
switch is at :math:`s_k` exactly when :math:`s_k` is a multiple of the frames per update.

A learner's env column already has a task (PPO: the whole level ``env``; Meta-RIM, MAML,
Reptile: one seed range or mission family of it). Under a schedule the column keeps
that task's seed range, and its level comes from the phase (:meth:`Phase.tasks_for`); the
phase's mission filter, when it has one, replaces the task's.

Within a phase, column ``b`` follows a :class:`TaskStream` (:func:`column_stream`), seeded
from ``(schedule seed, phase index, the column's env seed)``: at each episode start it
says which task the episode is drawn from. The env backends call it before
:func:`~metarim.tasks.seeding.draw_episode`, so the minigrid and the tensor env meet the
same tasks and episodes.

JSON (docs/schedules.md; ``load_schedule`` reads it, :meth:`Schedule.to_dict` writes
the canonical form)::

    {"seed": 0,
     "phases": [
       {"frames": 100000, "level": "BabyAI-GoToLocalS6N2-v0"},
       {"frames": 100000, "level": "BabyAI-GoToLocal-v0",
        "missions": {"colors": ["red"], "objects": ["ball", "key"]}},
       {"frames": 100000, "levels": {"BabyAI-PickupLoc-v0": 3, "BabyAI-PutNextLocal-v0": 1}},
       {"every": 4, "levels": ["BabyAI-GoToLocalS6N2-v0", "BabyAI-PickupLoc-v0"]}]}

Example:
    >>> s = Schedule.from_dict({"phases": [{"frames": 100, "level": "A-v0"},
    ...                                     {"level": "B-v0"}]})
    >>> s.starts(), [s.phase_at(f) for f in (0, 99, 100, 10**6)]
    ([0, 100], [0, 0, 1, 1])
    >>> Schedule.from_dict({"phases": [{"frame": 100, "level": "A-v0"}]})
    Traceback (most recent call last):
    ...
    ValueError: schedule: phases[0]: unknown key 'frame'; did you mean 'frames'?
"""

from __future__ import annotations

import difflib
import json
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from metarim.tasks.samplers import COLORS, OBJECTS
from metarim.tasks.task import MissionFilter, Task

__all__ = [
    "Phase",
    "Schedule",
    "TaskStream",
    "column_stream",
    "load_schedule",
    "sequential_schedule",
]

_TOP_KEYS = ("phases", "seed", "notes")
_PHASE_KEYS = ("frames", "level", "levels", "tasks", "missions", "every", "name")
_TASK_KEYS = ("level", "missions", "weight", "env_kwargs")
_EXAMPLE = '"level": "BabyAI-GoToLocalS6N2-v0"'


@dataclass(frozen=True)
class Phase:
    """One phase: a task distribution and a length.

    Args:
        tasks: the tasks (full seed range; a learner's column narrows it, :meth:`tasks_for`).
        weights: one positive weight per task, normalised.
        frames: length in learner frames; ``None``: until the end of training (last phase).
        every: ``None``: each episode's task is drawn from ``weights`` (a mixture); ``M``:
            periodic, a column keeps its task for ``M`` episodes, then draws a different one.
        name: a label for reports (default: the level id of a one-task phase).
    """

    tasks: tuple[Task, ...]
    weights: tuple[float, ...]
    frames: int | None = None
    every: int | None = None
    name: str = ""

    def tasks_for(self, base: Task) -> tuple[Task, ...]:
        """The phase's tasks for an env column whose own task is ``base``: its seed range,
        the phase's level, kwargs and mission filter (``base``'s filter if the phase has none).

        Example:
            >>> p = Phase((Task("B-v0"),), (1.0,))
            >>> p.tasks_for(Task("A-v0", seed_start=10, seed_stop=20))[0].to_dict()["seed_start"]
            10
        """
        return tuple(replace(t, seed_start=base.seed_start, seed_stop=base.seed_stop,
                             mission_filter=t.mission_filter or base.mission_filter) for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON form (the ``tasks`` list)."""
        tasks = []
        for t, w in zip(self.tasks, self.weights):
            d: dict[str, Any] = {"level": t.level, "weight": w}
            if t.mission_filter is not None:
                d["missions"] = Task.to_dict(t)["mission_filter"]
            if t.env_kwargs:
                d["env_kwargs"] = dict(t.env_kwargs)
            tasks.append(d)
        return {"name": self.name, "frames": self.frames, "tasks": tasks, "every": self.every}


@dataclass(frozen=True)
class Schedule:
    """Phases in order, and the seed of the columns' task draws (see module docstring)."""

    phases: tuple[Phase, ...]
    seed: int = 0

    def starts(self) -> list[int]:
        """The frame at which each phase starts: :math:`s_k = \\sum_{j<k} L_j`."""
        out, total = [], 0
        for p in self.phases:
            out.append(total)
            total += p.frames or 0
        return out

    def phase_at(self, frames: int) -> int:
        """The phase of a learner update that starts at ``frames``: the last ``k`` with
        :math:`s_k \\le` ``frames`` (the last phase continues past its end)."""
        return max(k for k, s in enumerate(self.starts()) if s <= frames)

    def levels(self) -> list[str]:
        """Every level id of the schedule, in order of first appearance."""
        return list(dict.fromkeys(t.level for p in self.phases for t in p.tasks))

    def same_tasks(self, j: int, k: int) -> bool:
        """Whether phases ``j`` and ``k`` draw the same tasks in the same way (a phase
        that comes back)."""
        a, b = self.phases[j], self.phases[k]
        return (a.tasks, a.weights, a.every) == (b.tasks, b.weights, b.every)

    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON form; :meth:`from_dict` reads it back to an equal schedule."""
        return {"seed": self.seed, "phases": [p.to_dict() for p in self.phases]}

    @classmethod
    def from_dict(cls, d: Any) -> Schedule:
        """Parses the JSON form; raises a one-line ``ValueError`` naming the bad key and
        the fix (see the module docstring for the format)."""
        if not isinstance(d, dict):
            raise ValueError('schedule: must be a JSON object like {"phases": [{"frames": 100000, '
                             f'{_EXAMPLE}}}, ...]}}')
        _check_keys(d, _TOP_KEYS, "schedule")
        phases = d.get("phases")
        if not isinstance(phases, list) or not phases:
            raise ValueError(f'schedule: "phases" must be a non-empty list of phases, e.g. '
                             f'[{{"frames": 100000, {_EXAMPLE}}}]')
        seed = d.get("seed", 0)
        if type(seed) is not int or seed < 0:
            raise ValueError(f"schedule: seed={seed!r} must be an integer >= 0")
        if "notes" in d and not isinstance(d["notes"], str):
            raise ValueError('schedule: "notes" must be a string (text for readers)')
        parsed = tuple(_phase(p, i, last=i == len(phases) - 1) for i, p in enumerate(phases))
        return cls(parsed, seed)


def _check_keys(d: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            raise ValueError(f"{where}: unknown key {key!r}; {hint}")


def _positive_int(v: Any, where: str) -> int:
    if type(v) is not int or v < 1:
        raise ValueError(f"{where}={v!r} must be an integer >= 1")
    return v


def _missions(m: Any, where: str) -> MissionFilter:
    if not isinstance(m, dict) or not m:
        raise ValueError(f'{where}.missions must be an object like {{"colors": ["red"], "objects": ["ball"]}}')
    _check_keys(m, ("colors", "objects"), f"{where}.missions")
    out = {}
    for key, known in (("colors", COLORS), ("objects", (*OBJECTS, "door"))):
        v = m.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise ValueError(f"{where}.missions.{key} must be a non-empty list of words, e.g. [{known[0]!r}]")
        bad = sorted(set(v) - set(known))
        if bad:
            raise ValueError(f"{where}.missions.{key}: unknown {bad}; use some of {list(known)}")
        out[key] = tuple(v)
    return MissionFilter(**out)


def _level(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"{where} must be a level id, e.g. {_EXAMPLE}")
    return v


def _phase(p: Any, i: int, *, last: bool) -> Phase:
    where = f"schedule: phases[{i}]"
    if not isinstance(p, dict):
        raise ValueError(f"{where} must be an object like {{\"frames\": 100000, {_EXAMPLE}}}")
    _check_keys(p, _PHASE_KEYS, where)
    given = [k for k in ("level", "levels", "tasks") if k in p]
    if len(given) != 1:
        what = "needs" if not given else f"has {' and '.join(map(repr, given))}; give only"
        raise ValueError(f"{where} {what} one of 'level', 'levels', 'tasks' (e.g. {_EXAMPLE})")
    if "missions" in p and "tasks" in p:
        raise ValueError(f"{where}: put 'missions' inside each entry of 'tasks', not beside it")
    mf = _missions(p["missions"], where) if "missions" in p else None
    tasks: list[Task] = []
    weights: list[float] = []
    if "level" in p:
        tasks.append(Task(_level(p["level"], f"{where}.level"), mission_filter=mf))
        weights.append(1.0)
    elif "levels" in p:
        lv = p["levels"]
        if isinstance(lv, list) and lv:
            pairs = [(_level(x, f"{where}.levels[{j}]"), 1) for j, x in enumerate(lv)]
        elif isinstance(lv, dict) and lv:
            pairs = list(lv.items())
        else:
            raise ValueError(f'{where}.levels must be a non-empty list of level ids or an object '
                             f'{{level: weight}}, e.g. ["BabyAI-GoToLocalS6N2-v0", "BabyAI-PickupLoc-v0"]')
        for level, w in pairs:
            tasks.append(Task(_level(level, f"{where}.levels"), mission_filter=mf))
            weights.append(_weight(w, f"{where}.levels[{level!r}]"))
    else:
        entries = p["tasks"]
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{where}.tasks must be a non-empty list of {{\"level\": ..., \"weight\": ...}}")
        for j, e in enumerate(entries):
            w = f"{where}.tasks[{j}]"
            if not isinstance(e, dict) or "level" not in e:
                raise ValueError(f"{w} must be an object with a \"level\", e.g. {{{_EXAMPLE}, \"weight\": 1}}")
            _check_keys(e, _TASK_KEYS, w)
            kw = e.get("env_kwargs") or {}
            if not isinstance(kw, dict):
                raise ValueError(f"{w}.env_kwargs must be an object of gymnasium.make keyword arguments")
            tasks.append(Task(_level(e["level"], f"{w}.level"), env_kwargs=tuple(kw.items()),
                              mission_filter=_missions(e["missions"], w) if e.get("missions") is not None else None))
            weights.append(_weight(e.get("weight", 1), f"{w}.weight"))
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"{where} lists a task twice; merge them and add their weights")
    frames = p.get("frames")
    if frames is None and not last:
        raise ValueError(f"{where} has no 'frames'; only the last phase may omit it (it then lasts to the end)")
    if frames is not None:
        _positive_int(frames, f"{where}.frames")
    every = p.get("every")
    if every is not None:
        _positive_int(every, f"{where}.every")
        if len(tasks) < 2:
            raise ValueError(f"{where}.every={every} switches between tasks; list at least two "
                             f"(\"levels\": [...]) or drop 'every'")
    name = p.get("name", tasks[0].level if len(tasks) == 1 else f"phase {i}")
    if not isinstance(name, str):
        raise ValueError(f"{where}.name must be a string")
    total = sum(weights)
    return Phase(tuple(tasks), tuple(w / total for w in weights), frames, every, name)


def _weight(w: Any, where: str) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0 or w == float("inf"):
        raise ValueError(f"{where}: weight {w!r} must be a number > 0")
    return float(w)


def load_schedule(path: str | pathlib.Path) -> Schedule:
    """Reads a schedule JSON file; raises a one-line ``ValueError`` naming the problem.

    Example:
        >>> load_schedule("no/such/file.json")
        Traceback (most recent call last):
        ...
        ValueError: cannot read schedule file no/such/file.json: No such file or directory
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"cannot read schedule file {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"schedule file {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    try:
        return Schedule.from_dict(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def sequential_schedule(levels: Sequence[str], frames: int | Sequence[int], *, seed: int = 0) -> dict[str, Any]:
    """The JSON form of a schedule of one level per phase, ``frames`` each (or one
    length per phase), e.g. ``examples/schedules/four_phase.json`` with any phase length.

    Example:
        >>> d = sequential_schedule(["A-v0", "B-v0", "A-v0"], 1000)
        >>> Schedule.from_dict(d).starts(), [(p["level"], p["frames"]) for p in d["phases"]]
        ([0, 1000, 2000], [('A-v0', 1000), ('B-v0', 1000), ('A-v0', 1000)])
    """
    lengths = [frames] * len(levels) if isinstance(frames, int) else list(frames)
    if len(lengths) != len(levels):
        raise ValueError(f"got {len(lengths)} phase lengths for {len(levels)} levels")
    d = {"seed": seed, "phases": [{"frames": n, "level": lv} for lv, n in zip(levels, lengths)]}
    Schedule.from_dict(d)
    return d


class TaskStream:
    """The tasks one env column meets, one per episode (see :class:`Phase`'s ``every``).

    Args:
        tasks: the tasks.
        weights: their probabilities (uniform if ``None``).
        every: ``None``: an independent draw per episode; ``M``: the first episode draws
            from ``weights``, then every ``M`` episodes the column draws a task other than
            its current one (``weights`` renormalised without it).
        seed: seed (or seed sequence) of the private generator.

    Example:
        >>> s = TaskStream([Task("A-v0"), Task("B-v0")], every=2, seed=0)
        >>> levels = [s.next().level for _ in range(6)]
        >>> levels[0] == levels[1] != levels[2] == levels[3] != levels[4] == levels[5]
        True
    """

    def __init__(self, tasks: Sequence[Task], weights: Sequence[float] | None = None, *,
                 every: int | None = None, seed: int | Sequence[int] = 0) -> None:
        if not tasks:
            raise ValueError("a task stream needs at least one task")
        self.tasks = tuple(tasks)
        w = np.ones(len(tasks)) if weights is None else np.asarray(weights, dtype=float)
        self.weights = w / w.sum()
        self.every = every
        self.rng = np.random.default_rng(seed)
        self.index = 0
        """Index in :attr:`tasks` of the current episode's task."""
        self.left = 0
        """Episodes the current task has left before the next draw (``every`` mode)."""
        self.draws = 0
        """Draws so far (``every`` mode; the first may give any task, later ones switch)."""

    @property
    def current(self) -> Task:
        """The task of the episode drawn last."""
        return self.tasks[self.index]

    def next(self) -> Task:
        """The task of the next episode."""
        n = len(self.tasks)
        if n > 1:
            if self.every is None:
                self.index = int(self.rng.choice(n, p=self.weights))
            else:
                if self.left == 0:
                    p = self.weights.copy()
                    if self.draws:  # a switch: a task other than the current one
                        p[self.index] = 0.0
                    self.index = int(self.rng.choice(n, p=p / p.sum()))
                    self.left = self.every
                    self.draws += 1
                self.left -= 1
        return self.current

    def state_dict(self) -> dict[str, Any]:
        """Plain data: generator state, current task, episodes left of it, draws so far."""
        return {"rng": self.rng.bit_generator.state, "index": self.index, "left": self.left,
                "draws": self.draws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
        self.index, self.left, self.draws = int(state["index"]), int(state["left"]), int(state["draws"])


def column_stream(schedule: Schedule, phase: int, base: Task, column_seed: int) -> TaskStream:
    """The :class:`TaskStream` of an env column in phase ``phase``: the phase's tasks for
    the column's own task ``base`` (:meth:`Phase.tasks_for`), seeded with
    ``(schedule.seed, phase, column_seed)`` (the column's env seed,
    :func:`~metarim.tasks.seeding.env_seeds`)."""
    p = schedule.phases[phase]
    return TaskStream(p.tasks_for(base), p.weights, every=p.every, seed=[schedule.seed, phase, column_seed])
