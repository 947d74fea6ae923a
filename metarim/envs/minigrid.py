"""MiniGrid/BabyAI envs for a :class:`~metarim.tasks.task.Task`.

:func:`make_env` wraps one MiniGrid/BabyAI env so that

* each reset draws its episode with :func:`~metarim.tasks.seeding.draw_episode`: a seed
  from the task's seed range with a private, seedable generator, redrawn until the
  mission passes the task's filter;
* the mission string becomes a fixed-length array of word ids (:class:`Vocab`), so the
  observation is a ``Dict`` of ``Box`` spaces that gymnasium's vector envs can stack;
* BabyAI's "Sampling rejected" prints are silenced;
* its state (generator, episode seed, actions taken in the episode) is plain data, so a
  checkpoint can rebuild the exact mid-episode state by replaying the actions;
* under a schedule (:mod:`metarim.tasks.schedule`) each episode's task, and so its level,
  comes from the column's task stream first (one wrapped env per level).

:func:`make_minigrid_vec_env` (the ``"minigrid"`` backend of
:func:`metarim.envs.make_vec_env`) stacks ``num_envs`` of them in a
:class:`MinigridVecEnv`, a gymnasium ``SyncVectorEnv`` with same-step autoreset (the
observation returned with ``done`` is the first one of the next episode) and
:class:`~metarim.envs.protocols.CheckpointableVecEnv`'s ``get_states``/``set_states``.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
from typing import Any

import gymnasium as gym
import numpy as np

from metarim.envs.worker import WorkerVecEnv
from metarim.tasks.schedule import Schedule, TaskStream, column_stream
from metarim.tasks.seeding import draw_episode, env_seeds
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["MinigridVecEnv", "TaskEnv", "check_level", "make_env", "make_minigrid_vec_env"]


def check_level(level: str) -> None:
    """Raises ``ValueError`` naming close matches if ``level`` is not a registered id."""
    import minigrid  # noqa: F401  (registers MiniGrid and BabyAI ids)

    if level not in gym.registry:
        close = difflib.get_close_matches(level, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown env {level!r}{hint}")


class TaskEnv(gym.Wrapper):
    """Seeds, filters and tokenises one env of a task (see module docstring).

    Args:
        env: a MiniGrid env with ``{"image", "direction", "mission"}`` observations.
        task: the task whose seed range and mission filter apply.
        vocab: the word-id vocabulary.
        seed: seed of the generator that draws the episode seeds.
    """

    def __init__(self, env: gym.Env, task: Task, vocab: Vocab, seed: int) -> None:
        super().__init__(env)
        self.task, self.vocab = task, vocab
        self.rng = np.random.default_rng(seed)
        self.episode_seed = -1
        self.actions: list[int] = []
        self.mission = ""
        self.stream: TaskStream | None = None
        """Under a schedule, the task stream that picks each episode's task (:meth:`set_stream`)."""
        self.current = task
        """The task of the current episode (``task`` without a schedule)."""
        self._levels = {(task.level, task.env_kwargs): env}
        self.observation_space = gym.spaces.Dict(
            {
                "image": env.observation_space["image"],
                "direction": gym.spaces.Box(0, 3, (), np.int64),
                "mission": gym.spaces.Box(0, vocab.max_size - 1, (vocab.max_len,), np.int64),
            }
        )

    def _obs(self, obs: dict[str, Any]) -> dict[str, np.ndarray]:
        return {
            "image": obs["image"],
            "direction": np.int64(obs["direction"]),
            "mission": self.vocab.encode(obs["mission"]),
        }

    def _reset_to(self, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
        with contextlib.redirect_stdout(io.StringIO()):
            return self.env.reset(seed=seed)

    def set_stream(self, stream: TaskStream | None) -> None:
        """From the next reset on, each episode's task is ``stream.next()`` (a schedule's
        :func:`~metarim.tasks.schedule.column_stream`); ``None``: always :attr:`task`."""
        self.stream = stream

    def _use(self, task: Task) -> None:
        """Makes ``task``'s level the wrapped env (one env per level, made on first use)."""
        key = (task.level, task.env_kwargs)
        if key not in self._levels:
            self._levels[key] = gym.make(task.level, **dict(task.env_kwargs))
        self.env, self.current = self._levels[key], task

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Starts an episode with the next seed of the task's range (``seed`` reseeds);
        under a schedule the task comes first from :attr:`stream`."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if self.stream is not None:
            self._use(self.stream.next())
        self.episode_seed, (obs, info) = draw_episode(
            self.current, self.rng, self._reset_to, mission=lambda reset: reset[0]["mission"])
        self.actions = []
        self.mission = obs["mission"]
        info = dict(info, episode_seed=self.episode_seed)
        return self._obs(obs), info

    def step(self, action: Any):
        """Steps the env and records the action for exact replay."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.actions.append(int(action))
        return self._obs(obs), reward, terminated, truncated, info

    def get_state(self) -> dict[str, Any]:
        """Plain-data state: generator state, episode seed and actions so far (and under a
        schedule the task stream's state, ``"tasks"``)."""
        out = {
            "rng": self.rng.bit_generator.state,
            "episode_seed": self.episode_seed,
            "actions": list(self.actions),
        }
        if self.stream is not None:
            out["tasks"] = self.stream.state_dict()
        return out

    def set_state(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Rebuilds the mid-episode state of :meth:`get_state`; returns the observation."""
        if self.stream is not None:
            if "tasks" not in state:
                raise ValueError("env state has no task stream: it was saved without a schedule")
            self.stream.load_state_dict(state["tasks"])
            self._use(self.stream.current)
        self.rng.bit_generator.state = state["rng"]
        self.episode_seed = int(state["episode_seed"])
        obs, _ = self._reset_to(self.episode_seed)
        self.mission = obs["mission"]
        self.actions = []
        for a in state["actions"]:
            obs, *_ = self.env.step(a)
            self.actions.append(int(a))
        return self._obs(obs)


def make_env(
    task: Task, vocab: Vocab, seed: int, *, render_mode: str | None = None
) -> TaskEnv:
    """Builds one wrapped env for ``task`` (see :class:`TaskEnv`)."""
    check_level(task.level)
    kwargs = dict(task.env_kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return TaskEnv(gym.make(task.level, **kwargs), task, vocab, seed)


class MinigridVecEnv(gym.vector.SyncVectorEnv):
    """A ``SyncVectorEnv`` of :class:`TaskEnv` s with same-step autoreset, checkpointable.

    Args:
        tasks: one task per env.
        seeds: one seed per env (:func:`~metarim.tasks.seeding.env_seeds`).
        vocab: the shared vocabulary.
    """

    def __init__(self, tasks: list[Task], seeds: list[int], vocab: Vocab, *,
                 schedule: Schedule | None = None, phase: int = 0) -> None:
        super().__init__([lambda t=t, s=s: make_env(t, vocab, s) for t, s in zip(tasks, seeds)],
                         autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.tasks, self.seeds, self.schedule = list(tasks), list(seeds), schedule
        if schedule is not None:
            self._streams(phase)

    def _streams(self, phase: int) -> None:
        self.phase = phase
        for env, t, s in zip(self.envs, self.tasks, self.seeds):
            env.set_stream(column_stream(self.schedule, phase, t, s))  # type: ignore[arg-type]

    def set_phase(self, phase: int) -> None:
        """Under a schedule: from each env's next reset on, its tasks are phase ``phase``'s
        (a fresh :func:`~metarim.tasks.schedule.column_stream`); see
        :meth:`~metarim.envs.tensor.TensorGoToVecEnv.set_phase`."""
        if self.schedule is None:
            raise ValueError("set_phase needs an env built with a schedule")
        self._streams(phase)

    def current_tasks(self) -> list[Task]:
        """The task of each env's current episode."""
        return [env.current for env in self.envs]

    def get_states(self) -> list[dict[str, Any]]:
        """Each env's :meth:`TaskEnv.get_state` (under a schedule, with the ``"phase"``)."""
        extra = {} if self.schedule is None else {"phase": self.phase}
        return [{**env.get_state(), **extra} for env in self.envs]

    def set_states(self, states: list[dict[str, Any]]) -> None:
        """Restores :meth:`get_states` by replaying each env's episode so far."""
        if len(states) != self.num_envs:
            raise ValueError(f"got {len(states)} env states for {self.num_envs} envs")
        if self.schedule is not None:
            if "phase" not in states[0]:
                raise ValueError("env state has no phase: it was saved without a schedule")
            self._streams(int(states[0]["phase"]))
        for env, state in zip(self.envs, states):
            env.set_state(state)


def make_minigrid_vec_env(
    task: Task | list[Task],
    num_envs: int,
    *,
    seed: int,
    vocab: Vocab,
    asynchronous: bool = False,
    worker: bool = False,
    schedule: Schedule | None = None,
    phase: int = 0,
) -> MinigridVecEnv | WorkerVecEnv | gym.vector.AsyncVectorEnv:
    """Builds a vector env of ``num_envs`` copies of ``task`` (or one env per task).

    Env ``b`` gets the seed ``env_seeds(seed, num_envs)[b]``
    (:func:`~metarim.tasks.seeding.env_seeds`). The vector env uses same-step autoreset.

    Args:
        task: one task for all envs, or a list of ``num_envs`` tasks.
        num_envs: number of envs, ``>= 1``.
        seed: base seed.
        vocab: the shared vocabulary.
        asynchronous: a gymnasium ``AsyncVectorEnv`` (subprocesses, ``shared_memory=False``;
            the vocabulary is frozen, so it must already hold every word). It has no
            ``get_states``, so a collector over it cannot be checkpointed.
        worker: the envs in a background process, stepped in two slices
            (:class:`~metarim.envs.worker.WorkerVecEnv`: the same episodes; lets
            :class:`~metarim.rl.rollout.RolloutCollector` overlap the policy and the envs).
        schedule: a :class:`~metarim.tasks.schedule.Schedule` whose phases the envs'
            tasks follow (``set_phase``; not with ``asynchronous``).
        phase: the phase the envs start in.

    Returns:
        a :class:`MinigridVecEnv`, or the :class:`~metarim.envs.worker.WorkerVecEnv` or
        ``AsyncVectorEnv`` asked for.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs} must be >= 1")
    if asynchronous and worker:
        raise ValueError("make_vec_env: choose asynchronous or worker, not both")
    tasks = [task] * num_envs if isinstance(task, Task) else list(task)
    if len(tasks) != num_envs:
        raise ValueError(f"got {len(tasks)} tasks for {num_envs} envs")
    for t in {t.level for t in tasks} | set(schedule.levels() if schedule else ()):
        check_level(t)
    seeds = env_seeds(seed, num_envs)
    if schedule is not None:
        if asynchronous:
            raise ValueError("make_vec_env: a schedule needs a checkpointable env; drop asynchronous")
        make = functools.partial(MinigridVecEnv, schedule=schedule, phase=phase)
        if worker:
            return WorkerVecEnv(tasks, seeds, vocab, make=make, slices=min(2, num_envs))
        return make(tasks, seeds, vocab)
    if worker:
        return WorkerVecEnv(tasks, seeds, vocab, make=MinigridVecEnv, slices=min(2, num_envs))
    if asynchronous:
        vocab.frozen = True
        fns = [lambda t=t, s=s: make_env(t, vocab, s) for t, s in zip(tasks, seeds)]
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False,
                                         autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return MinigridVecEnv(tasks, seeds, vocab)
