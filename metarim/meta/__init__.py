"""The meta-learning core, lowest layer first: which parameters are fast
(:mod:`~metarim.meta.partition`), the one masked update (:mod:`~metarim.meta.functional`),
the adaptation backends and their registry (:mod:`~metarim.meta.backends`) and
:class:`MaskedMAML` (:mod:`~metarim.meta.maml`)."""

from __future__ import annotations

from metarim.meta.backends import (
    MaskedLearner,
    available_backends,
    get_backend,
    quiet_nonleaf_grad,
    register_backend,
)
from metarim.meta.functional import (
    LearningRate,
    adapt_in_place,
    masked_maml_update,
    masked_sgd,
    masked_update,
)
from metarim.meta.maml import MaskedMAML
from metarim.meta.partition import FastSpec, ParamPartition, partition_parameters, reduce_activity

__all__ = [
    "FastSpec",
    "LearningRate",
    "MaskedLearner",
    "MaskedMAML",
    "ParamPartition",
    "adapt_in_place",
    "available_backends",
    "get_backend",
    "masked_maml_update",
    "masked_sgd",
    "masked_update",
    "partition_parameters",
    "quiet_nonleaf_grad",
    "reduce_activity",
    "register_backend",
]
