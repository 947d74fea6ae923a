"""Batched tensor implementations of minigrid levels (the BabyAI GoTo family).

:class:`TensorGoToVecEnv` steps ``B`` episodes of a one-room BabyAI GoTo level at once
with torch ops and equals minigrid exactly: observations, rewards, terminations,
truncations and the episodes themselves (layouts come from minigrid, seeded as
:func:`metarim.envs.make_vec_env` seeds its envs). :func:`make_tensor_vec_env` is
the ``"tensor"`` env backend of the RL engine. Design and measurements:
``docs/tensor_env.md``.

This package imports gymnasium and minigrid on use; ``import metarim`` does not import it.
"""

from __future__ import annotations

from metarim.envs.tensor.backend import make_tensor_vec_env
from metarim.envs.tensor.core import GoToState, Tables, observe, step
from metarim.envs.tensor.layouts import (
    SUPPORTED_LEVELS,
    EpisodeStream,
    Layout,
    LayoutGenerator,
    check_supported,
)
from metarim.envs.tensor.vector import TensorGoToVecEnv, env_seeds

__all__ = [
    "SUPPORTED_LEVELS",
    "EpisodeStream",
    "GoToState",
    "Layout",
    "LayoutGenerator",
    "Tables",
    "TensorGoToVecEnv",
    "check_supported",
    "env_seeds",
    "make_tensor_vec_env",
    "observe",
    "step",
]
