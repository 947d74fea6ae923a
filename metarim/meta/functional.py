r"""The masked inner step as pure functions: the one definition of Meta-RIM's fast update.

For fast tensors :math:`\theta_i` with gradients :math:`g_i`, block masks :math:`M_i`
(:meth:`~metarim.meta.partition.ParamPartition.block_masks`) and step sizes
:math:`\alpha_i` (one scalar, or one Meta-SGD tensor per name):

.. math:: \theta_i' = \theta_i + u_i, \qquad u_i = -\alpha_i \odot (M_i \odot g_i),

computed by :func:`masked_delta` and nowhere else, as ``-rate * (grad * mask)`` (``-lr *
g`` like learn2learn's ``maml_update``). The callers:

* :func:`masked_update` (``inplace=False``): a new parameter dict, differentiable in
  :math:`\theta`, :math:`g` and :math:`\alpha` (the ``"func"`` backend; :func:`masked_sgd`
  is the same with learn2learn's argument order);
* :func:`masked_update` (``inplace=True``): the same arithmetic written into the tensors
  under ``no_grad``; :func:`adapt_in_place` uses it for a plain module's first-order step
  (Meta-RIM's collection pass, the evaluation adapter);
* :func:`masked_maml_update`: ``p.update = u`` and ``learn2learn.update_module`` (the
  ``"learn2learn"`` backend);
* the ``"higher"`` backend's ``grad_callback``, which returns :math:`-u_i`.

This mirrors torchopt's layering, where one transform with an ``inplace`` flag serves
both the differentiable and the in-place path.

References:
    Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning". ICML 2017. arXiv:1703.03400.
    Li, Zhou, Chen, Li. "Meta-SGD". 2017. arXiv:1707.09835.
    Madan et al. "Fast and Slow Learning of Recurrent Independent Mechanisms". ICLR 2021.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from metarim.meta.partition import ParamPartition, TensorDict, reduce_activity

__all__ = [
    "LearningRate",
    "activity_masks",
    "adapt_in_place",
    "check_lr",
    "masked_delta",
    "masked_maml_update",
    "masked_sgd",
    "masked_update",
]

LearningRate = Union[float, Mapping[str, Union[float, Tensor]]]
"""A scalar step size, or one (possibly learnable, Meta-SGD) rate per fast parameter name."""


def check_lr(lr: Any) -> float:
    """``lr`` as a float, if it is a non-negative real number (not a bool).

    Raises:
        ValueError: otherwise.

    Example:
        >>> check_lr(1)
        1.0
    """
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise ValueError(f"lr={lr!r} must be a non-negative real number")
    if not lr >= 0:
        raise ValueError(f"lr={lr!r} must be non-negative")
    return float(lr)


def masked_delta(lr: LearningRate, name: str, grad: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    r"""The update :math:`u = -\alpha (M \odot g)` of the tensor ``name``.

    ``lr`` is a scalar or a mapping with a rate for ``name``; ``mask=None`` is no mask.

    Raises:
        ValueError: if ``lr`` is a mapping without a rate for ``name``.

    Example:
        >>> masked_delta(0.5, "w", torch.tensor([2.0, 2.0]), torch.tensor([1.0, 0.0])).tolist()
        [-1.0, -0.0]
    """
    if isinstance(lr, Mapping):
        if name not in lr:
            raise ValueError(f"no learning rate for parameter {name!r}")
        rate = lr[name]
    else:
        rate = lr
    return -rate * (grad if mask is None else grad * mask)


def masked_update(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Optional[Tensor]],
    lr: LearningRate,
    masks: Optional[Mapping[str, Tensor]] = None,
    *,
    inplace: bool = False,
) -> TensorDict:
    r"""Masked SGD step :math:`\theta'_i = \theta_i - \alpha_i (M_i \odot g_i)`, by name.

    Args:
        params: tensors by parameter name.
        grads: gradients by name (a subset of ``params``); ``None`` gradients are skipped.
        lr: scalar step size or one rate per name in ``grads`` (:data:`LearningRate`).
        masks: block masks by name (a name without a mask is not masked).
        inplace: ``False``: return new tensors :math:`\theta_i + u_i`, differentiable
            (the inputs are not modified). ``True``: add :math:`u_i` into ``params``'
            tensors under ``torch.no_grad()`` (a first-order step of a plain module).

    Returns:
        A new dict with every entry of ``params``: the stepped tensors (new ones, or the
        same objects updated in place) and the others as they are.

    Raises:
        ValueError: a negative scalar ``lr``, or a gradient for a name not in ``params``.

    Example:
        >>> p = {"w": torch.ones(2, 1), "b": torch.ones(1)}
        >>> g, m = {"w": torch.ones(2, 1)}, {"w": torch.tensor([[1.0], [0.0]])}
        >>> new = masked_update(p, g, 0.5, m)
        >>> new["w"].flatten().tolist(), new["b"] is p["b"], p["w"].flatten().tolist()
        ([0.5, 1.0], True, [1.0, 1.0])
        >>> same = masked_update(p, g, 0.5, m, inplace=True)
        >>> same["w"] is p["w"], p["w"].flatten().tolist()
        (True, [0.5, 1.0])
    """
    if not isinstance(lr, Mapping):
        check_lr(lr)
    new = dict(params)
    for name, grad in grads.items():
        if name not in new:
            raise ValueError(f"gradient for unknown parameter {name!r}")
        if grad is None:
            continue
        mask = None if masks is None else masks.get(name)
        if inplace:
            with torch.no_grad():
                new[name].add_(masked_delta(lr, name, grad, mask))
        else:
            new[name] = new[name] + masked_delta(lr, name, grad, mask)
    return new


def masked_sgd(
    params: Mapping[str, Tensor],
    lr: LearningRate,
    grads: Mapping[str, Optional[Tensor]],
    masks: Optional[Mapping[str, Tensor]] = None,
) -> TensorDict:
    r"""Pure masked SGD step, ``masked_update(params, grads, lr, masks)`` with the
    argument order of learn2learn's ``maml_update(model, lr, grads)``.

    Example:
        >>> p = {"w": torch.ones(2, 1), "b": torch.ones(1)}
        >>> new = masked_sgd(p, 0.5, {"w": torch.ones(2, 1)}, {"w": torch.tensor([[1.0], [0.0]])})
        >>> new["w"].flatten().tolist(), new["b"] is p["b"]
        ([0.5, 1.0], True)
    """
    return masked_update(params, grads, lr, masks)


def masked_maml_update(
    module: nn.Module,
    lr: LearningRate,
    grads: Mapping[str, Optional[Tensor]],
    masks: Optional[Mapping[str, Tensor]] = None,
) -> nn.Module:
    r"""Masked counterpart of learn2learn's ``maml_update``, by parameter name.

    Sets ``p.update`` :math:`= -\alpha (M \odot g)` (:func:`masked_delta`) for each named
    gradient and calls ``learn2learn.update_module``, which swaps :math:`p \gets p + u`
    without in-place operations, so the graph to the original parameters is kept.
    Parameters without a gradient are left untouched (their values and graph do not
    change).

    Example:
        >>> from learn2learn.utils import clone_module
        >>> net = clone_module(nn.Linear(2, 1))
        >>> g = {"weight": torch.ones(1, 2)}
        >>> before = net.bias
        >>> net = masked_maml_update(net, 0.1, g)
        >>> net.bias is before
        True
    """
    from learn2learn.utils import update_module  # learn2learn is imported only when used

    if not isinstance(lr, Mapping):
        check_lr(lr)
    params = dict(module.named_parameters())
    for name, grad in grads.items():
        if name not in params:
            raise ValueError(f"gradient for unknown parameter {name!r}")
        if grad is not None:
            params[name].update = masked_delta(lr, name, grad, None if masks is None else masks.get(name))
    return update_module(module)


def activity_masks(
    partition: ParamPartition, active: Optional[Any], like: Tensor, reduction: str = "any",
    k: Optional[int] = None,
) -> Optional[TensorDict]:
    """Block masks of ``partition`` for ``active``, in ``like``'s dtype and device.

    ``active`` is ``None`` (no mask), a ``(N,)`` activity vector (any sequence) or
    selection masks ``(B, N)`` / ``(T, B, N)``, reduced first by
    :func:`~metarim.meta.partition.reduce_activity` with ``reduction`` (and ``k`` for
    ``"topk"``).

    Raises:
        ValueError: if ``active`` does not have one entry per module.
    """
    if active is None:
        return None
    if not isinstance(active, Tensor):
        active = torch.as_tensor(active)
    if active.dim() > 1:
        active = reduce_activity(active, reduction, k=k)
    return partition.block_masks(active, dtype=like.dtype, device=like.device)


def adapt_in_place(
    module: nn.Module,
    loss: Tensor,
    lr: LearningRate,
    partition: ParamPartition,
    active: Optional[Any] = None,
    *,
    reduction: str = "any",
    k: Optional[int] = None,
) -> TensorDict:
    r"""One first-order masked step of a plain module, in place:
    :math:`\theta \gets \theta - \alpha (M(a) \odot \nabla_\theta L)` on the fast tensors.

    The values equal those of a first-order
    :meth:`~metarim.meta.backends.MaskedLearner.adapt` on a clone, without building one.

    Args:
        module: the module whose fast parameters (by ``partition``'s names) are stepped.
        loss: a loss computed with ``module``.
        lr: step size (:data:`LearningRate`); per-name rates are used as given
            (pass detached rates: nothing differentiates through this step).
        partition: names the fast parameters and their module axes.
        active: module activity, as for :func:`activity_masks`.
        reduction: how ``(T, B, N)`` / ``(B, N)`` activity is reduced
            (:func:`~metarim.meta.partition.reduce_activity`).
        k: modules kept by ``reduction="topk"``.

    Returns:
        The fast parameters by name (the module's own tensors, updated).

    Example:
        >>> from metarim.meta.partition import partition_parameters
        >>> net = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(1.0)
        >>> part = partition_parameters(net, fast="weight")
        >>> loss = net(torch.ones(1, 2)).sum()  # d loss / d weight = 1
        >>> adapt_in_place(net, loss, 0.25, part)["weight"].tolist()
        [[0.75, 0.75]]
    """
    params = dict(module.named_parameters())
    names = list(partition.fast)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    masks = activity_masks(partition, active, params[names[0]], reduction, k)
    return masked_update({n: params[n] for n in names}, dict(zip(names, grads)), lr, masks, inplace=True)
