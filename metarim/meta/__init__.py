"""The meta-learning core: which parameters are fast (the partition), the one masked
update, the adaptation backends and :class:`MaskedMAML`."""

from __future__ import annotations

from metarim.meta.backends import MaskedLearner
from metarim.meta.maml import (
           MaskedMAML,
           available_backends,
           masked_maml_update,
           masked_sgd,
           register_backend,
)
from metarim.meta.partition import FastSpec, ParamPartition, partition_parameters, reduce_activity

__all__ = ["FastSpec", "MaskedLearner", "MaskedMAML", "ParamPartition", "available_backends",
           "masked_maml_update", "masked_sgd", "partition_parameters", "reduce_activity", "register_backend"]
