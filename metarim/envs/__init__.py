"""Everything that steps an environment.

* :mod:`metarim.envs.minigrid`: one MiniGrid/BabyAI env per task (:class:`TaskEnv`) and
  checkpointable gymnasium vector envs of them (:class:`MinigridVecEnv`);
* :mod:`metarim.envs.worker`: such a vector env in a background process, stepped in slices;
* :mod:`metarim.envs.tensor`: batched torch levels equal to minigrid step for step;
* :mod:`metarim.envs.protocols`: what the RL engine needs of a vector env (and what a
  schedule needs: :class:`ScheduledVecEnv`).

:func:`make_vec_env` builds a vector env through the backend registry
:data:`ENV_BACKENDS` (``"minigrid"``, ``"tensor"``; :func:`register_env_backend` adds
one). This package imports gymnasium, minigrid and torch; ``import metarim`` does not
import it.

Example:
    >>> from metarim.tasks import Task, Vocab
    >>> envs = make_vec_env(Task("BabyAI-GoToLocalS5N2-v0"), 2, seed=0, vocab=Vocab())
    >>> isinstance(envs, CheckpointableVecEnv), len(envs.get_states())
    (True, 2)
    >>> make_vec_env(Task("BabyAI-GoToLocalS5N2-v0"), 2, seed=0, vocab=Vocab(), backend="jax")
    Traceback (most recent call last):
    ...
    ValueError: backend='jax' must be one of 'minigrid', 'tensor'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from metarim.envs.minigrid import (
    MinigridVecEnv,
    TaskEnv,
    check_level,
    make_env,
    make_minigrid_vec_env,
)
from metarim.envs.protocols import CheckpointableVecEnv, PipelinedVecEnv, ScheduledVecEnv
from metarim.envs.tensor import TensorGoToVecEnv, make_tensor_vec_env
from metarim.envs.worker import WorkerVecEnv
from metarim.tasks.schedule import Schedule
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = [
    "ENV_BACKENDS",
    "CheckpointableVecEnv",
    "EnvBackend",
    "MinigridVecEnv",
    "PipelinedVecEnv",
    "ScheduledVecEnv",
    "TaskEnv",
    "TensorGoToVecEnv",
    "WorkerVecEnv",
    "check_level",
    "make_env",
    "make_vec_env",
    "register_env_backend",
]

EnvBackend = Callable[..., Any]
"""``(task, num_envs, *, seed, vocab, asynchronous=False, worker=False) -> vector env``;
with a schedule also ``schedule=`` and ``phase=``."""

ENV_BACKENDS: dict[str, EnvBackend] = {
    "minigrid": make_minigrid_vec_env,
    "tensor": make_tensor_vec_env,
}
"""The env backends by name (``TrainConfig.env_backend``, CLI ``--env-backend``)."""


def register_env_backend(name: str) -> Callable[[EnvBackend], EnvBackend]:
    """Decorator that adds a builder to :data:`ENV_BACKENDS` under ``name``.

    The builder takes :func:`make_vec_env`'s arguments (but ``backend``) and returns a
    :class:`~metarim.envs.protocols.CheckpointableVecEnv`; it raises ``ValueError`` for
    options it does not support.
    """

    def add(make: EnvBackend) -> EnvBackend:
        if name in ENV_BACKENDS:
            raise ValueError(f"env backend {name!r} is already registered")
        ENV_BACKENDS[name] = make
        return make

    return add


def make_vec_env(
    task: Task | list[Task],
    num_envs: int,
    *,
    seed: int,
    vocab: Vocab,
    asynchronous: bool = False,
    backend: str = "minigrid",
    worker: bool = False,
    schedule: Schedule | None = None,
    phase: int = 0,
) -> Any:
    """Builds a vector env of ``num_envs`` copies of ``task`` (or one env per task).

    Every backend seeds env ``b`` with ``env_seeds(seed, num_envs)[b]``
    (:func:`~metarim.tasks.seeding.env_seeds`) and resets ended envs in the same step, so
    the backends give the same episodes.

    Args:
        task: one task for all envs, or a list of ``num_envs`` tasks.
        num_envs: number of envs, ``>= 1``.
        seed: base seed.
        vocab: the shared vocabulary.
        asynchronous: minigrid: a gymnasium ``AsyncVectorEnv`` (not checkpointable; the
            vocabulary must already hold every word); tensor: layouts made in a background
            process.
        backend: a name in :data:`ENV_BACKENDS`: ``"minigrid"``
            (:func:`~metarim.envs.minigrid.make_minigrid_vec_env`) or ``"tensor"``
            (:func:`~metarim.envs.tensor.make_tensor_vec_env`: the same episodes, batched in
            torch; BabyAI GoTo levels only).
        worker: minigrid envs in a background process, stepped in two slices
            (:class:`~metarim.envs.worker.WorkerVecEnv`: the same episodes; lets
            :class:`~metarim.rl.rollout.RolloutCollector` overlap the policy and the envs).
        schedule: a :class:`~metarim.tasks.schedule.Schedule`: env ``b``'s episodes take
            their tasks from its :func:`~metarim.tasks.schedule.column_stream` (the phase's
            tasks for env ``b``'s own task), and the env gains ``set_phase(k)`` and
            ``current_tasks()`` (:class:`~metarim.envs.protocols.ScheduledVecEnv`).
        phase: the phase a scheduled env starts in.

    Returns:
        a :class:`~metarim.envs.protocols.CheckpointableVecEnv` (unless ``asynchronous``
        minigrid).
    """
    make = ENV_BACKENDS.get(backend)
    if make is None:
        raise ValueError(f"backend={backend!r} must be one of {', '.join(map(repr, sorted(ENV_BACKENDS)))}")
    kw = {} if schedule is None else {"schedule": schedule, "phase": phase}
    return make(task, num_envs, seed=seed, vocab=vocab, asynchronous=asynchronous, worker=worker, **kw)
