"""Batched tensor implementations of minigrid levels (BabyAI and MiniGrid).

:class:`TensorGoToVecEnv` steps ``B`` episodes of the levels of :data:`SUPPORTED_LEVELS`
(doors, keys, balls, boxes, goals, lava; GoTo, Pickup, Open and PutNext instructions)
at once with torch ops and equals minigrid exactly: observations, rewards, terminations,
truncations and the episodes themselves (layouts come from minigrid, seeded as
:func:`metarim.envs.make_vec_env` seeds its envs). :func:`make_tensor_vec_env` is
the ``"tensor"`` backend of :func:`metarim.envs.make_vec_env`. Design and
measurements: ``docs/tensor_env.md``.

``import metarim`` does not import this package.
"""

from __future__ import annotations

from metarim.envs.tensor.core import GoToState, Tables, observe, step
from metarim.envs.tensor.layouts import (
    GOTO_LEVELS,
    SUPPORTED_LEVELS,
    EpisodeStream,
    Layout,
    LayoutGenerator,
    check_supported,
)
from metarim.envs.tensor.vector import TensorGoToVecEnv, make_tensor_vec_env

__all__ = [
    "GOTO_LEVELS",
    "SUPPORTED_LEVELS",
    "EpisodeStream",
    "GoToState",
    "Layout",
    "LayoutGenerator",
    "Tables",
    "TensorGoToVecEnv",
    "check_supported",
    "make_tensor_vec_env",
    "observe",
    "step",
]
