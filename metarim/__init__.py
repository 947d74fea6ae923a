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

# Public names provided by submodules that are imported on first access.
_LAZY = {
    # filled in by the modules that need heavy imports (learn2learn, minigrid, ...)
    "MAML": "metarim.algorithms.maml",
    "MaskedLearner": "metarim.backends",
    "MetaRIM": "metarim.algorithms.meta_rim",
    "Reptile": "metarim.algorithms.reptile",
    "fast_adaptation": "metarim.adaptation_eval",
    "module_activity": "metarim.adaptation_eval",
    "zero_shot": "metarim.adaptation_eval",
    "MaskedMAML": "metarim.adapt",
    "ParamPartition": "metarim.params",
    "partition_parameters": "metarim.params",
    "reduce_activity": "metarim.params",
}

__all__ = sorted(
    [
        "GroupGRUCell",
        "GroupLSTMCell",
        "GroupLinear",
        "RIM",
        "RIMCell",
        "__version__",
        *_LAZY,
    ]
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metarim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
