"""metarim: fast and slow learning of recurrent independent mechanisms (Meta-RIM).

The top level exports the primitives: the RIM (:class:`RIM`, :class:`RIMCell`, the group
cells), the meta-learning core (:class:`MaskedMAML`, :class:`MaskedLearner`, the
fast/slow partition, :func:`masked_update`, the backend registry), :class:`Task`,
:func:`make_vec_env` and :class:`TrainConfig`. The learners that train a policy from a
``TrainConfig`` live in :mod:`metarim.algorithms` (``metarim.algorithms.MetaRIM``, ...),
the evaluation helpers in :mod:`metarim.evaluation`.

Importing :mod:`metarim` only imports torch and the RIM core. Everything else is imported
lazily, on first use of the names that need it (environments, learn2learn, ...).

References:
    Madan, Ke, Goyal, Schölkopf, Bengio. "Fast and Slow Learning of Recurrent
    Independent Mechanisms". ICLR 2021. arXiv:2105.08710.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from typing import Any

from metarim._version import __version__
from metarim.rim import RIM, GroupGRUCell, GroupLinear, GroupLSTMCell, RIMCell

# Public names imported on first access: name -> module.
_LAZY = {
    "MaskedLearner": "metarim.meta.backends",
    "MaskedMAML": "metarim.meta.maml",
    "ParamPartition": "metarim.meta.partition",
    "Task": "metarim.tasks.task",
    "TrainConfig": "metarim.config",
    "available_backends": "metarim.meta.backends",
    "make_vec_env": "metarim.envs",
    "masked_maml_update": "metarim.meta.functional",
    "masked_update": "metarim.meta.functional",
    "partition_parameters": "metarim.meta.partition",
    "reduce_activity": "metarim.meta.partition",
    "register_backend": "metarim.meta.backends",
}

# Names that moved: name -> the package to import them from. Still returned, with a
# DeprecationWarning, until the next release.
_MOVED = {
    "A2C": "metarim.algorithms",
    "MAML": "metarim.algorithms",
    "MetaRIM": "metarim.algorithms",
    "PPO": "metarim.algorithms",
    "Reptile": "metarim.algorithms",
    "fast_adaptation": "metarim.evaluation",
    "make_learner": "metarim.algorithms",
    "module_activity": "metarim.evaluation",
    "zero_shot": "metarim.evaluation",
}

__all__ = [
    "GroupGRUCell",
    "GroupLSTMCell",
    "GroupLinear",
    "MaskedLearner",
    "MaskedMAML",
    "ParamPartition",
    "RIM",
    "RIMCell",
    "Task",
    "TrainConfig",
    "__version__",
    "available_backends",
    "make_vec_env",
    "masked_maml_update",
    "masked_update",
    "partition_parameters",
    "reduce_activity",
    "register_backend",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _MOVED:  # not cached, so that every use warns
        home = _MOVED[name]
        warnings.warn(f"metarim.{name} is deprecated: use {home}.{name}; it is removed in the next release",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(home), name)
    raise AttributeError(f"module 'metarim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))})
