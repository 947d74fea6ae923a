"""The RIM cell (one step) and the RIM sequence wrapper."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from metarim.rim.attention import CommAttention, InputAttention
from metarim.rim.group import GroupGRUCell, GroupLSTMCell, _check_positive

__all__ = ["RIM", "RIMCell", "State"]

State = tuple[Tensor, ...]
"""Recurrent state: ``(h, c)`` for LSTM modules, ``(h,)`` for GRU modules, each
``(batch, num_units, hidden_size // num_units)``."""



class RIMCell(nn.Module):
    r"""One step of a RIM memory.

    With state :math:`h \in \mathbb{R}^{B \times N \times d}` (and :math:`c` for LSTM):

    1. input attention over ``[null, x]`` gives the active set :math:`S` (``|S| = k``)
       and the input :math:`\tilde x_n` of each module (zero for :math:`n \notin S`);
    2. every module steps its own cell, :math:`\hat h_n = \mathrm{cell}_n(\tilde x_n, h_n)`;
    3. the modules' states :math:`\bar h = m \odot \hat h + (1 - m) \odot h` are read by a
       communication attention with residual, :math:`\hat h \leftarrow \mathrm{comm}(\bar h)`;
    4. :math:`h'_n = \hat h_n` for :math:`n \in S` and :math:`h'_n = h_n` (bit-identical,
       no gradient into the module's own weights) otherwise; likewise for :math:`c`.

    The per-module cell is ``self.mechanisms`` (a :class:`GroupLSTMCell` or
    :class:`GroupGRUCell`): these are the "fast" parameters of Meta-RIM. The attentions,
    ``self.input_attention`` and ``self.comm_attention``, are "slow".

    Args:
        input_size: width of the input ``x``.
        hidden_size: total state width, split evenly over ``num_units`` modules.
        num_units: number of modules ``N``.
        k: number of active modules per step, ``1 <= k <= N``.
        cell: ``"lstm"`` or ``"gru"``.
        input_key_size: input-attention key/query size (reference: 64).
        input_value_size: input-attention value size, i.e. each module's input width
            (reference: 400).
        input_heads: input-attention heads (reference: 1).
        comm_key_size: communication key/query size (reference: 32).
        comm_value_size: communication value size per head (reference: 32).
        comm_heads: communication heads (reference: 4).
        dropout: attention dropout (reference: 0.1; default 0, see module docstring).

    Example:
        >>> cell = RIMCell(input_size=8, hidden_size=24, num_units=6, k=4)
        >>> state = cell.initial_state(batch_size=2)
        >>> out, state, mask = cell(torch.randn(2, 8), state)
        >>> out.shape, mask.sum(dim=1).tolist()
        (torch.Size([2, 24]), [4.0, 4.0])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_units: int,
        k: int,
        cell: str = "lstm",
        *,
        input_key_size: int = 64,
        input_value_size: int = 400,
        input_heads: int = 1,
        comm_key_size: int = 32,
        comm_value_size: int = 32,
        comm_heads: int = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        _check_positive(
            input_size=input_size, hidden_size=hidden_size, num_units=num_units,
            input_key_size=input_key_size, input_value_size=input_value_size,
            input_heads=input_heads, comm_key_size=comm_key_size,
            comm_value_size=comm_value_size, comm_heads=comm_heads,
        )
        if not isinstance(k, int) or not 1 <= k <= num_units:
            raise ValueError(f"k={k!r} must be an integer in 1..num_units={num_units}")
        if hidden_size % num_units:
            raise ValueError(
                f"hidden_size={hidden_size} must be divisible by num_units={num_units} "
                f"(each module gets hidden_size // num_units)"
            )
        if cell not in ("lstm", "gru"):
            raise ValueError(f"cell={cell!r} must be 'lstm' or 'gru'")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_units, self.k, self.cell = num_units, k, cell
        self.unit_size = hidden_size // num_units
        self.input_attention = InputAttention(
            input_size, self.unit_size, num_units, k,
            input_key_size, input_value_size, input_heads, dropout,
        )
        group_cell = GroupLSTMCell if cell == "lstm" else GroupGRUCell
        self.mechanisms = group_cell(input_value_size * input_heads, self.unit_size, num_units)
        self.comm_attention = CommAttention(
            self.unit_size, num_units, comm_key_size, comm_value_size, comm_heads, dropout
        )

    def initial_state(
        self,
        batch_size: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> State:
        """Zero state: a tuple of ``(batch_size, num_units, hidden_size // num_units)``."""
        if dtype is None:
            dtype = self.mechanisms.weight_hh.dtype
        if device is None:
            device = self.mechanisms.weight_hh.device
        shape = (batch_size, self.num_units, self.unit_size)
        n = 2 if self.cell == "lstm" else 1
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(n))

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State, Tensor]:
        """Step once. Returns ``(output (B, hidden_size), new_state, mask (B, N))``."""
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"RIMCell expects input (batch, input_size={self.input_size}), got {tuple(x.shape)}"
            )
        return self.step(*self.project_input(x), state)

    def project_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Everything that depends on the input alone, for any leading shape ``(..., in)``.

        Returns the input-attention keys ``(..., H, dk)`` and the per-module, per-head
        input gates :math:`U_{h,n} = v_h(x)\, W^{ih}_n[h]` of shape ``(..., H, N, G)``, so
        that a module's input gates are :math:`\sum_h p_{h,n} U_{h,n} + b^{ih}_n`. This is
        :math:`(\sum_h p_{h,n} v_h(x)) W^{ih}_n` re-associated: the same value, but one large
        matrix product for a whole sequence instead of one small product per step.
        """
        att, mech = self.input_attention, self.mechanisms
        hd, dv = att.num_heads, att.value_size
        keys = att.key(x).unflatten(-1, (hd, att.key_size))
        values = att.value(x).unflatten(-1, (hd, dv))
        w = mech.weight_ih.view(self.num_units, hd, dv, -1)
        return keys, torch.einsum("...hd,nhdg->...hng", values, w)

    def step(self, keys: Tensor, gates: Tensor, state: State) -> tuple[Tensor, State, Tensor]:
        """Step from :meth:`project_input`'s ``(keys, gates)`` of one time step."""
        h = state[0]
        weights, mask = self.input_attention.select(keys, h)  # (B, H, N), (B, N)
        gi = (weights.unsqueeze(-1) * gates).sum(dim=1) + self.mechanisms.bias_ih
        active = mask.unsqueeze(-1).bool()  # (B, N, 1)
        if self.cell == "lstm":
            h_hat, c_hat = self.mechanisms.recur(gi, (h, state[1]))
        else:
            h_hat = self.mechanisms.recur(gi, h)
        # Modules read the updated states of active modules and the kept states of others.
        h_hat = self.comm_attention(torch.where(active, h_hat, h))
        h_new = torch.where(active, h_hat, h)
        new_state = (h_new, torch.where(active, c_hat, state[1])) if self.cell == "lstm" else (h_new,)
        return h_new.reshape(h.shape[0], self.hidden_size), new_state, mask

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}, "
                f"k={self.k}, cell={self.cell!r}")


class RIM(nn.Module):
    """A RIM over a sequence, with ``nn.LSTM``-like shapes (time first).

    ``forward(x, state=None, done=None)`` takes ``x`` of shape ``(T, B, input_size)`` and
    an optional ``done`` of shape ``(T, B)``: ``done[t, b]`` true means observation ``t``
    of sequence ``b`` starts a new episode, so its state is zeroed before step ``t``
    (the CleanRL/torch-ac convention). Returns ``(output (T, B, hidden_size), state,
    masks (T, B, N))``.

    Keyword arguments are passed to :class:`RIMCell`.

    Example:
        >>> rim = RIM(input_size=8, hidden_size=24, num_units=6, k=2)
        >>> x = torch.randn(5, 3, 8)
        >>> done = torch.zeros(5, 3, dtype=torch.bool)
        >>> out, state, masks = rim(x, done=done)
        >>> out.shape, masks.shape, bool((masks.sum(-1) == 2).all())
        (torch.Size([5, 3, 24]), torch.Size([5, 3, 6]), True)
    """

    def __init__(self, input_size: int, hidden_size: int, num_units: int, k: int,
                 cell: str = "lstm", **kwargs):
        super().__init__()
        self.cell = RIMCell(input_size, hidden_size, num_units, k, cell, **kwargs)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_units, self.k = num_units, k

    def initial_state(self, batch_size: int, device=None, dtype=None) -> State:
        """Zero state, see :meth:`RIMCell.initial_state`."""
        return self.cell.initial_state(batch_size, device, dtype)

    def forward(
        self, x: Tensor, state: Optional[State] = None, done: Optional[Tensor] = None
    ) -> tuple[Tensor, State, Tensor]:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(
                f"RIM expects input (time, batch, input_size={self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        steps, batch = x.shape[0], x.shape[1]
        if done is not None and done.shape != (steps, batch):
            raise ValueError(f"done must have shape {(steps, batch)}, got {tuple(done.shape)}")
        if state is None:
            state = self.initial_state(batch, x.device, x.dtype)
        keys, gates = self.cell.project_input(x)  # the input-only work, for all steps at once
        # unbind, not keys[t]: each indexing op's backward would fill a zero tensor the
        # size of the whole sequence; unbind's backward is one stack.
        keys, gates = keys.unbind(0), gates.unbind(0)
        outputs, masks = [], []
        for t in range(steps):
            if done is not None:
                keep = (~done[t].bool()).to(x.dtype).view(batch, 1, 1)
                state = tuple(s * keep for s in state)
            out, state, mask = self.cell.step(keys[t], gates[t], state)
            outputs.append(out)
            masks.append(mask)
        return torch.stack(outputs), state, torch.stack(masks)
