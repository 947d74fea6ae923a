"""Episode layouts taken from minigrid itself (NumPy and minigrid, no torch).

The tensor env never generates a level: every episode's grid, agent pose, goal cells
and mission come from resetting the real minigrid level with the episode's seed and
copying its grid into flat byte arrays (:class:`LayoutGenerator`). The episode seeds
are drawn exactly as :class:`metarim.envs.minigrid.TaskEnv` draws them
(:class:`EpisodeStream`: a private ``numpy.random.default_rng(seed)``, a draw in the
task's seed range, redrawn until the mission passes the task's filter), so an env
seeded like the gymnasium vector env meets the same episodes in the same order.

Since a layout depends only on ``(level, env_kwargs, episode seed)``, layouts can be
made ahead of time, in another process (:mod:`metarim.envs.tensor.prefetch`), and cached.

Example:
    >>> gen = LayoutGenerator("BabyAI-GoToLocalS5N2-v0")
    >>> lay = gen.generate(0)
    >>> lay.mission, lay.max_steps, int(lay.target.sum()) >= 1
    ('go to the blue key', 25, True)
    >>> check_supported("BabyAI-GoTo-v0")
    Traceback (most recent call last):
    ...
    ValueError: level 'BabyAI-GoTo-v0' is not supported by the tensor env; supported: BabyAI-GoToLocal-v0, BabyAI-GoToLocalS5N2-v0, BabyAI-GoToLocalS6N2-v0, BabyAI-GoToLocalS6N3-v0, BabyAI-GoToLocalS6N4-v0, BabyAI-GoToLocalS7N4-v0, BabyAI-GoToLocalS7N5-v0, BabyAI-GoToLocalS8N2-v0, BabyAI-GoToLocalS8N3-v0, BabyAI-GoToLocalS8N4-v0, BabyAI-GoToLocalS8N5-v0, BabyAI-GoToLocalS8N6-v0, BabyAI-GoToLocalS8N7-v0, BabyAI-GoToObj-v0, BabyAI-GoToObjS4-v0, BabyAI-GoToObjS6-v1, BabyAI-GoToRedBall-v0, BabyAI-GoToRedBallGrey-v0, BabyAI-GoToRedBallNoDists-v0
"""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from metarim.envs.tensor.codes import EMPTY, VIEW, WALL, encode_cell

__all__ = [
    "PAD",
    "SUPPORTED_LEVELS",
    "EpisodeStream",
    "Layout",
    "LayoutGenerator",
    "check_supported",
]

PAD = VIEW - 1
"""Wall cells added on every side, so that any 7×7 view is an in-bounds gather."""

SUPPORTED_LEVELS = (
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
"""Level ids the tensor env reproduces exactly: one room, a ``GoToInstr``, no doors."""

_CLASSES = ("GoToLocal", "GoToObj", "GoToRedBall", "GoToRedBallGrey", "GoToRedBallNoDists")


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
        grid: ``(Wp * Hp,)`` uint8 cell codes, index ``(x + PAD) * Hp + (y + PAD)``.
        target: ``(Wp * Hp,)`` bool, the cells ``GoToInstr`` succeeds in front of.
        pos: flat index of the agent's cell.
        dir: agent direction (0 right, 1 down, 2 left, 3 up).
        max_steps: the episode's step limit.
        mission: the mission string.
        seed: the episode seed.
        rng_state: the episode-seed generator's state after drawing ``seed`` (what
            ``TaskEnv.get_state`` saves), or ``None`` outside an :class:`EpisodeStream`.
    """

    grid: np.ndarray
    target: np.ndarray
    pos: int
    dir: int
    max_steps: int
    mission: str
    seed: int
    rng_state: dict[str, Any] | None = None


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
        env.check_objs_reachable = functools.partial(_check_objs_reachable, env)
        if type(env).__name__ not in _CLASSES or env.num_rows != 1 or env.num_cols != 1:
            raise ValueError(f"{level!r} with {dict(env_kwargs)} is not a one-room GoTo level")
        if env.agent_view_size != VIEW or env.see_through_walls:
            raise ValueError(f"the tensor env needs agent_view_size={VIEW} and see_through_walls=False")
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
        return Layout(lay.grid, lay.target, lay.pos, lay.dir, lay.max_steps, lay.mission, lay.seed)

    def _generate(self, seed: int) -> Layout:
        env = self.env
        with contextlib.redirect_stdout(io.StringIO()):  # "Sampling rejected: ..."
            env.reset(seed=seed)
        w, h = self.width, self.height
        grid = np.full((self.wp, self.hp), WALL, dtype=np.uint8)
        inner = np.full((w, h), EMPTY, dtype=np.uint8)
        for k, obj in enumerate(env.grid.grid):
            if obj is not None:
                if getattr(obj, "contains", None) is not None:
                    raise ValueError(f"seed {seed}: a box with contents is not supported")
                enc = obj.encode()
                code = self._code.get(enc)
                if code is None:
                    code = self._code[enc] = encode_cell(*enc)
                inner[k % w, k // w] = code
        grid[PAD : PAD + w, PAD : PAD + h] = inner
        target = np.zeros_like(grid, dtype=bool)
        for x, y in env.instrs.desc.obj_poss:
            target[x + PAD, y + PAD] = True
        ax, ay = env.agent_pos
        return Layout(
            grid=grid.reshape(-1), target=target.reshape(-1), pos=self.flat(int(ax), int(ay)),
            dir=int(env.agent_dir), max_steps=int(env.max_steps), mission=env.mission, seed=int(seed),
        )


class EpisodeStream:
    """The episodes one ``TaskEnv`` meets, in order, as layouts.

    ``next()`` draws the next episode seed from ``default_rng(seed)`` in
    ``[task.seed_start, task.seed_stop)`` and redraws while the task's mission filter
    rejects the mission, exactly as ``TaskEnv.reset`` does.

    Args:
        task: a :class:`~metarim.tasks.task.Task` on a supported level.
        seed: the seed ``make_vec_env`` gives this env.
        generator: a :class:`LayoutGenerator` for the task's level (built if ``None``).
    """

    def __init__(self, task: Any, seed: int, generator: LayoutGenerator | None = None) -> None:
        self.task = task
        self.generator = generator or LayoutGenerator(task.level, task.env_kwargs)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Restarts the stream as ``TaskEnv.reset(seed=seed)`` would."""
        self.rng = np.random.default_rng(seed)

    def next(self) -> Layout:
        """The next episode's layout."""
        from metarim.envs.minigrid import MAX_FILTER_TRIES

        mf = self.task.mission_filter
        for _ in range(MAX_FILTER_TRIES):
            seed = int(self.rng.integers(self.task.seed_start, self.task.seed_stop))
            lay = self.generator.generate(seed)
            if mf is None or mf.matches(lay.mission):
                lay.rng_state = self.rng.bit_generator.state
                return lay
        raise RuntimeError(f"no mission of {self.task.level} passed {mf} in {MAX_FILTER_TRIES} tries")
