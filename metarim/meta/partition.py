r"""Fast/slow parameter partition and per-module gradient masks for Meta-RIM.

This is the single place that decides which parameters of a model are *fast* (adapted in
the inner loop) and which are *slow* (meta-parameters, learned only in the outer loop),
and that turns an activity vector :math:`a \in [0, 1]^N` over the ``N`` RIM modules into
one gradient mask per fast tensor.

By default the fast parameters are those of the per-module recurrent cells
(:class:`~metarim.rim.GroupLSTMCell`, :class:`~metarim.rim.GroupGRUCell`): the
mechanisms themselves. Everything else (input attention, communication attention, which
also uses :class:`~metarim.rim.GroupLinear`, encoders, heads) is slow. The choice is by
module *role*, not by shape. Two named presets (:data:`FAST_PRESETS`) give the paper's
two role assignments: ``"modules"`` (the default above) and ``"attention"``, the
reversed roles of the paper's ablation: the input and communication attentions are fast
and the mechanisms slow. In both, every parameter outside the RIM's modules and
attentions (encoders, heads, a learned initial state) is slow.

A fast tensor stacked with a module axis ``d`` (``module_axis`` of its owning module,
e.g. ``weight_ih`` of shape ``(N, in, 4h)`` with ``d = 0``) gets the block mask

.. math:: M_\theta[n, \dots] = a_n,

i.e. :math:`a` viewed with shape ``(1, .., N, .., 1)``. A fast tensor without a module
axis is one block: :math:`M_\theta = \mathbb{1}[\exists n: a_n \neq 0]`.

References:
    Madan, Ke, Goyal, Schölkopf, Bengio. "Fast and Slow Learning of Recurrent
    Independent Mechanisms". ICLR 2021. arXiv:2105.08710.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor, nn

from metarim.rim import CommAttention, GroupGRUCell, GroupLSTMCell, InputAttention

__all__ = [
    "DEFAULT_FAST_TYPES",
    "FAST_PRESETS",
    "REDUCTIONS",
    "FastSpec",
    "ParamPartition",
    "TensorDict",
    "partition_parameters",
    "reduce_activity",
]

DEFAULT_FAST_TYPES: tuple[type[nn.Module], ...] = (GroupLSTMCell, GroupGRUCell)
"""Module types whose own parameters are fast by default: the RIM mechanisms."""

FAST_PRESETS: dict[str, tuple[type[nn.Module], ...]] = {
    "modules": DEFAULT_FAST_TYPES,
    "attention": (InputAttention, CommAttention),
}
"""Named fast sets: every parameter of a module of these types *or of a submodule of
one* is fast. ``"modules"``: the RIM mechanisms (the default, ``fast=None``);
``"attention"``: the input attention (keys, values, per-module queries) and the
communication attention, the paper's reversed roles (Madan et al. 2021)."""

FastSpec = Union[
    None,
    str,
    Sequence[str],
    type,
    tuple[type, ...],
    Callable[[str, Tensor], bool],
]
"""How to name the fast set: ``None`` (the RIM mechanisms, by role), ``"all"`` (plain
MAML), a preset name of :data:`FAST_PRESETS` (``"modules"``, ``"attention"``), a glob pattern or a list of patterns over qualified parameter names
(``"*.mechanisms.*"``), a module type or tuple of types whose own parameters are fast,
or a predicate ``(name, parameter) -> bool``."""

TensorDict = dict[str, Tensor]
"""Tensors by qualified parameter name, as ``named_parameters()`` names them."""

REDUCTIONS = ("any", "mean", "topk")
"""Names accepted by :func:`reduce_activity` (and ``MaskedMAML(reduction=...)``)."""


@dataclass(frozen=True)
class ParamPartition:
    """Which parameters are fast, with the module axis of each fast tensor.

    Attributes:
        fast: qualified names of the fast parameters, in ``named_parameters()`` order.
        slow: qualified names of the slow parameters, in ``named_parameters()`` order.
        axes: module axis of each fast tensor (``None``: no module axis, one block).
        shapes: shape of each fast tensor.
        num_units: module-axis size shared by the fast tensors that have one (``None``
            if none has one). An activity vector must have this length.
    """

    fast: tuple[str, ...]
    slow: tuple[str, ...]
    axes: dict[str, Optional[int]]
    shapes: dict[str, torch.Size]
    num_units: Optional[int]

    def block_masks(
        self, active: Tensor, *, dtype: torch.dtype, device: Optional[torch.device] = None
    ) -> dict[str, Tensor]:
        r"""Per-tensor masks :math:`M_\theta` from an activity vector ``active`` of shape ``(N,)``.

        Each mask broadcasts against its parameter: ``(1, .., N, .., 1)`` along the
        module axis, or a 0-d tensor (``1`` if any module is active) for tensors
        without one, of ``dtype`` on ``device`` (default: ``active``'s device). Use
        :func:`reduce_activity` first for ``(T, B, N)`` or ``(B, N)`` masks.

        Raises:
            ValueError: if ``active`` is not 1-D of length :attr:`num_units`.

        Example:
            >>> from metarim.rim import RIMCell
            >>> part = partition_parameters(RIMCell(4, 12, num_units=3, k=2))
            >>> masks = part.block_masks(torch.tensor([1.0, 0.0, 1.0]), dtype=torch.float32)
            >>> masks["mechanisms.weight_ih"].shape, masks["mechanisms.weight_ih"].flatten().tolist()
            (torch.Size([3, 1, 1]), [1.0, 0.0, 1.0])
        """
        if not isinstance(active, Tensor):
            raise ValueError(f"active must be a tensor, got {type(active).__name__}")
        if active.dim() != 1:
            raise ValueError(
                f"active must have shape (num_units,), got {tuple(active.shape)}; "
                "reduce (T, B, N) or (B, N) masks with reduce_activity first"
            )
        if self.num_units is not None and active.shape[0] != self.num_units:
            raise ValueError(
                f"active has length {active.shape[0]} but the fast parameters have "
                f"num_units={self.num_units} modules"
            )
        active = active.to(dtype=dtype, device=device)
        whole = (active != 0).any().to(dtype)
        masks = {}
        for name in self.fast:
            axis, shape = self.axes[name], self.shapes[name]
            if axis is None:
                masks[name] = whole
            else:
                view = [1] * len(shape)
                view[axis] = shape[axis]
                masks[name] = active.view(view)
        return masks


def _module_axis(module: nn.Module, param: Tensor) -> Optional[int]:
    axis = getattr(module, "module_axis", None)
    units = getattr(module, "num_units", None)
    if axis is None or units is None or param.dim() <= axis or param.shape[axis] != units:
        return None
    return int(axis)


def _matcher(fast: FastSpec, module: nn.Module) -> Callable[[str, Tensor, nn.Module], bool]:
    if fast is None:
        fast = DEFAULT_FAST_TYPES
    if isinstance(fast, str) and fast == "all":
        return lambda name, p, owner: True
    if isinstance(fast, str) and fast in FAST_PRESETS:
        types = FAST_PRESETS[fast]
        inside = {id(p) for m in module.modules() if isinstance(m, types) for p in m.parameters()}
        return lambda name, p, owner: id(p) in inside
    if isinstance(fast, str):
        fast = [fast]
    if isinstance(fast, type):
        fast = (fast,)
    if isinstance(fast, (list, tuple)) and fast and all(isinstance(t, type) for t in fast):
        types = tuple(fast)
        return lambda name, p, owner: isinstance(owner, types)
    if callable(fast):
        predicate = fast
        return lambda name, p, owner: bool(predicate(name, p))
    if isinstance(fast, Sequence) and fast and all(isinstance(s, str) for s in fast):
        patterns = list(fast)
        return lambda name, p, owner: any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
    raise ValueError(
        f"fast={fast!r} must be None, 'all', a preset {tuple(FAST_PRESETS)}, a glob pattern or list of patterns, "
        "a module type or tuple of types, or a predicate (name, param) -> bool"
    )


def partition_parameters(module: nn.Module, fast: FastSpec = None) -> ParamPartition:
    """Split ``module``'s parameters into fast and slow, and record module axes.

    Args:
        module: the model (e.g. a policy containing a :class:`~metarim.rim.RIM`).
        fast: the fast set, see :data:`FastSpec`. ``None`` or ``"modules"``: the
            parameters owned by :data:`DEFAULT_FAST_TYPES` modules (the RIM mechanisms);
            ``"attention"``: those inside the RIM's two attentions (reversed roles).

    Returns:
        The partition. A fast tensor's module axis is its owner's ``module_axis`` when
        its size there equals the owner's ``num_units``; otherwise it has none.

    Raises:
        ValueError: if ``fast`` is malformed or matches no parameter, or if the fast
            tensors disagree on the number of modules.

    Example:
        >>> from metarim.rim import RIM
        >>> part = partition_parameters(RIM(4, 12, num_units=3, k=2))
        >>> part.fast
        ('cell.mechanisms.weight_ih', 'cell.mechanisms.weight_hh', 'cell.mechanisms.bias_ih', 'cell.mechanisms.bias_hh')
        >>> part.num_units, "cell.comm_attention.output.weight" in part.slow
        (3, True)
        >>> rev = partition_parameters(RIM(4, 12, num_units=3, k=2), "attention")
        >>> rev.fast[:3], "cell.mechanisms.weight_ih" in rev.slow
        (('cell.input_attention.key.weight', 'cell.input_attention.value.weight', 'cell.input_attention.query.weight'), True)
    """
    match = _matcher(fast, module)
    fast_names, slow_names = [], []
    axes: dict[str, Optional[int]] = {}
    shapes: dict[str, torch.Size] = {}
    seen: set[int] = set()
    for mod_name, owner in module.named_modules():
        for p_name, param in owner.named_parameters(recurse=False):
            if id(param) in seen:  # tied parameter: classified once, like named_parameters
                continue
            seen.add(id(param))
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if match(name, param, owner):
                fast_names.append(name)
                axes[name] = _module_axis(owner, param)
                shapes[name] = param.shape
            else:
                slow_names.append(name)
    if not fast_names:
        raise ValueError(f"fast={fast!r} matches no parameter of {type(module).__name__}")
    units = {shapes[n][a] for n, a in axes.items() if a is not None}
    if len(units) > 1:
        raise ValueError(
            f"fast parameters have different numbers of modules {sorted(units)}; "
            "one activity vector cannot mask them all, choose a narrower fast set"
        )
    order = [n for n, _ in module.named_parameters()]
    rank = {n: i for i, n in enumerate(order)}
    return ParamPartition(
        fast=tuple(sorted(fast_names, key=rank.__getitem__)),
        slow=tuple(sorted(slow_names, key=rank.__getitem__)),
        axes=axes,
        shapes=shapes,
        num_units=units.pop() if units else None,
    )


def reduce_activity(
    masks: Tensor, reduction: str = "any", *, threshold: Optional[float] = None, k: Optional[int] = None
) -> Tensor:
    r"""Reduce RIM selection masks ``(T, B, N)`` or ``(B, N)`` to an activity vector ``(N,)``.

    Parameter updates are shared by the whole batch, so every leading axis (time and
    batch) is reduced. With :math:`c_n = \sum_{t,b} \mathbb{1}[m_{t,b,n} \neq 0]`, the
    number of steps at which module :math:`n` was selected:

    * ``"any"`` (default): :math:`a_n = \mathbb{1}[c_n > 0]`, the module was selected at
      least once in the chunk. For the RIM mechanisms this mask is a no-op: an inactive
      module's state is kept unchanged, so its weights get an exactly zero gradient at
      every step where it is not selected, and a module with :math:`c_n = 0` already has
      a zero gradient; masking it changes nothing (``docs/adaptation.md``).
    * ``"mean"``: :math:`a_n = c_n / (TB)`, the fraction of steps the module was
      selected; used as a soft mask it scales each module's step size by its usage.
    * ``"topk"``: :math:`a_n = 1` for the ``k`` modules with the largest :math:`c_n`
      (the modules the attention chose most over the chunk), ``0`` for the others.
      Ties are broken towards the lower module index (a stable sort of the counts), and
      a module with :math:`c_n = 0` is never active, so fewer than ``k`` modules are
      active when fewer were ever selected.

    With ``threshold``, the result is binarised as :math:`\mathbb{1}[a_n \geq \text{threshold}]`
    (e.g. ``reduction="mean", threshold=0.5``: modules selected at least half the time).

    Args:
        masks: ``(..., N)`` bool or float selection masks (``(N,)`` is returned as float).
        reduction: ``"any"``, ``"mean"`` or ``"topk"`` (:data:`REDUCTIONS`).
        threshold: optional binarisation level.
        k: number of modules kept by ``"topk"`` (required there, ``1 <= k <= N``).

    Returns:
        Float tensor of shape ``(N,)`` (same float dtype as ``masks``, else the default).

    Raises:
        ValueError: an unknown ``reduction``, ``masks`` without a module axis, ``k``
            missing or out of range for ``"topk"``, or ``k`` given for another reduction.

    Example:
        >>> m = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 1, 0]]])  # (T=2, B=1, N=4)
        >>> reduce_activity(m).tolist()
        [1.0, 1.0, 1.0, 0.0]
        >>> reduce_activity(m, "mean").tolist()
        [1.0, 0.5, 0.5, 0.0]
        >>> reduce_activity(m, "mean", threshold=1.0).tolist()
        [1.0, 0.0, 0.0, 0.0]
        >>> reduce_activity(m, "topk", k=2).tolist()  # counts 2, 1, 1, 0: the tie goes to module 1
        [1.0, 1.0, 0.0, 0.0]
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} must be one of {REDUCTIONS}")
    if not isinstance(masks, Tensor) or masks.dim() < 1:
        raise ValueError("masks must be a tensor of shape (..., num_units)")
    units = masks.shape[-1]
    if reduction == "topk":
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= units:
            raise ValueError(f"reduction='topk' needs an integer k in 1..{units} (the modules kept), got k={k!r}")
    elif k is not None:
        raise ValueError(f"k={k!r} is for reduction='topk', not {reduction!r}")
    dtype = masks.dtype if masks.is_floating_point() else torch.get_default_dtype()
    flat = masks.reshape(-1, units)
    if reduction == "any":
        out = (flat != 0).any(dim=0).to(dtype)
    elif reduction == "mean":
        out = flat.to(dtype).mean(dim=0)
    else:
        counts = (flat != 0).sum(dim=0)
        order = torch.sort(counts, descending=True, stable=True).indices[:k]
        out = torch.zeros(units, dtype=dtype, device=masks.device)
        out[order] = 1.0
        out = out * (counts > 0).to(dtype)
    if threshold is not None:
        out = (out >= threshold).to(dtype)
    return out
