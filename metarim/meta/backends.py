r"""Backends of :class:`~metarim.meta.maml.MaskedMAML`: the same masked step, three ways.

* ``"learn2learn"``: ``learn2learn.clone_module`` and :func:`~metarim.meta.maml.masked_maml_update`
  (``p.update = -lr * (M * g)`` then ``update_module``): the default, fast path;
* ``"func"``: a parameter dict, :func:`~metarim.meta.maml.masked_sgd` and
  ``torch.func.functional_call``;
* ``"higher"``: ``higher``'s patched module and differentiable SGD, masked in
  ``grad_callback``; a cross-check.

Each is a :class:`MaskedLearner` registered by name with
:func:`~metarim.meta.maml.register_backend`; a new backend needs no edit elsewhere.

References:
    Arnold, Mahajan, Datta, Bunner, Zarkias. "learn2learn: A Library for Meta-Learning
    Research". 2020. arXiv:2008.12284. Grefenstette et al. "Generalized Inner Loop
    Meta-Learning" (higher). 2019. arXiv:1910.01727.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor, nn

from metarim.meta.maml import LearningRate, _step, masked_maml_update, masked_sgd, register_backend
from metarim.meta.partition import ParamPartition, TensorDict, reduce_activity

if TYPE_CHECKING:
    from metarim.meta.maml import MaskedMAML

__all__ = ["FuncLearner", "HigherLearner", "L2LLearner", "MaskedLearner"]


@contextlib.contextmanager
def _quiet_nonleaf_grad() -> Iterator[None]:
    """learn2learn re-runs ``_apply`` on RNN modules (``nn.GRU``, ``nn.LSTM``) whose cloned
    parameters are non-leaf by design; torch then warns that their ``.grad`` is read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf")
        yield


class MaskedLearner(nn.Module):
    """A differentiable clone made by :meth:`MaskedMAML.clone`; runs like the wrapped module.

    Subclasses (one per backend, see :mod:`metarim.meta.backends`) implement :meth:`forward`,
    :meth:`parameter_dict` and ``_update``; masking, reductions and defaults live here.
    """

    def __init__(self, meta: MaskedMAML, first_order: bool):
        super().__init__()
        self.partition: ParamPartition = meta.partition
        self.first_order = first_order
        self.reduction = meta.reduction
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
        if active is None:
            return None
        if not isinstance(active, Tensor):
            active = torch.as_tensor(active)
        if active.dim() > 1:
            active = reduce_activity(active, self.reduction)
        ref = next(iter(self.fast_parameters().values()))
        return self.partition.block_masks(active, dtype=ref.dtype, device=ref.device)

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
                it was selected at any step, for any batch element).
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


@register_backend("learn2learn")
class L2LLearner(MaskedLearner):
    """``learn2learn.clone_module`` of the module, updated by :func:`masked_maml_update`."""

    def __init__(self, meta: MaskedMAML, first_order: bool):
        from learn2learn.utils import clone_module

        super().__init__(meta, first_order)
        with _quiet_nonleaf_grad():
            self.module = clone_module(meta.module)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def parameter_dict(self) -> TensorDict:
        return dict(self.module.named_parameters())

    def _update(self, grads: Mapping[str, Optional[Tensor]], masks: Optional[TensorDict]) -> None:
        with _quiet_nonleaf_grad():
            self.module = masked_maml_update(self.module, self.lr, grads, masks)


@register_backend("func")
class FuncLearner(MaskedLearner):
    """A parameter dict run through ``torch.func.functional_call`` on the original module."""

    def __init__(self, meta: MaskedMAML, first_order: bool):
        super().__init__(meta, first_order)
        self._module = (meta.module,)  # a reference, not a submodule: its parameters are not ours
        self.params: TensorDict = dict(meta.module.named_parameters())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(self._module[0], self.params, args, kwargs)

    def parameter_dict(self) -> TensorDict:
        return dict(self.params)

    def _update(self, grads: Mapping[str, Optional[Tensor]], masks: Optional[TensorDict]) -> None:
        self.params = masked_sgd(self.params, self.lr, grads, masks)


@register_backend("higher")
class HigherLearner(MaskedLearner):
    """``higher``'s patched module and differentiable SGD (lr 1) with masked gradients.

    This is what ``higher.innerloop_ctx(module, SGD(fast), copy_initial_weights=False)``
    builds, kept beyond a ``with`` block. The ``grad_callback`` returns
    :math:`\\alpha (M \\odot g)` for fast tensors (detached in first order) and ``None``
    for slow ones. ``higher`` differentiates every parameter with ``create_graph``, so
    this backend is a cross-check, not the fast path.
    """

    def __init__(self, meta: MaskedMAML, first_order: bool):
        import higher

        super().__init__(meta, first_order)
        named = list(meta.module.named_parameters())
        self._names = [name for name, _ in named]
        fast = set(self.partition.fast)
        sgd = torch.optim.SGD([p for name, p in named if name in fast], lr=1.0)
        self.fmodule = higher.patch.monkeypatch(meta.module, copy_initial_weights=False)
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
                out.append(-_step(self.lr, name, grad, None if masks is None else masks.get(name)))
            return out

        self._opt.step(loss, grad_callback=callback)

    adapt.__doc__ = MaskedLearner.adapt.__doc__
