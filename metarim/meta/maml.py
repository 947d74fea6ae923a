r"""Masked differentiable adaptation: fast learning of the selected RIM modules.

The inner (fast) step adapts only the fast parameters :math:`\theta` (by default the RIM
mechanisms, see :mod:`metarim.meta.partition`) and, inside each stacked tensor, only the blocks
of the modules that the input attention selected:

.. math:: \theta' = \theta - \alpha \odot \big(M(a) \odot \nabla_\theta
          \mathcal{L}_{in}(\theta, \phi)\big), \qquad \phi' = \phi,

where :math:`a \in [0,1]^N` is the activity of the ``N`` modules, :math:`M(a)` its block
mask and :math:`\alpha` a scalar or per-element (Meta-SGD) learning rate. The outer
(slow) loss is differentiated *through* the inner step (second order):

.. math:: \nabla_\phi \mathcal{L}_{out}(\theta', \phi) = \partial_\phi \mathcal{L}_{out}
          - \big(\alpha \odot M(a) \odot \partial_\phi \nabla_\theta \mathcal{L}_{in}\big)^\top
            \partial_{\theta'} \mathcal{L}_{out},
          \qquad
          \nabla_\theta \mathcal{L}_{out} = \big(I - \alpha M(a)\, \nabla^2_\theta
          \mathcal{L}_{in}\big)^\top \partial_{\theta'} \mathcal{L}_{out}.

With ``first_order=True`` the inner gradient is a constant (as in first-order MAML): the
second terms vanish, :math:`\nabla_\theta \mathcal{L}_{out} = \partial_{\theta'}
\mathcal{L}_{out}` and :math:`\nabla_\phi \mathcal{L}_{out} = \partial_\phi \mathcal{L}_{out}`.

Three interchangeable backends (:mod:`metarim.meta.backends`) compute this, chosen by name:
``"learn2learn"`` (default; ``clone_module`` + a masked ``maml_update``), ``"higher"`` (a
patched module and a differentiable SGD whose gradients are masked by a
``grad_callback``) and ``"func"`` (``torch.func.functional_call`` over a parameter dict).
All three take the step of :func:`~metarim.meta.functional.masked_delta`, the one
definition of :math:`-\alpha (M(a) \odot g)`.

References:
    Madan, Ke, Goyal, Schölkopf, Bengio. "Fast and Slow Learning of Recurrent
    Independent Mechanisms". ICLR 2021. arXiv:2105.08710.
    Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning". ICML 2017. arXiv:1703.03400.
    Li, Zhou, Chen, Li. "Meta-SGD". 2017. arXiv:1707.09835.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from metarim.meta.backends import MaskedLearner, get_backend
from metarim.meta.functional import LearningRate, check_lr
from metarim.meta.partition import REDUCTIONS, FastSpec, partition_parameters, reduce_activity

__all__ = ["MaskedMAML"]


class MaskedMAML(nn.Module):
    r"""MAML whose inner step adapts only the fast parameters of the active RIM modules.

    Inner step (:meth:`metarim.meta.backends.MaskedLearner.adapt`), for fast :math:`\theta`, slow :math:`\phi`,
    activity :math:`a \in [0,1]^N` and block mask :math:`M(a)`:

    .. math:: \theta' = \theta - \alpha \odot \big(M(a) \odot \nabla_\theta
              \mathcal{L}_{in}(\theta, \phi)\big), \qquad \phi' = \phi.

    Outer step: ``L_out(learner(...)).backward()`` gives :math:`\nabla_{\theta,\phi}
    \mathcal{L}_{out}(\theta'(\theta, \phi), \phi)` through the inner step (second order),
    or with :math:`\nabla_\theta \mathcal{L}_{in}` held constant (``first_order=True``).
    Slow parameters are never changed by :meth:`~metarim.meta.backends.MaskedLearner.adapt`, yet receive the
    full outer gradient: the fast set is chosen by name, not by ``requires_grad``.

    Args:
        module: the model; its parameters are the meta-parameters.
        lr: inner step size :math:`\alpha \geq 0`.
        first_order: default for clones: drop second-order terms.
        fast: which parameters are fast (:data:`~metarim.meta.partition.FastSpec`); ``None``:
            the RIM mechanisms; ``"all"``: every parameter (plain MAML).
        backend: ``"learn2learn"`` (default), ``"higher"``, ``"func"`` or any name
            registered with :func:`~metarim.meta.backends.register_backend`.
        learnable_lr: Meta-SGD: one learnable rate per element of each fast tensor,
            initialised to ``lr``, stored in :attr:`lrs` (slow parameters).
        reduction: how ``(T, B, N)`` / ``(B, N)`` activity is reduced to ``(N,)``:
            ``"any"``, ``"mean"`` or ``"topk"``, see
            :func:`~metarim.meta.partition.reduce_activity`. With the default fast set,
            ``"any"`` masks nothing the gradient has not already zeroed; ``"topk"``
            adapts only the ``k`` modules selected most often in the chunk.
        k: modules kept by ``reduction="topk"`` (required there, e.g. the RIM's own ``k``).

    Raises:
        ValueError: negative ``lr``, unknown ``backend`` or ``reduction``, ``k`` missing
            for ``"topk"`` (or given for another reduction), a ``fast`` spec that
            matches nothing.

    References:
        Madan et al. "Fast and Slow Learning of Recurrent Independent Mechanisms".
        ICLR 2021. arXiv:2105.08710. Finn et al. "Model-Agnostic Meta-Learning". ICML 2017.

    Example:
        >>> from metarim.rim import RIM
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> rim = RIM(input_size=4, hidden_size=12, num_units=3, k=2, input_value_size=8)
        >>> meta = MaskedMAML(rim, lr=0.1)
        >>> x1, x2 = torch.randn(5, 2, 4), torch.randn(5, 2, 4)
        >>> learner = meta.clone()
        >>> out, state, masks = learner(x1)
        >>> learner.adapt(out.pow(2).mean(), active=masks)  # (T, B, N) -> any-step-active
        >>> out2, _, _ = learner(x2)
        >>> out2.pow(2).mean().backward()  # second order, into fast and slow parameters
        >>> rim.cell.input_attention.key.weight.grad.abs().sum() > 0
        tensor(True)
    """

    def __init__(
        self,
        module: nn.Module,
        lr: float,
        *,
        first_order: bool = False,
        fast: FastSpec = None,
        backend: str = "learn2learn",
        learnable_lr: bool = False,
        reduction: str = "any",
        k: Optional[int] = None,
    ):
        super().__init__()
        self.lr = check_lr(lr)
        get_backend(backend)  # raises ValueError for an unknown name
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} must be one of {REDUCTIONS}")
        self.module = module
        self.first_order, self.backend, self.reduction = bool(first_order), backend, reduction
        self.partition = partition_parameters(module, fast)
        if reduction == "topk" or k is not None:  # the same checks as reduce_activity's
            reduce_activity(torch.zeros(1, self.partition.num_units or 1), reduction, k=k)
        self.k = k
        self.lrs: Optional[nn.ParameterList] = None
        if learnable_lr:
            params = dict(module.named_parameters())
            self.lrs = nn.ParameterList(
                nn.Parameter(torch.full_like(params[name].detach(), self.lr))
                for name in self.partition.fast
            )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def learning_rates(self) -> LearningRate:
        """The scalar ``lr``, or ``{fast name: learnable rate tensor}`` with ``learnable_lr``."""
        if self.lrs is None:
            return self.lr
        return dict(zip(self.partition.fast, self.lrs))

    def clone(self, *, first_order: Optional[bool] = None) -> MaskedLearner:
        """A differentiable copy to adapt; gradients of its outputs reach this module.

        The copy is a :class:`~metarim.meta.backends.MaskedLearner` of this wrapper's
        backend; it can itself be cloned (:meth:`MaskedLearner.clone
        <metarim.meta.backends.MaskedLearner.clone>`).
        """
        first_order = self.first_order if first_order is None else bool(first_order)
        return get_backend(self.backend)(self, first_order)

    def extra_repr(self) -> str:
        return (f"lr={self.lr}, first_order={self.first_order}, backend={self.backend!r}, "
                f"fast={len(self.partition.fast)} tensors, slow={len(self.partition.slow)} tensors")
