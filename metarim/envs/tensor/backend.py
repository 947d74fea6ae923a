"""The ``"tensor"`` env backend of the RL engine.

:func:`make_tensor_vec_env` has :func:`metarim.envs.minigrid.make_vec_env`'s signature
and returns a :class:`~metarim.envs.tensor.vector.TensorGoToVecEnv` in NumPy mode, so
:class:`~metarim.rl.rollout.RolloutCollector` (and its checkpoints, through the
per-env ``get_state``/``set_state`` handles) works unchanged. ``make_vec_env(...,
backend="tensor")`` and ``TrainConfig(env_backend="tensor")`` (CLI
``--env-backend tensor``) select it.

Example:
    >>> from metarim.tasks import Task, Vocab
    >>> envs = make_tensor_vec_env(Task("BabyAI-GoToLocalS5N2-v0"), 2, seed=0, vocab=Vocab())
    >>> obs, _ = envs.reset()
    >>> type(obs["image"]).__name__, obs["direction"].dtype
    ('ndarray', dtype('int64'))
"""

from __future__ import annotations

from typing import Any

from metarim.envs.tensor.vector import TensorGoToVecEnv

__all__ = ["make_tensor_vec_env"]


def make_tensor_vec_env(
    task: Any, num_envs: int, *, seed: int, vocab: Any, asynchronous: bool = False, **kwargs: Any
) -> TensorGoToVecEnv:
    """``make_vec_env`` for the tensor backend.

    Args:
        task: one task for all envs, or a list of ``num_envs`` tasks (supported levels only).
        num_envs: number of envs, ``>= 1``.
        seed: base seed (split per env exactly as ``make_vec_env`` splits it).
        vocab: the shared vocabulary.
        asynchronous: make layouts in a background process (``workers=1``).
        **kwargs: further :class:`TensorGoToVecEnv` keywords (``device``, ``workers``,
            ``prefetch``, ``cache_size``).
    """
    kwargs.setdefault("workers", 1 if asynchronous else 0)
    return TensorGoToVecEnv(task, num_envs, seed=seed, vocab=vocab, numpy=True, **kwargs)
