"""Environment construction for a :class:`~metarim.tasks.task.Task`.

:func:`make_env` wraps one MiniGrid/BabyAI env so that

* each reset draws its episode seed from the task's seed range with a private,
  seedable generator (and redraws until the mission passes the task's filter);
* the mission string becomes a fixed-length array of word ids (:class:`Vocab`), so the
  observation is a ``Dict`` of ``Box`` spaces that gymnasium's vector envs can stack;
* BabyAI's "Sampling rejected" prints are silenced;
* its state (generator, episode seed, actions taken in the episode) is plain data, so a
  checkpoint can rebuild the exact mid-episode state by replaying the actions.

:func:`make_vec_env` stacks ``num_envs`` of them in a gymnasium vector env with
same-step autoreset (the observation returned with ``done`` is the first one of the
next episode).
"""

from __future__ import annotations

import contextlib
import difflib
import io
from typing import Any

import gymnasium as gym
import numpy as np

from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["TaskEnv", "check_level", "make_env", "make_vec_env"]

MAX_FILTER_TRIES = 1000


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

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Starts an episode with the next seed of the task's range (``seed`` reseeds)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        mf = self.task.mission_filter
        for _ in range(MAX_FILTER_TRIES):
            self.episode_seed = int(self.rng.integers(self.task.seed_start, self.task.seed_stop))
            obs, info = self._reset_to(self.episode_seed)
            if mf is None or mf.matches(obs["mission"]):
                break
        else:
            raise RuntimeError(f"no mission of {self.task.level} passed {mf} in {MAX_FILTER_TRIES} tries")
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
        """Plain-data state: generator state, episode seed and actions so far."""
        return {
            "rng": self.rng.bit_generator.state,
            "episode_seed": self.episode_seed,
            "actions": list(self.actions),
        }

    def set_state(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Rebuilds the mid-episode state of :meth:`get_state`; returns the observation."""
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


def make_vec_env(
    task: Task | list[Task],
    num_envs: int,
    *,
    seed: int,
    vocab: Vocab,
    asynchronous: bool = False,
    backend: str = "minigrid",
    worker: bool = False,
) -> gym.vector.VectorEnv:
    """Builds a vector env of ``num_envs`` copies of ``task`` (or one env per task).

    Each env gets its own seed from ``numpy.random.SeedSequence(seed).spawn``. The
    vector env uses same-step autoreset. ``asynchronous=True`` uses subprocesses with
    ``shared_memory=False``; then the vocabulary must already hold every word.

    Args:
        task: one task for all envs, or a list of ``num_envs`` tasks.
        num_envs: number of envs, ``>= 1``.
        seed: base seed.
        vocab: the shared vocabulary.
        asynchronous: use ``AsyncVectorEnv`` instead of ``SyncVectorEnv``.
        backend: ``"minigrid"`` (gymnasium vector env of minigrid envs) or ``"tensor"``
            (:func:`metarim.envs.make_tensor_vec_env`: the same episodes, batched in torch;
            BabyAI GoTo levels only).
        worker: minigrid envs in a background process, stepped in two slices
            (:class:`~metarim.envs.worker.WorkerVecEnv`: the same episodes; lets
            :class:`~metarim.rl.rollout.RolloutCollector` overlap the policy and the envs).
    """
    if worker and backend != "minigrid":
        raise ValueError(f"make_vec_env: worker=True needs backend='minigrid', not {backend!r}")
    if backend == "tensor":  # env backend hook (metarim/envs, docs/tensor_env.md)
        from metarim.envs.tensor.backend import make_tensor_vec_env

        return make_tensor_vec_env(task, num_envs, seed=seed, vocab=vocab, asynchronous=asynchronous)
    if backend != "minigrid":
        raise ValueError(f"backend={backend!r} must be 'minigrid' or 'tensor'")
    if num_envs < 1:
        raise ValueError(f"num_envs={num_envs} must be >= 1")
    tasks = [task] * num_envs if isinstance(task, Task) else list(task)
    if len(tasks) != num_envs:
        raise ValueError(f"got {len(tasks)} tasks for {num_envs} envs")
    for t in {t.level for t in tasks}:
        check_level(t)
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(num_envs)]
    fns = [lambda t=t, s=s: make_env(t, vocab, s) for t, s in zip(tasks, seeds)]
    if worker:
        if asynchronous:
            raise ValueError("make_vec_env: choose asynchronous or worker, not both")
        from metarim.envs.worker import WorkerVecEnv

        return WorkerVecEnv(tasks, seeds, vocab, slices=min(2, num_envs))
    mode = gym.vector.AutoresetMode.SAME_STEP
    if asynchronous:
        vocab.frozen = True
        return gym.vector.AsyncVectorEnv(fns, shared_memory=False, autoreset_mode=mode)
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
