"""Episode layouts taken from minigrid itself (NumPy and minigrid, no torch).

The tensor env never generates a level: every episode's grid, agent pose, goal cells
and mission come from resetting the real minigrid level with the episode's seed and
copying its grid, the instruction's objects and box contents into flat arrays of cell words (:class:`LayoutGenerator`). The episode seeds
are drawn as :class:`metarim.envs.minigrid.TaskEnv` draws them, by the same function
(:class:`EpisodeStream`: a private ``numpy.random.default_rng(seed)`` and
:func:`~metarim.tasks.seeding.draw_episode`, a draw in the task's seed range, redrawn
until the mission passes the task's filter), so an env seeded like the gymnasium vector
env meets the same episodes in the same order.

Since a layout depends only on ``(level, env_kwargs, episode seed)``, layouts can be
made ahead of time, in another process (:mod:`metarim.envs.tensor.prefetch`), and cached.

Example:
    >>> gen = LayoutGenerator("BabyAI-GoToLocalS5N2-v0")
    >>> lay = gen.generate(0)
    >>> lay.mission, lay.max_steps, int(lay.target.sum()) >= 1
    ('go to the blue key', 25, True)
    >>> try:
    ...     check_supported("BabyAI-GoTo-v0")
    ... except ValueError as e:
    ...     print(str(e)[:69])
    level 'BabyAI-GoTo-v0' is not supported by the tensor env; supported:
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from metarim.envs.tensor.codes import (
    CODE_MASK,
    CONTENTS_SHIFT,
    EMPTY,
    GOTO,
    IS_GOAL,
    IS_LAVA,
    NONE,
    OPEN,
    PICKUP,
    PUTNEXT,
    TAG_ACT,
    TAG_POS,
    VIEW,
    WALL,
    encode_cell,
)
from metarim.tasks.schedule import TaskStream
from metarim.tasks.seeding import draw_episode
from metarim.tasks.task import Task

__all__ = [
    "GOTO_LEVELS",
    "LEVELS",
    "PAD",
    "SUPPORTED_LEVELS",
    "EpisodeStream",
    "GeneratorCache",
    "Layout",
    "LayoutGenerator",
    "check_supported",
]

PAD = VIEW - 1
"""Wall cells added on every side, so that any 7×7 view is an in-bounds gather."""

GOTO_LEVELS = (
    "BabyAI-GoToLocal-v0",
    *(f"BabyAI-GoToLocalS{s}N{n}-v0" for s, n in
      ((5, 2), (6, 2), (6, 3), (6, 4), (7, 4), (7, 5), (8, 2), (8, 3), (8, 4), (8, 5), (8, 6), (8, 7))),
    "BabyAI-GoToObj-v0",
    "BabyAI-GoToObjS4-v0",
    "BabyAI-GoToObjS6-v1",
    "BabyAI-GoToRedBall-v0",
    "BabyAI-GoToRedBallGrey-v0",
    "BabyAI-GoToRedBallNoDists-v0",
)
"""The one-room GoTo levels (``GoToInstr``, no doors)."""

LEVELS = (
    *GOTO_LEVELS,
    "BabyAI-GoToObjDoor-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-PickupDist-v0",
    "BabyAI-PutNextLocal-v0",
    "BabyAI-PutNextLocalS5N3-v0",
    "BabyAI-PutNextLocalS6N4-v0",
    "BabyAI-PutNextS4N1-v0",
    "BabyAI-PutNextS5N1-v0",
    "BabyAI-PutNextS5N2-v0",
    "BabyAI-PutNextS6N3-v0",
    "BabyAI-PutNextS7N4-v0",
    "BabyAI-OpenDoor-v0",
    "BabyAI-OpenDoorLoc-v0",
    "BabyAI-UnlockLocal-v0",
    "BabyAI-KeyInBox-v0",
    *(f"MiniGrid-Empty-{n}x{n}-v0" for n in (5, 6, 8, 16)),
    *(f"MiniGrid-DoorKey-{n}x{n}-v0" for n in (5, 6, 8, 16)),
    "MiniGrid-MultiRoom-N2-S4-v0",
    "MiniGrid-MultiRoom-N4-S5-v0",
    *(f"MiniGrid-LavaGapS{n}-v0" for n in (5, 6, 7)),
    *(f"MiniGrid-KeyCorridorS3R{n}-v0" for n in (1, 2, 3)),
)
"""Candidate level ids: the ones the tensor env implements (see :data:`SUPPORTED_LEVELS`)."""

SUPPORTED_LEVELS = LEVELS
"""Level ids the tensor env reproduces exactly (``tests/test_tensor_levels.py`` proves each)."""


def check_supported(level: str) -> None:
    """Raises a one-line ``ValueError`` if the tensor env does not support ``level``."""
    if level not in SUPPORTED_LEVELS:
        raise ValueError(
            f"level {level!r} is not supported by the tensor env; supported: {', '.join(SUPPORTED_LEVELS)}"
        )


@dataclass
class Layout:
    """The initial state of one episode, on the padded grid (see :class:`LayoutGenerator`).

    Attributes:
        grid: ``(Wp * Hp,)`` int64 cell words (code, instruction tags, box contents; see
            :mod:`~metarim.envs.tensor.codes`), index ``(x + PAD) * Hp + (y + PAD)``.
        target: ``(Wp * Hp,)`` bool, the cells of the objects whose positions the
            instruction checks (``GoToInstr``: the described objects; ``PutNextInstr``:
            the fixed ones).
        pos: flat index of the agent's cell.
        dir: agent direction (0 right, 1 down, 2 left, 3 up).
        max_steps: the episode's step limit.
        mission: the mission string.
        seed: the episode seed.
        kind: the instruction kind (:data:`~metarim.envs.tensor.codes.NONE` ... ``PUTNEXT``).
        strict: the verifier's ``strict`` flag.
        see_through: the level's ``see_through_walls``.
        hazards: the grid has goal or lava cells.
        rng_state: the episode-seed generator's state after drawing ``seed`` (what
            ``TaskEnv.get_state`` saves), or ``None`` outside an :class:`EpisodeStream`.
        tasks_state: under a schedule, the column's
            :class:`~metarim.tasks.schedule.TaskStream` state after drawing this episode's
            task (``TaskEnv.get_state``'s ``"tasks"``); ``None`` otherwise.
        task: under a schedule, the episode's task; ``None`` otherwise.
    """

    grid: np.ndarray
    target: np.ndarray
    pos: int
    dir: int
    max_steps: int
    mission: str
    seed: int
    kind: int = GOTO
    strict: bool = False
    see_through: bool = False
    hazards: bool = False
    rng_state: dict[str, Any] | None = None
    tasks_state: dict[str, Any] | None = None
    task: Task | None = None


def _check_objs_reachable(env: Any, raise_exc: bool = True) -> bool:
    """``RoomGridLevel.check_objs_reachable`` on ``env.grid.grid`` directly (same result)."""
    from minigrid.envs.babyai.core.roomgrid_level import RejectSampling

    w, h = env.grid.width, env.grid.height
    cells = env.grid.grid
    seen = bytearray(w * h)
    stack = [(int(env.agent_pos[0]), int(env.agent_pos[1]))]
    while stack:
        i, j = stack.pop()
        if i < 0 or i >= w or j < 0 or j >= h or seen[j * w + i]:
            continue
        seen[j * w + i] = 1
        cell = cells[j * w + i]
        if cell is not None and cell.type != "door":
            continue
        stack += ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1))
    for k, cell in enumerate(cells):
        if cell is not None and cell.type != "wall" and not seen[k]:
            if not raise_exc:
                return False
            raise RejectSampling(f"unreachable object at {(k % w, k // w)}")
    return True


def _check_step(level: str, env: Any) -> None:
    """Refuses an env whose ``step`` is not one the tensor core implements."""
    from minigrid.envs.babyai.core.roomgrid_level import RoomGridLevel
    from minigrid.envs.keycorridor import KeyCorridorEnv
    from minigrid.minigrid_env import MiniGridEnv

    if type(env).step not in (MiniGridEnv.step, RoomGridLevel.step, KeyCorridorEnv.step):
        raise ValueError(f"{level!r}: {type(env).__name__}.step is not implemented by the tensor env")


def _instruction(level: str, env: Any) -> tuple[int, bool, list[Any], list[Any]]:
    """``(kind, strict, acted-on objects, position-checked objects)`` of the episode."""
    from minigrid.envs.babyai.core import verifier as v
    from minigrid.envs.keycorridor import KeyCorridorEnv

    if isinstance(env, KeyCorridorEnv):
        return PICKUP, False, [env.obj], []
    instr = getattr(env, "instrs", None)
    if instr is None:
        return NONE, False, [], []
    if type(instr) is v.GoToInstr:
        return GOTO, False, [], list(instr.desc.obj_set)
    if type(instr) is v.PickupInstr:
        return PICKUP, bool(instr.strict), list(instr.desc.obj_set), []
    if type(instr) is v.OpenInstr:
        return OPEN, bool(instr.strict), list(instr.desc.obj_set), []
    if type(instr) is v.PutNextInstr:
        return PUTNEXT, bool(instr.strict), list(instr.desc_move.obj_set), list(instr.desc_fixed.obj_set)
    raise ValueError(f"{level!r}: instruction {type(instr).__name__} is not implemented by the tensor env")


class LayoutGenerator:
    """Resets the real minigrid level and copies its episode into a :class:`Layout`.

    Args:
        level: a level id of :data:`SUPPORTED_LEVELS`.
        env_kwargs: keyword arguments for ``gymnasium.make`` (as a ``Task`` holds them).
        grid_size: ``(width, height)`` to embed the level's grid in (walls outside), so
            that levels of several sizes share one tensor; the level's own by default.
        cache_size: layouts kept by seed (first in, first out); ``0`` keeps none.
    """

    def __init__(
        self,
        level: str,
        env_kwargs: dict[str, Any] | tuple[tuple[str, Any], ...] = (),
        *,
        grid_size: tuple[int, int] | None = None,
        cache_size: int = 0,
    ) -> None:
        check_supported(level)
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the BabyAI ids)
        from minigrid.envs.babyai.core import verifier

        if verifier.use_done_actions:
            raise ValueError("BABYAI_DONE_ACTIONS is set; the tensor env implements the default done semantics only")
        self.level = level
        self.env = gym.make(level, **dict(env_kwargs)).unwrapped
        env = self.env
        # Two shortcuts on this private instance, neither draws random numbers, so the
        # layouts are unchanged (tests compare them with untouched envs): the first
        # observation is never used (a quarter of a reset), and the reachability check
        # of rejection sampling runs on the cell list (a third of the rest).
        env.gen_obs = lambda: None
        if hasattr(env, "check_objs_reachable"):
            env.check_objs_reachable = functools.partial(_check_objs_reachable, env)
        if env.agent_view_size != VIEW:
            raise ValueError(f"{level!r}: the tensor env needs agent_view_size={VIEW}")
        if getattr(env, "start_carrying", False):
            raise ValueError(f"{level!r}: start_carrying=True is not supported by the tensor env")
        _check_step(level, env)
        self.width, self.height = env.width, env.height
        gw, gh = grid_size or (env.width, env.height)
        if gw < env.width or gh < env.height:
            raise ValueError(f"grid_size={grid_size} is smaller than the level's {(env.width, env.height)}")
        self.wp, self.hp = gw + 2 * PAD, gh + 2 * PAD
        self.size = self.wp * self.hp
        self.cache_size = cache_size
        self._cache: dict[int, Layout] = {}
        self._code: dict[tuple[int, int, int], int] = {}

    def flat(self, x: int, y: int) -> int:
        """Flat padded index of grid cell ``(x, y)``."""
        return (x + PAD) * self.hp + (y + PAD)

    def generate(self, seed: int) -> Layout:
        """The layout of the episode that ``env.reset(seed=seed)`` starts (cached by seed)."""
        lay = self._cache.get(seed)
        if lay is None:
            lay = self._generate(seed)
            if self.cache_size:
                if len(self._cache) >= self.cache_size:
                    del self._cache[next(iter(self._cache))]
                self._cache[seed] = lay
        return Layout(lay.grid, lay.target, lay.pos, lay.dir, lay.max_steps, lay.mission, lay.seed, lay.kind,
                      lay.strict, lay.see_through, lay.hazards)

    def _generate(self, seed: int) -> Layout:
        env = self.env
        with contextlib.redirect_stdout(io.StringIO()):  # "Sampling rejected: ..."
            env.reset(seed=seed)
        w, h = self.width, self.height
        kind, strict, act, posd = _instruction(self.level, env)
        grid = np.full((self.wp, self.hp), WALL, dtype=np.int64)
        inner = np.full((w, h), EMPTY, dtype=np.int64)
        for k, obj in enumerate(env.grid.grid):
            if obj is not None:
                word = self._encode(obj)
                contains = getattr(obj, "contains", None)
                if contains is not None:
                    if getattr(contains, "contains", None) is not None:
                        raise ValueError(f"{self.level!r} seed {seed}: nested box contents are not supported")
                    word |= self._encode(contains) << CONTENTS_SHIFT
                if any(obj is o for o in act):
                    word |= TAG_ACT
                if any(obj is o for o in posd):
                    word |= TAG_POS
                inner[k % w, k // w] = word
        if env.carrying is not None:
            raise ValueError(f"{self.level!r}: an episode that starts carrying is not supported by the tensor env")
        grid[PAD : PAD + w, PAD : PAD + h] = inner
        grid = grid.reshape(-1)
        ax, ay = env.agent_pos
        return Layout(
            grid=grid, target=(grid & TAG_POS) != 0, pos=self.flat(int(ax), int(ay)),
            dir=int(env.agent_dir), max_steps=int(env.max_steps), mission=env.mission, seed=int(seed),
            kind=kind, strict=strict, see_through=bool(env.see_through_walls),
            hazards=bool((IS_GOAL | IS_LAVA)[grid & CODE_MASK].any()),
        )

    def _encode(self, obj: Any) -> int:
        enc = obj.encode()
        code = self._code.get(enc)
        if code is None:
            code = self._code[enc] = encode_cell(*enc)
        return code


class GeneratorCache:
    """One :class:`LayoutGenerator` per ``(level, env_kwargs)`` of the tasks asked for,
    built on first use, all on the grid ``grid_size`` (a column under a schedule meets
    several levels).

    Args:
        grid_size: common ``(width, height)``, at least every level's own.
        cache_size: each generator's layout cache.
    """

    def __init__(self, grid_size: tuple[int, int], cache_size: int = 0) -> None:
        self.grid_size, self.cache_size = grid_size, cache_size
        self.generators: dict[Any, LayoutGenerator] = {}

    def __call__(self, task: Task) -> LayoutGenerator:
        """The generator of ``task``'s level."""
        key = (task.level, task.env_kwargs)
        if key not in self.generators:
            self.generators[key] = LayoutGenerator(task.level, task.env_kwargs, grid_size=self.grid_size,
                                                   cache_size=self.cache_size)
        return self.generators[key]


class EpisodeStream:
    """The episodes one ``TaskEnv`` meets, in order, as layouts.

    ``next()`` draws the next episode with :func:`~metarim.tasks.seeding.draw_episode`
    from ``default_rng(seed)``, as ``TaskEnv.reset`` does; under a schedule the task of
    each episode comes first from the column's
    :class:`~metarim.tasks.schedule.TaskStream` (as ``TaskEnv.reset`` takes it).

    Args:
        task: a :class:`~metarim.tasks.task.Task` on a supported level.
        seed: the seed ``make_vec_env`` gives this env.
        generator: a :class:`LayoutGenerator` for the task's level (built if ``None``).
        tasks: the column's task stream (a schedule), or ``None``: every episode is ``task``'s.
        generators: with ``tasks``, the generator of each of its tasks (a :class:`GeneratorCache`).
    """

    def __init__(self, task: Task, seed: int, generator: LayoutGenerator | None = None, *,
                 tasks: TaskStream | None = None, generators: GeneratorCache | None = None) -> None:
        if tasks is not None and generators is None:
            raise ValueError("EpisodeStream: a task stream needs its generators")
        self.task = task
        self.generator = generator or (generators(task) if generators else LayoutGenerator(task.level, task.env_kwargs))
        self.rng = np.random.default_rng(seed)
        self.tasks, self.generators = tasks, generators

    def reseed(self, seed: int) -> None:
        """Restarts the stream as ``TaskEnv.reset(seed=seed)`` would."""
        self.rng = np.random.default_rng(seed)

    def next(self) -> Layout:
        """The next episode's layout."""
        task, gen = self.task, self.generator
        if self.tasks is not None:
            task = self.tasks.next()
            gen = self.generators(task)  # type: ignore[misc]
        _, lay = draw_episode(task, self.rng, gen.generate, mission=lambda lay: lay.mission)
        lay.rng_state = self.rng.bit_generator.state
        if self.tasks is not None:
            lay.tasks_state, lay.task = self.tasks.state_dict(), task
        return lay

    def restore(self, rng_state: dict[str, Any], episode_seed: int, tasks: TaskStream | None = None) -> Layout:
        """The layout of ``episode_seed`` (of ``tasks.current`` when given, which then
        becomes this stream's task stream); the stream continues from ``rng_state``."""
        self.rng.bit_generator.state = rng_state
        gen = self.generator
        if tasks is not None:
            self.tasks = tasks
            gen = self.generators(tasks.current)  # type: ignore[misc]
        lay = gen.generate(episode_seed)
        lay.rng_state = rng_state
        if tasks is not None:
            lay.tasks_state, lay.task = tasks.state_dict(), tasks.current
        return lay
