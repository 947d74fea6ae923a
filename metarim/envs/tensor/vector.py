"""A gymnasium-style vector env of ``B`` GoTo episodes held as tensors.

:class:`TensorGoToVecEnv` is the stateful wrapper around :mod:`metarim.envs.tensor.core`:
it takes its episodes from one :class:`~metarim.envs.tensor.layouts.EpisodeStream` per env
(seeded like :func:`metarim.envs.make_vec_env` seeds its ``TaskEnv`` s), steps
all of them with tensor ops, and autoresets in the same step (the observation returned
with ``terminated | truncated`` is the first of the next episode), so it is a drop-in
for ``make_vec_env(...)``: same observation dict (``image`` uint8 ``(B, 7, 7, 3)``,
``direction`` int64 ``(B,)``, ``mission`` int64 ``(B, L)`` word ids), same rewards
(float64), flags and episodes, bit for bit. ``info`` is always ``{}``: no
``final_obs`` (nothing in the RL engine reads it), no ``episode_seed`` (see
:meth:`TensorGoToVecEnv.get_env_state`). Its ``get_states``/``set_states`` give and take
``TaskEnv.get_state``'s plain data
(:class:`~metarim.envs.protocols.CheckpointableVecEnv`), so a checkpoint of one backend
resumes in the other.

:func:`make_tensor_vec_env` is the ``"tensor"`` backend of :func:`metarim.envs.make_vec_env`
(``TrainConfig(env_backend="tensor")``, CLI ``--env-backend tensor``): the env in NumPy
mode, with :func:`~metarim.envs.minigrid.make_minigrid_vec_env`'s signature.

Layouts are made off the hot path: the episode streams run in ``workers`` background
processes that keep ``prefetch`` layouts ready per env (:mod:`metarim.envs.tensor.prefetch`);
with ``workers=0`` they run in this process when an episode ends.

Example:
    >>> from metarim.tasks import Task, Vocab
    >>> envs = TensorGoToVecEnv(Task("BabyAI-GoToLocalS5N2-v0"), 4, seed=0, vocab=Vocab())
    >>> obs, _ = envs.reset()
    >>> obs["image"].shape, obs["image"].dtype, obs["mission"].shape
    (torch.Size([4, 7, 7, 3]), torch.uint8, torch.Size([4, 32]))
    >>> obs, rew, term, trunc, _ = envs.step(torch.tensor([0, 1, 2, 3]))
    >>> rew.dtype, term.dtype
    (torch.float64, torch.bool)
    >>> envs = make_tensor_vec_env(Task("BabyAI-GoToLocalS5N2-v0"), 2, seed=0, vocab=Vocab())
    >>> obs, _ = envs.reset()
    >>> type(obs["image"]).__name__, obs["direction"].dtype
    ('ndarray', dtype('int64'))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metarim.envs.tensor import core
from metarim.envs.tensor.codes import EMPTY
from metarim.envs.tensor.layouts import (
    EpisodeStream,
    GeneratorCache,
    Layout,
    LayoutGenerator,
    check_supported,
)
from metarim.envs.tensor.prefetch import PrefetchSource
from metarim.tasks.schedule import Schedule, TaskStream, column_stream
from metarim.tasks.seeding import env_seeds
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["TensorGoToVecEnv", "make_tensor_vec_env"]

NUM_ACTIONS = 7


class TensorGoToVecEnv:
    """``num_envs`` BabyAI GoTo episodes stepped at once (see module docstring).

    Implements :class:`~metarim.envs.protocols.CheckpointableVecEnv`.

    Args:
        task: one :class:`~metarim.tasks.task.Task` for all envs, or one per env.
        num_envs: ``B >= 1``.
        seed: base seed, split per env as ``make_vec_env`` splits it.
        vocab: the word-id vocabulary for missions.
        device: torch device of the state and outputs.
        numpy: return NumPy arrays (as a gymnasium vector env does) instead of tensors.
        workers: background processes that make layouts; ``0`` makes them in-process.
        prefetch: layouts kept ready per env when ``workers > 0``.
        cache_size: layouts cached by seed per level (useful for small seed ranges).
        schedule: a :class:`~metarim.tasks.schedule.Schedule`: env ``b``'s episodes take
            their tasks from its :func:`~metarim.tasks.schedule.column_stream` for its own
            task ``task[b]`` (:meth:`set_phase` switches phases); the grid holds the
            largest level of every phase.
        phase: the phase the env starts in.
    """

    def __init__(
        self,
        task: Any,
        num_envs: int,
        *,
        seed: int,
        vocab: Any,
        device: torch.device | str = "cpu",
        numpy: bool = False,
        workers: int = 0,
        prefetch: int = 4,
        cache_size: int = 0,
        schedule: Schedule | None = None,
        phase: int = 0,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be >= 1")
        if workers < 0 or prefetch < 1:
            raise ValueError(f"workers={workers} must be >= 0 and prefetch={prefetch} >= 1")
        tasks = [task] * num_envs if not isinstance(task, (list, tuple)) else list(task)
        if len(tasks) != num_envs:
            raise ValueError(f"got {len(tasks)} tasks for {num_envs} envs")
        all_tasks = tasks if schedule is None else [
            t for k in range(len(schedule.phases)) for base in tasks for t in schedule.phases[k].tasks_for(base)]
        for t in all_tasks:
            check_supported(t.level)
        self.num_envs, self.tasks, self.vocab = num_envs, tasks, vocab
        self.device, self.numpy = torch.device(device), numpy
        gens: dict[Any, LayoutGenerator] = {}
        for t in all_tasks:
            key = (t.level, t.env_kwargs)
            if key not in gens:
                gens[key] = LayoutGenerator(t.level, t.env_kwargs)
        size = (max(g.width for g in gens.values()), max(g.height for g in gens.values()))
        for key in gens:
            gens[key] = LayoutGenerator(key[0], key[1], grid_size=size, cache_size=cache_size)
        self.grid_shape = (next(iter(gens.values())).wp, next(iter(gens.values())).hp)
        self.tables = core.Tables.build(self.grid_shape[1], self.device)
        self.seeds = env_seeds(seed, num_envs)
        self.schedule, self.phase = schedule, phase
        streams = None if schedule is None else [column_stream(schedule, phase, t, s)
                                                 for t, s in zip(tasks, self.seeds)]
        if workers:
            self.source: Any = PrefetchSource(tasks, self.seeds, size, workers=workers, depth=prefetch,
                                              cache_size=cache_size, streams=streams)
        elif streams is not None:
            cache = GeneratorCache(size, cache_size)
            cache.generators.update(gens)
            self.source = _SyncSource([EpisodeStream(t, s, tasks=st, generators=cache)
                                       for t, s, st in zip(tasks, self.seeds, streams)])
        else:
            self.source = _SyncSource([EpisodeStream(t, s, gens[(t.level, t.env_kwargs)])
                                       for t, s in zip(tasks, self.seeds)])
        self.max_len = max(int(g.env.max_steps) for g in gens.values())
        self.state: core.GoToState | None = None
        self.features = core.Features(frozenset(), False, False, False)  # grows with the layouts loaded
        self.layouts: list[Layout | None] = [None] * num_envs
        self.mission = torch.zeros(num_envs, vocab.max_len, dtype=torch.int64, device=self.device)
        self._init_spaces()

    def _init_spaces(self) -> None:
        import gymnasium as gym
        from gymnasium.vector.utils import batch_space

        v = self.vocab
        self.single_observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (7, 7, 3), np.uint8),
            "direction": gym.spaces.Box(0, 3, (), np.int64),
            "mission": gym.spaces.Box(0, v.max_size - 1, (v.max_len,), np.int64),
        })
        self.single_action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # ------------------------------------------------------------------ episodes
    def _load(self, idx: list[int], layouts: list[Layout]) -> None:
        """Starts the episodes ``layouts`` in envs ``idx``."""
        dev = self.device
        n = len(idx)
        new = core.GoToState(
            grid=torch.from_numpy(np.stack([lay.grid for lay in layouts])).to(dev),
            target=torch.from_numpy(np.stack([lay.target for lay in layouts])).to(dev),
            pos=torch.tensor([lay.pos for lay in layouts], dtype=torch.int64, device=dev),
            dir=torch.tensor([lay.dir for lay in layouts], dtype=torch.int64, device=dev),
            carrying=torch.full((n,), EMPTY, dtype=torch.int64, device=dev),
            steps=torch.zeros(n, dtype=torch.int64, device=dev),
            max_steps=torch.tensor([lay.max_steps for lay in layouts], dtype=torch.int64, device=dev),
            kind=torch.tensor([lay.kind for lay in layouts], dtype=torch.int64, device=dev),
            strict=torch.tensor([lay.strict for lay in layouts], dtype=torch.bool, device=dev),
            see_through=torch.tensor([lay.see_through for lay in layouts], dtype=torch.bool, device=dev),
            dirty=torch.zeros(n, dtype=torch.bool, device=dev),
        )
        for lay in layouts:
            if lay.kind not in self.features.kinds or (lay.strict and not self.features.strict) or \
                    (lay.hazards and not self.features.hazards) or (lay.see_through and not self.features.see_through):
                self.features = self.features | core.Features(frozenset((lay.kind,)), lay.strict, lay.hazards,
                                                               lay.see_through)
        longest = max(lay.max_steps for lay in layouts)
        if longest > self.max_len:  # the action log (for get_state) grows with the step limit
            self.max_len = longest
            if self.state is not None:
                self.actions = torch.cat([self.actions, self.actions.new_zeros(
                    self.num_envs, longest - self.actions.shape[1])], 1)
        mission = torch.from_numpy(np.stack([self.vocab.encode(lay.mission) for lay in layouts])).to(dev)
        for b, lay in zip(idx, layouts):
            self.layouts[b] = lay
        if self.state is None or n == self.num_envs and idx == list(range(n)):
            self.state = new
            self.mission = mission
            self.actions = torch.zeros(self.num_envs, self.max_len, dtype=torch.int64, device=dev)
        else:
            t = torch.tensor(idx, dtype=torch.int64, device=dev)
            self.state.index_copy_(t, new)
            self.mission.index_copy_(0, t, mission)

    def _obs(self) -> dict[str, Any]:
        obs = {"image": core.observe(self.state, self.tables, self.features), "direction": self.state.dir.clone(),
               "mission": self.mission.clone()}
        return {k: v.cpu().numpy() for k, v in obs.items()} if self.numpy else obs

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Starts a new episode in every env; ``seed`` reseeds as gymnasium's vector envs do.

        An int ``seed`` reseeds env ``b`` with ``seed + b``, a list gives one seed per env.
        ``options`` is accepted for gymnasium compatibility and ignored.
        """
        if seed is not None:
            seeds = [seed + b for b in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
            for b, s in enumerate(seeds):
                self.source.reseed(b, s)
        idx = list(range(self.num_envs))
        self._load(idx, self.source.take(idx))
        return self._obs(), {}

    def step(self, actions: Any) -> tuple[dict[str, Any], Any, Any, Any, dict[str, Any]]:
        """Steps all envs; returns ``(obs, reward, terminated, truncated, info)``.

        Ended envs are reset in the same step (their returned observation starts the
        next episode), as ``gymnasium.vector.AutoresetMode.SAME_STEP`` does.
        """
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = torch.as_tensor(actions, device=self.device).to(torch.int64)
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {tuple(a.shape)}")
        if bool(((a < 0) | (a >= NUM_ACTIONS)).any()):
            raise ValueError(f"actions must be in 0..{NUM_ACTIONS - 1}, got {a.tolist()}")
        steps = self.state.steps
        self.actions.scatter_(1, steps.clamp(max=self.max_len - 1).unsqueeze(1), a.unsqueeze(1))
        reward, term, trunc = core.step(self.state, a, self.tables, self.features)
        done = term | trunc
        if bool(done.any()):
            idx = done.nonzero().squeeze(1).tolist()
            self._load(idx, self.source.take(idx))
        obs = self._obs()
        if self.numpy:
            return obs, reward.cpu().numpy(), term.cpu().numpy(), trunc.cpu().numpy(), {}
        return obs, reward, term, trunc, {}

    # ------------------------------------------------------------------ schedules
    def set_phase(self, phase: int) -> None:
        """Under a schedule: from each env's next episode on, its tasks are phase
        ``phase``'s (a fresh :func:`~metarim.tasks.schedule.column_stream`); the running
        episodes go on until they end or :meth:`reset` starts new ones (as a phase switch
        does: ``Learner.set_phase``). The episode seeds continue where they are."""
        if self.schedule is None:
            raise ValueError("set_phase needs an env built with a schedule")
        if self.state is None:
            raise RuntimeError("call reset() before set_phase()")
        self.phase = phase
        for b in range(self.num_envs):
            lay = self.layouts[b]
            self.source.switch(b, lay.rng_state, column_stream(self.schedule, phase, self.tasks[b], self.seeds[b]))

    def current_tasks(self) -> list[Task]:
        """The task of each env's current episode (its own task without a schedule)."""
        if self.schedule is None:
            return list(self.tasks)
        if self.state is None:
            raise RuntimeError("call reset() before current_tasks()")
        return [lay.task for lay in self.layouts]  # type: ignore[union-attr,misc]

    # ------------------------------------------------------------------ checkpoints
    def get_env_state(self, b: int) -> dict[str, Any]:
        """Env ``b``'s state as ``TaskEnv.get_state`` gives it (under a schedule, with the
        phase and the task stream's state: ``"phase"``, ``"tasks"``)."""
        lay = self.layouts[b]
        if lay is None or self.state is None:
            raise RuntimeError("call reset() before get_env_state()")
        n = int(self.state.steps[b])
        out = {"rng": lay.rng_state, "episode_seed": lay.seed, "actions": self.actions[b, :n].tolist()}
        if self.schedule is not None:
            out.update(phase=self.phase, tasks=lay.tasks_state)
        return out

    def set_env_state(self, b: int, state: dict[str, Any]) -> None:
        """Rebuilds env ``b`` from :meth:`get_env_state` (or ``TaskEnv.get_state``) by replay."""
        if self.state is None:
            raise RuntimeError("call reset() before set_env_state()")
        tasks = None
        if self.schedule is not None:
            if "tasks" not in state:
                raise ValueError("env state has no task stream: it was saved without a schedule")
            self.phase = int(state["phase"])
            tasks = column_stream(self.schedule, self.phase, self.tasks[b], self.seeds[b])
            tasks.load_state_dict(state["tasks"])
            lay = self.source.restore(b, state["rng"], int(state["episode_seed"]), tasks)
        else:
            lay = self.source.restore(b, state["rng"], int(state["episode_seed"]))
        self._load([b], [lay])
        for a in state["actions"]:
            sub = core.GoToState(**{k: v[b : b + 1].clone() for k, v in vars(self.state).items()})
            core.step(sub, torch.tensor([int(a)], device=self.device), self.tables, self.features)
            self.state.index_copy_(torch.tensor([b], device=self.device), sub)
        n = len(state["actions"])
        self.actions[b, :n] = torch.as_tensor(state["actions"], dtype=torch.int64)

    def get_states(self) -> list[dict[str, Any]]:
        """Each env's :meth:`get_env_state`."""
        return [self.get_env_state(b) for b in range(self.num_envs)]

    def set_states(self, states: list[dict[str, Any]]) -> None:
        """Restores :meth:`get_states` (or ``TaskEnv.get_state`` s) by replay."""
        if len(states) != self.num_envs:
            raise ValueError(f"got {len(states)} env states for {self.num_envs} envs")
        for b, state in enumerate(states):
            self.set_env_state(b, state)

    def close(self) -> None:
        """Stops the background workers, if any."""
        self.source.close()


def make_tensor_vec_env(
    task: Task | list[Task],
    num_envs: int,
    *,
    seed: int,
    vocab: Vocab,
    asynchronous: bool = False,
    worker: bool = False,
    **kwargs: Any,
) -> TensorGoToVecEnv:
    """The ``"tensor"`` backend of :func:`metarim.envs.make_vec_env`.

    Args:
        task: one task for all envs, or a list of ``num_envs`` tasks (supported levels only).
        num_envs: number of envs, ``>= 1``.
        seed: base seed (split per env by :func:`~metarim.tasks.seeding.env_seeds`, as
            for minigrid).
        vocab: the shared vocabulary.
        asynchronous: make layouts in a background process (``workers=1``).
        worker: not supported (the env worker steps minigrid envs).
        **kwargs: further :class:`TensorGoToVecEnv` keywords (``device``, ``workers``,
            ``prefetch``, ``cache_size``, ``schedule``, ``phase``).

    Returns:
        a :class:`TensorGoToVecEnv` in NumPy mode.
    """
    if worker:
        raise ValueError("make_vec_env: worker=True needs backend='minigrid', not 'tensor'")
    kwargs.setdefault("workers", 1 if asynchronous else 0)
    return TensorGoToVecEnv(task, num_envs, seed=seed, vocab=vocab, numpy=True, **kwargs)

class _SyncSource:
    """Makes layouts in this process, when they are needed."""

    def __init__(self, streams: list[EpisodeStream]) -> None:
        self.streams = streams

    def take(self, idx: list[int]) -> list[Layout]:
        return [self.streams[b].next() for b in idx]

    def close(self) -> None:
        pass

    def reseed(self, b: int, seed: int) -> None:
        self.streams[b].reseed(seed)

    def switch(self, b: int, rng_state: dict[str, Any], tasks: TaskStream) -> None:
        self.streams[b].rng.bit_generator.state = rng_state
        self.streams[b].tasks = tasks

    def restore(self, b: int, rng_state: dict[str, Any], episode_seed: int,
                tasks: TaskStream | None = None) -> Layout:
        return self.streams[b].restore(rng_state, episode_seed, tasks)
