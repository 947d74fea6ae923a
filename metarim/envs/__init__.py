"""Everything that steps an environment.

* :mod:`metarim.envs.minigrid`: one MiniGrid/BabyAI env per task (:class:`TaskEnv`) and
  gymnasium vector envs of them;
* :mod:`metarim.envs.worker`: those envs in a background process, stepped in slices;
* :mod:`metarim.envs.tensor`: batched torch levels equal to minigrid step for step.

:func:`make_vec_env` picks the backend by name. This package imports gymnasium and
minigrid; ``import metarim`` does not import it.
"""

from __future__ import annotations

from metarim.envs.minigrid import TaskEnv, check_level, make_env, make_vec_env

__all__ = ["TaskEnv", "check_level", "make_env", "make_vec_env"]
