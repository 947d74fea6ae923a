"""The RIM cell (one step) and the RIM sequence wrapper."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from metarim.rim.attention import CommAttention, InputAttention
from metarim.rim.group import (
    GroupGRUCell,
    GroupLSTMCell,
    check_positive,
    gru_pointwise,
    lstm_pointwise,
)

__all__ = ["COMM_READS", "INITS", "RIM", "RIMCell", "State"]

INITS = ("zeros", "learned")
"""Names accepted by ``RIMCell(init=...)``: the state a memory reset starts from."""

COMM_READS = ("cells", "kept")
"""Names accepted by ``RIMCell(comm_reads=...)``: what the communication attention reads
for an inactive module (``"cells"``, the reference: its cell's new output, gradient
blocked; ``"kept"``: its kept state, metarim before issue 20)."""

State = tuple[Tensor, ...]
"""Recurrent state: ``(h, c)`` for LSTM modules, ``(h,)`` for GRU modules, each
``(batch, num_units, hidden_size // num_units)``."""


def _combine_first(rows: int, in_size: int, dv: int, heads: int, n: int, g: int) -> bool:
    """Whether ``x (W^v W^{ih})`` costs fewer multiply-adds than ``(x W^v) W^{ih}``."""
    return n * heads * g * in_size * (dv + rows) < rows * heads * dv * (in_size + n * g)


class RIMCell(nn.Module):
    r"""One step of a RIM memory.

    With state :math:`h \in \mathbb{R}^{B \times N \times d}` (and :math:`c` for LSTM):

    1. input attention over ``[null, x]`` gives the active set :math:`S` (``|S| = k``)
       and the input :math:`\tilde x_n` of each module (zero for :math:`n \notin S`);
    2. every module steps its own cell, :math:`\hat h_n = \mathrm{cell}_n(\tilde x_n, h_n)`;
    3. the modules' new cell outputs :math:`\hat h` are read by a communication attention
       with residual, :math:`\hat h \leftarrow \mathrm{comm}(\hat h)`, the inactive
       modules' rows with their gradient blocked (``comm_reads="cells"``, the reference's
       ``blocked_grad``); with ``comm_reads="kept"`` it reads
       :math:`\bar h = m \odot \hat h + (1 - m) \odot h` instead;
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
        init: the state a reset starts from. ``"zeros"`` (default): zeros, as in the
            reference. After a zero reset every query is zero, so all input-attention
            scores tie at 0 and ``torch.topk`` picks the same modules at the first step
            of every episode (``{2, 3}`` for ``N = 4, k = 2``), whatever the input.
            ``"learned"``: a learned initial state per module, parameters ``h0`` (and
            ``c0`` for LSTM modules) of shape ``(num_units, hidden_size // num_units)``,
            drawn :math:`\mathcal{U}(-1/\sqrt{d}, 1/\sqrt{d})` (``d`` the module size)
            from a fork of the global RNG, so the other parameters are initialised
            exactly as with ``"zeros"``. Each module's query at a reset is then
            :math:`h_{0,n} W^q_n`, and the first step's selection depends on the input
            and on the modules' parameters.
        comm_reads: what the communication attention reads for an inactive module.
            ``"cells"`` (default, as in the reference code of Goyal et al., whose
            ``BlocksCore`` steps every module's cell and reads all of them through
            ``blocked_grad``): its cell's new output :math:`\hat h_n`, whose gradient is
            blocked, so an inactive module's weights and state still get no gradient.
            With LSTM modules every :math:`|\hat h_n| < 1`, so the state after the
            residual is bounded by ``1 + max |comm output|``. ``"kept"``: its kept state
            :math:`h_n` (metarim before issue 20). A kept state already holds a residual,
            and the residual of its readers adds to it again: over long episodes the state
            can grow geometrically (measured: max ``|h|`` 119 to 4,405 in four rollouts of
            a PPO+RIM run, then NaN; docs/adaptation_benchmarks.md).

    Example:
        >>> cell = RIMCell(input_size=8, hidden_size=24, num_units=6, k=4)
        >>> out, state, mask = cell(torch.randn(2, 8))  # state=None: zeros
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
        init: str = "zeros",
        comm_reads: str = "cells",
    ):
        super().__init__()
        check_positive(
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
        if init not in INITS:
            raise ValueError(f"init={init!r} must be one of {INITS}")
        if comm_reads not in COMM_READS:
            raise ValueError(f"comm_reads={comm_reads!r} must be one of {COMM_READS}")
        self.comm_reads = comm_reads
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
        self.init = init
        if init == "learned":
            bound = 1.0 / math.sqrt(self.unit_size)
            with torch.random.fork_rng(devices=[]):  # leaves the global RNG where it was
                for name in ("h0", "c0") if cell == "lstm" else ("h0",):
                    value = torch.empty(num_units, self.unit_size).uniform_(-bound, bound)
                    self.register_parameter(name, nn.Parameter(value))

    def reset_values(self) -> Optional[State]:
        """The per-module state a reset starts from, ``(num_units, unit)`` tensors
        (``h0``, and ``c0`` for LSTM modules), or ``None`` for zeros (``init="zeros"``)."""
        if self.init == "zeros":
            return None
        return (self.h0, self.c0) if self.cell == "lstm" else (self.h0,)

    def initial_state(
        self,
        batch_size: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> State:
        """The reset state, a tuple of ``(batch_size, num_units, hidden_size // num_units)``:
        zeros, or with ``init="learned"`` copies of the learned ``h0`` (and ``c0``)."""
        if dtype is None:
            dtype = self.mechanisms.weight_hh.dtype
        if device is None:
            device = self.mechanisms.weight_hh.device
        shape = (batch_size, self.num_units, self.unit_size)
        learned = self.reset_values()
        if learned is not None:
            return tuple(s.to(device=device, dtype=dtype).unsqueeze(0).expand(shape).clone() for s in learned)
        n = 2 if self.cell == "lstm" else 1
        return tuple(torch.zeros(shape, device=device, dtype=dtype) for _ in range(n))

    def forward(self, x: Tensor, state: Optional[State] = None) -> tuple[Tensor, State, Tensor]:
        """Step once. Returns ``(output (B, hidden_size), new_state, mask (B, N))``.

        ``state=None`` starts from :meth:`initial_state` (zeros in ``x``'s dtype and
        device), as ``nn.LSTMCell`` does.

        Raises:
            ValueError: if ``x`` is not ``(batch, input_size)`` or ``state`` does not hold
                ``(batch, num_units, hidden_size // num_units)`` tensors (two for LSTM
                modules, one for GRU modules).
        """
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"RIMCell expects input (batch, input_size={self.input_size}), got {tuple(x.shape)}"
            )
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        shape = (x.shape[0], self.num_units, self.unit_size)
        n = 2 if self.cell == "lstm" else 1
        if len(state) != n or any(tuple(s.shape) != shape for s in state):
            raise ValueError(
                f"RIMCell({self.cell!r}) expects a state of {n} tensor(s) of shape {shape}, "
                f"got {[tuple(s.shape) for s in state]}"
            )
        keys, gates = self.project_input(x)
        state, mask = self.step(keys, gates, tuple(s.transpose(0, 1) for s in state))
        state = tuple(s.transpose(0, 1).contiguous() for s in state)
        return state[0].reshape(x.shape[0], self.hidden_size), state, mask

    def project_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Everything that depends on the input alone, for any leading shape ``(..., in)``.

        Returns the input-attention keys ``(..., H, dk)`` and the per-module, per-head
        input gates :math:`U_{n,h} = v_h(x)\, W^{ih}_n[h]`, module first: ``(N, ..., H, G)``,
        so that a module's input gates are :math:`\sum_h p_{h,n} U_{n,h} + b^{ih}_n`. This is
        :math:`(\sum_h p_{h,n} v_h(x)) W^{ih}_n` re-associated: the same value, but one large
        matrix product for a whole sequence instead of one small product per step.

        When the input is narrower than the values (the defaults: 400 values), the two
        maps are multiplied first, :math:`U = x\,(W^v_h W^{ih}_n)`, which costs
        ``N H G in`` per row instead of ``H dv (in + N G)``; the cheaper order is chosen
        from the shapes. Either way ``W^{ih}`` is used in place (a per-call copy of it
        would dominate a single step).
        """
        att, mech = self.input_attention, self.mechanisms
        hd, dv, n = att.num_heads, att.value_size, self.num_units
        keys = att.key(x).unflatten(-1, (hd, att.key_size))
        w = mech.weight_ih.view(n, hd, dv, -1)  # (N, H, dv, G)
        g = w.shape[-1]
        rows = x.reshape(-1, self.input_size)  # (L, in)
        if _combine_first(rows.shape[0], self.input_size, dv, hd, n, g):
            combined = torch.einsum("hdi,nhdg->nihg", att.value.weight.view(hd, dv, -1), w)
            gates = torch.bmm(rows.expand(n, -1, -1), combined.reshape(n, self.input_size, -1))
        else:
            values = att.value(rows).view(-1, hd, dv).transpose(0, 1)  # (H, L, dv)
            gates = torch.matmul(values, w).transpose(1, 2)  # (N, L, H, G)
        return keys, gates.reshape(n, *x.shape[:-1], hd, g)

    def step(self, keys: Tensor, gates: Tensor, state: State) -> tuple[State, Tensor]:
        """Step from :meth:`project_input`'s ``(keys (B, H, dk), gates (N, B, H, G))`` of one
        time step.

        Works module-first: ``state`` holds ``(N, B, unit)`` tensors, the layout in which
        the per-module weights apply as plain batched matmuls (a ``(B, N, ...)`` layout
        makes every one of them permute and copy, forward and backward). Returns
        ``(new_state, mask (B, N))``, the state in the same layout.
        """
        h = state[0]
        mech, lstm = self.mechanisms, self.cell == "lstm"
        weights, mask = self.input_attention.select(keys, h.transpose(0, 1))  # (B,H,N), (B,N)
        p = weights.permute(2, 0, 1).unsqueeze(-1)  # (N, B, H, 1)
        # The LSTM only uses gi + gh: b_ih joins b_hh in the state's matmul.
        bias_hh = (mech.bias_ih + mech.bias_hh) if lstm else mech.bias_hh
        gh = torch.baddbmm(bias_hh.unsqueeze(1), h, mech.weight_hh)  # (N, B, G)
        base = gh if lstm else mech.bias_ih.unsqueeze(1)
        if p.shape[2] == 1:  # one head: a fused multiply-add
            gi = torch.addcmul(base, p[:, :, 0], gates[:, :, 0])
        else:
            gi = (p * gates).sum(dim=2) + base
        active = mask.t().unsqueeze(-1).bool()  # (N, B, 1)
        if lstm:
            h_hat, c_hat = lstm_pointwise(gi, state[1])
        else:
            h_hat = gru_pointwise(gi, gh, h)
        # Modules read every module's new cell output, the inactive ones' with their
        # gradient blocked (the reference's blocked_grad); "kept": the kept states instead.
        read = h_hat.detach() if self.comm_reads == "cells" else h
        h_hat = self.comm_attention.attend(torch.where(active, h_hat, read))
        h_new = torch.where(active, h_hat, h)
        new_state = (h_new, torch.where(active, c_hat, state[1])) if lstm else (h_new,)
        return new_state, mask

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}, "
                f"k={self.k}, cell={self.cell!r}" + (f", init={self.init!r}" if self.init != "zeros" else "")
                + (f", comm_reads={self.comm_reads!r}" if self.comm_reads != "cells" else ""))


class RIM(nn.Module):
    r"""A RIM over a sequence, with ``nn.LSTM``-like shapes (time first).

    ``forward(x, state=None, done=None)`` takes ``x`` of shape ``(T, B, input_size)`` and
    an optional ``done`` of shape ``(T, B)``: ``done[t, b]`` true means observation ``t``
    of sequence ``b`` starts a new episode, so its state is reset before step ``t``
    (the CleanRL/torch-ac convention): zeroed, :math:`s \gets (1 - d)\, s`, or with
    ``init="learned"`` set to the learned initial state,
    :math:`s \gets (1 - d)\, s + d\, s_0`. Returns ``(output (T, B, hidden_size),
    state, masks (T, B, N))``.

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
        """The reset state, see :meth:`RIMCell.initial_state`."""
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
        keys, gates = keys.unbind(0), gates.unbind(1)
        state = tuple(s.transpose(0, 1).contiguous() for s in state)  # module-first (N, B, d)
        learned = self.cell.reset_values()
        if learned is not None:
            learned = tuple(s.to(x.dtype).unsqueeze(1) for s in learned)  # (N, 1, d)
        states, masks = [], []
        for t in range(steps):
            if done is not None:
                keep = (~done[t].bool()).to(x.dtype).view(1, batch, 1)
                if learned is None:
                    state = tuple(s * keep for s in state)
                else:
                    state = tuple(s * keep + s0 * (1 - keep) for s, s0 in zip(state, learned))
            state, mask = self.cell.step(keys[t], gates[t], state)
            states.append(state[0])
            masks.append(mask)
        out = torch.stack(states).transpose(1, 2).reshape(steps, batch, self.hidden_size)
        return out, tuple(s.transpose(0, 1).contiguous() for s in state), torch.stack(masks)
