r"""Backends of :class:`~metarim.meta.maml.MaskedMAML`: the same masked step, three ways.

* ``"learn2learn"``: ``learn2learn.clone_module`` and
  :func:`~metarim.meta.functional.masked_maml_update` (``p.update = -lr * (M * g)`` then
  ``update_module``): the default, fast path;
* ``"func"``: a parameter dict, :func:`~metarim.meta.functional.masked_update` and
  ``torch.func.functional_call``;
* ``"higher"``: ``higher``'s patched module and differentiable SGD (rate 1), whose
  ``grad_callback`` returns :math:`-u` of :func:`~metarim.meta.functional.masked_delta`;
  a cross-check.

Each is a :class:`MaskedLearner` registered by name with :func:`register_backend`; a new
backend needs no edit elsewhere. A backend class is built as ``cls(meta, first_order)``
from a :class:`MetaWrapper` (a :class:`~metarim.meta.maml.MaskedMAML`) and implements
:meth:`~MaskedLearner.forward`, :meth:`~MaskedLearner.parameter_dict`, ``_update`` and,
to support :meth:`MaskedLearner.clone`, ``_clone``.

References:
    Arnold, Mahajan, Datta, Bunner, Zarkias. "learn2learn: A Library for Meta-Learning
    Research". 2020. arXiv:2008.12284. Grefenstette et al. "Generalized Inner Loop
    Meta-Learning" (higher). 2019. arXiv:1910.01727.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional, Protocol

import torch
from torch import Tensor, nn

from metarim.meta.functional import (
    LearningRate,
    activity_masks,
    masked_delta,
    masked_maml_update,
    masked_update,
)
from metarim.meta.partition import ParamPartition, TensorDict

__all__ = [
    "FuncLearner",
    "HigherLearner",
    "L2LLearner",
    "MaskedLearner",
    "MetaWrapper",
    "available_backends",
    "get_backend",
    "quiet_nonleaf_grad",
    "register_backend",
]


class MetaWrapper(Protocol):
    """What a backend reads from the wrapper it clones (:class:`~metarim.meta.maml.MaskedMAML`)."""

    module: nn.Module
    partition: ParamPartition
    reduction: str
    k: Optional[int]

    def learning_rates(self) -> LearningRate: ...


_BACKENDS: dict[str, type[MaskedLearner]] = {}


def register_backend(name: str) -> Callable[[type[MaskedLearner]], type[MaskedLearner]]:
    """Class decorator registering a :class:`MaskedLearner` subclass under ``name``."""

    def wrap(cls: type[MaskedLearner]) -> type[MaskedLearner]:
        _BACKENDS[name] = cls
        return cls

    return wrap


def available_backends() -> tuple[str, ...]:
    """Names accepted by ``MaskedMAML(backend=...)``.

    Example:
        >>> available_backends()
        ('func', 'higher', 'learn2learn')
    """
    return tuple(sorted(_BACKENDS))


def get_backend(name: str) -> type[MaskedLearner]:
    """The :class:`MaskedLearner` class registered as ``name``.

    Raises:
        ValueError: if no backend has that name.
    """
    if name not in _BACKENDS:
        raise ValueError(f"backend={name!r} is not one of {available_backends()}")
    return _BACKENDS[name]


@contextlib.contextmanager
def quiet_nonleaf_grad() -> Iterator[None]:
    """Silence torch's warning that the ``.grad`` of a non-leaf tensor is read.

    learn2learn re-runs ``_apply`` on RNN modules (``nn.GRU``, ``nn.LSTM``) whose cloned
    parameters are non-leaf by design, and torch then warns.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf")
        yield


class MaskedLearner(nn.Module):
    """A differentiable clone made by :meth:`MaskedMAML.clone`; runs like the wrapped module.

    Subclasses (one per backend) implement :meth:`forward`, :meth:`parameter_dict`,
    ``_update`` and ``_clone``; masking, reductions and defaults live here.
    """

    def __init__(self, meta: MetaWrapper, first_order: bool):
        super().__init__()
        self._meta = (meta,)  # a reference, not a submodule: its parameters are not ours
        self.partition: ParamPartition = meta.partition
        self.first_order = first_order
        self.reduction, self.k = meta.reduction, meta.k
        self.lr: LearningRate = meta.learning_rates()

    def parameter_dict(self) -> TensorDict:
        """Current (adapted) tensors of all parameters, by their name in the wrapped module."""
        raise NotImplementedError

    def fast_parameters(self) -> TensorDict:
        """Current tensors of the fast parameters only."""
        params = self.parameter_dict()
        return {name: params[name] for name in self.partition.fast}

    def block_masks(self, active: Optional[Any]) -> Optional[TensorDict]:
        """Masks for ``active`` (``None``: no mask); ``(..., N)`` is reduced first."""
        ref = next(iter(self.fast_parameters().values()))
        return activity_masks(self.partition, active, ref, self.reduction, self.k)

    def clone(self, *, first_order: Optional[bool] = None) -> MaskedLearner:
        """A differentiable copy that starts from this learner's current (adapted)
        parameters; gradients of its outputs flow back through them (and this learner's
        inner steps) to the wrapped module, as with learn2learn's ``MAML.clone()``.

        Args:
            first_order: ``None`` keeps this learner's default.
        """
        return self._clone(self.first_order if first_order is None else bool(first_order))

    def adapt(
        self,
        loss: Tensor,
        active: Optional[Any] = None,
        *,
        first_order: Optional[bool] = None,
        retain_graph: Optional[bool] = None,
    ) -> None:
        r"""One masked inner step :math:`\theta \gets \theta - \alpha (M(a) \odot \nabla_\theta L)`.

        Args:
            loss: inner loss, computed with this learner.
            active: module activity: ``None`` (all modules), a ``(N,)`` bool/float vector,
                or selection masks ``(B, N)`` / ``(T, B, N)`` reduced over every leading
                axis by :func:`~metarim.meta.partition.reduce_activity` with the ``reduction`` of
                the :class:`MaskedMAML` (default ``"any"``: a module counts as active if
                it was selected at any step, for any batch element; ``"topk"``: the
                ``k`` modules selected most often).
            first_order: ``None`` uses the learner's default.
            retain_graph: keep the inner loss graph (default: only in second order).
                Pass ``True`` in first order if the outer loss backpropagates through
                the inner forward pass, e.g. through an undetached recurrent state.

        Raises:
            ValueError: if ``active`` does not have one entry per module.
        """
        first_order = self.first_order if first_order is None else first_order
        masks = self.block_masks(active)
        fast = self.fast_parameters()
        grads = torch.autograd.grad(
            loss,
            list(fast.values()),
            create_graph=not first_order,
            retain_graph=(not first_order) if retain_graph is None else retain_graph,
            allow_unused=True,
        )
        self._update(dict(zip(fast, grads)), masks)

    def _update(self, grads: Mapping[str, Optional[Tensor]], masks: Optional[TensorDict]) -> None:
        raise NotImplementedError

    def _clone(self, first_order: bool) -> MaskedLearner:
        raise NotImplementedError(f"{type(self).__name__} does not support clone()")


@register_backend("learn2learn")
class L2LLearner(MaskedLearner):
    """``learn2learn.clone_module`` of the module, updated by :func:`masked_maml_update`.

    Args:
        module: what to clone (default: the wrapped module; :meth:`clone` passes its own).
    """

    def __init__(self, meta: MetaWrapper, first_order: bool, module: Optional[nn.Module] = None):
        from learn2learn.utils import clone_module  # learn2learn is imported only when used

        super().__init__(meta, first_order)
        with quiet_nonleaf_grad():
            self.module = clone_module(meta.module if module is None else module)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def parameter_dict(self) -> TensorDict:
        return dict(self.module.named_parameters())

    def _update(self, grads: Mapping[str, Optional[Tensor]], masks: Optional[TensorDict]) -> None:
        with quiet_nonleaf_grad():
            self.module = masked_maml_update(self.module, self.lr, grads, masks)

    def _clone(self, first_order: bool) -> MaskedLearner:
        return L2LLearner(self._meta[0], first_order, module=self.module)


@register_backend("func")
class FuncLearner(MaskedLearner):
    """A parameter dict run through ``torch.func.functional_call`` on the original module.

    Args:
        params: the starting tensors by name (default: the wrapped module's parameters).
    """

    def __init__(self, meta: MetaWrapper, first_order: bool, params: Optional[Mapping[str, Tensor]] = None):
        super().__init__(meta, first_order)
        self.params: TensorDict = dict(meta.module.named_parameters() if params is None else params)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self._meta[0].module, self.params, args, kwargs)

    def parameter_dict(self) -> TensorDict:
        return dict(self.params)

    def _update(self, grads: Mapping[str, Optional[Tensor]], masks: Optional[TensorDict]) -> None:
        self.params = masked_update(self.params, grads, self.lr, masks)

    def _clone(self, first_order: bool) -> MaskedLearner:
        return FuncLearner(self._meta[0], first_order, params=self.params)


@register_backend("higher")
class HigherLearner(MaskedLearner):
    """``higher``'s patched module and differentiable SGD (lr 1) with masked gradients.

    This is what ``higher.innerloop_ctx(module, SGD(fast), copy_initial_weights=False)``
    builds, kept beyond a ``with`` block. The ``grad_callback`` returns
    :math:`\\alpha (M \\odot g)` for fast tensors (detached in first order) and ``None``
    for slow ones. ``higher`` differentiates every parameter with ``create_graph``, so
    this backend is a cross-check, not the fast path.

    Args:
        params: the starting tensors by name (default: the wrapped module's parameters).
    """

    def __init__(self, meta: MetaWrapper, first_order: bool, params: Optional[Mapping[str, Tensor]] = None):
        import higher  # imported only when used

        super().__init__(meta, first_order)
        named = list(meta.module.named_parameters())
        self._names = [name for name, _ in named]
        fast = set(self.partition.fast)
        sgd = torch.optim.SGD([p for name, p in named if name in fast], lr=1.0)
        self.fmodule = higher.patch.monkeypatch(meta.module, copy_initial_weights=False)
        if params is not None:
            self.fmodule.update_params([params[name] for name in self._names])
        self._opt = higher.optim.get_diff_optim(sgd, [p for _, p in named], fmodel=self.fmodule)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fmodule(*args, **kwargs)

    def parameter_dict(self) -> TensorDict:
        return dict(zip(self._names, self.fmodule.fast_params))

    def adapt(self, loss: Tensor, active: Optional[Any] = None, *,
              first_order: Optional[bool] = None, retain_graph: Optional[bool] = None) -> None:
        first_order = self.first_order if first_order is None else first_order
        masks = self.block_masks(active)
        fast = set(self.partition.fast)

        def callback(grads: tuple[Optional[Tensor], ...]) -> list[Optional[Tensor]]:
            out: list[Optional[Tensor]] = []
            for name, grad in zip(self._names, grads):
                if name not in fast or grad is None:
                    out.append(None)
                    continue
                grad = grad.detach() if first_order else grad
                out.append(-masked_delta(self.lr, name, grad, None if masks is None else masks.get(name)))
            return out

        self._opt.step(loss, grad_callback=callback)

    adapt.__doc__ = MaskedLearner.adapt.__doc__

    def _clone(self, first_order: bool) -> MaskedLearner:
        return HigherLearner(self._meta[0], first_order, params=self.parameter_dict())
