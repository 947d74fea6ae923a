"""metarim: fast and slow learning of recurrent independent mechanisms (Meta-RIM).

Importing :mod:`metarim` only imports torch and the RIM core. Environments, plotting and
learn2learn are imported lazily, on first use of the names that need them.

References:
    Madan, Ke, Goyal, Schölkopf, Bengio. "Fast and Slow Learning of Recurrent
    Independent Mechanisms". ICLR 2021. arXiv:2105.08710.
"""

from __future__ import annotations

import importlib
from typing import Any

from metarim._version import __version__
from metarim.rim import RIM, GroupGRUCell, GroupLinear, GroupLSTMCell, RIMCell

# Public names provided by submodules that are imported on first access (they pull in
# learn2learn, minigrid, ...): name -> module.
_LAZY = {
    "A2C": "metarim.algorithms.ppo",
    "MAML": "metarim.algorithms.maml",
    "MaskedLearner": "metarim.meta.backends",
    "MaskedMAML": "metarim.meta.maml",
    "MetaRIM": "metarim.algorithms.meta_rim",
    "PPO": "metarim.algorithms.ppo",
    "ParamPartition": "metarim.meta.partition",
    "Reptile": "metarim.algorithms.reptile",
    "Task": "metarim.tasks.task",
    "TrainConfig": "metarim.config",
    "fast_adaptation": "metarim.evaluation.adaptation",
    "make_learner": "metarim.algorithms.base",
    "make_vec_env": "metarim.envs.minigrid",
    "module_activity": "metarim.evaluation.adaptation",
    "partition_parameters": "metarim.meta.partition",
    "reduce_activity": "metarim.meta.partition",
    "zero_shot": "metarim.evaluation.adaptation",
}

__all__ = [
    "A2C",
    "GroupGRUCell",
    "GroupLSTMCell",
    "GroupLinear",
    "MAML",
    "MaskedLearner",
    "MaskedMAML",
    "MetaRIM",
    "PPO",
    "ParamPartition",
    "RIM",
    "RIMCell",
    "Reptile",
    "Task",
    "TrainConfig",
    "__version__",
    "fast_adaptation",
    "make_learner",
    "make_vec_env",
    "module_activity",
    "partition_parameters",
    "reduce_activity",
    "zero_shot",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metarim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
