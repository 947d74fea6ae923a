"""Recurrent Independent Mechanisms: batched group cells, the RIM cell and a sequence wrapper.

A RIM memory holds ``N`` recurrent modules ("mechanisms"). At each step an input
attention over ``[null, input]`` scores every module; the ``k`` modules that attend most
to the real input are *active*: they read the input and update their state, then read
from all modules through a multi-head communication attention (with a residual). The
other ``N - k`` modules get no input and keep their state bit-identical.

Per-module weights are stacked with the module axis first, ``(N, in, out)``, and applied
with one batched matmul: there is no Python loop over modules.

Defaults follow the reference implementation of Goyal et al. (the RIM paper's appendix
and its public code): input key size 64, input value size 400, 1 input head; communication
key size 32, value size 32, 4 communication heads. Dropout defaults to 0 (the reference
uses 0.1), because dropout inside a MAML inner loop makes the inner and outer losses
stochastic; pass ``dropout=0.1`` for the reference setting.

References:
    Goyal, Lamb, Hoffmann, Sodhani, Levine, Bengio, Schölkopf. "Recurrent Independent
    Mechanisms". ICLR 2021. arXiv:1909.10893.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = [
    "GroupGRUCell",
    "GroupLSTMCell",
    "GroupLinear",
    "RIM",
    "RIMCell",
    "State",
]

State = tuple[Tensor, ...]
"""Recurrent state: ``(h, c)`` for LSTM modules, ``(h,)`` for GRU modules, each
``(batch, num_units, hidden_size // num_units)``."""


def _check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def _group_apply(x: Tensor, weight: Tensor) -> Tensor:
    """``(B, N, in) x (N, in, out) -> (B, N, out)`` with one batched matmul."""
    # .contiguous(): CPU bmm on a transposed view is ~15x slower than on a dense batch.
    return torch.einsum("bni,nio->bno", x, weight)


class GroupLinear(nn.Module):
    r"""``N`` independent linear maps applied to ``N`` slots at once.

    .. math:: y_{b,n} = x_{b,n} W_n + b_n, \qquad W \in \mathbb{R}^{N \times in \times out}

    Initialised like :class:`torch.nn.Linear`, per module:
    :math:`\mathcal{U}(-1/\sqrt{in}, 1/\sqrt{in})`.

    Example:
        >>> layer = GroupLinear(3, 5, num_units=4)
        >>> layer(torch.zeros(2, 4, 3)).shape
        torch.Size([2, 4, 5])
    """

    module_axis = 0

    def __init__(self, in_features: int, out_features: int, num_units: int, bias: bool = True):
        super().__init__()
        _check_positive(in_features=in_features, out_features=out_features, num_units=num_units)
        self.in_features, self.out_features, self.num_units = in_features, out_features, num_units
        self.weight = nn.Parameter(torch.empty(num_units, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_units, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.num_units, self.in_features):
            raise ValueError(
                f"GroupLinear expects input (batch, {self.num_units}, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        y = _group_apply(x, self.weight)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, num_units={self.num_units}"


class _GroupRNNCellBase(nn.Module):
    """Stacked per-module weights ``weight_ih (N, in, G*h)``, ``weight_hh (N, h, G*h)``."""

    module_axis = 0
    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_units: int):
        super().__init__()
        _check_positive(input_size=input_size, hidden_size=hidden_size, num_units=num_units)
        self.input_size, self.hidden_size, self.num_units = input_size, hidden_size, num_units
        g = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(num_units, input_size, g))
        self.weight_hh = nn.Parameter(torch.empty(num_units, hidden_size, g))
        self.bias_ih = nn.Parameter(torch.empty(num_units, g))
        self.bias_hh = nn.Parameter(torch.empty(num_units, g))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.LSTMCell / GRUCell initialisation, per module: U(-1/sqrt(h), 1/sqrt(h)).
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def input_gates(self, x: Tensor) -> Tensor:
        """The input's contribution to the gates, ``x_n W^{ih}_n + b^{ih}_n``: ``(B, N, G*h)``."""
        if x.dim() != 3 or x.shape[1:] != (self.num_units, self.input_size):
            raise ValueError(
                f"{type(self).__name__} expects input (batch, {self.num_units}, "
                f"{self.input_size}), got {tuple(x.shape)}"
            )
        return _group_apply(x, self.weight_ih) + self.bias_ih

    def hidden_gates(self, h: Tensor) -> Tensor:
        """The state's contribution to the gates, ``h_n W^{hh}_n + b^{hh}_n``."""
        return _group_apply(h, self.weight_hh) + self.bias_hh

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_units={self.num_units}"


class GroupLSTMCell(_GroupRNNCellBase):
    r"""``N`` independent LSTM cells stepped together (gate order i, f, g, o as torch).

    .. math::
        i, f, g, o = \sigma, \sigma, \tanh, \sigma\,(x_n W^{ih}_n + b^{ih}_n + h_n W^{hh}_n + b^{hh}_n)
        \quad c'_n = f \odot c_n + i \odot g, \quad h'_n = o \odot \tanh c'_n

    Example:
        >>> cell = GroupLSTMCell(3, 5, num_units=4)
        >>> h = c = torch.zeros(2, 4, 5)
        >>> h, c = cell(torch.randn(2, 4, 3), (h, c))
        >>> h.shape
        torch.Size([2, 4, 5])
    """

    gates = 4

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return self.recur(self.input_gates(x), state)

    def recur(self, gi: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Step from precomputed input gates ``gi`` (see :meth:`input_gates`)."""
        h, c = state
        i, f, g, o = (gi + self.hidden_gates(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class GroupGRUCell(_GroupRNNCellBase):
    r"""``N`` independent GRU cells stepped together (gate order r, z, n as torch).

    .. math::
        r = \sigma(x W^{ih}_r + b^{ih}_r + h W^{hh}_r + b^{hh}_r),\quad
        z = \sigma(x W^{ih}_z + b^{ih}_z + h W^{hh}_z + b^{hh}_z)

        n = \tanh(x W^{ih}_n + b^{ih}_n + r \odot (h W^{hh}_n + b^{hh}_n)),\quad
        h' = (1 - z) \odot n + z \odot h

    Example:
        >>> cell = GroupGRUCell(3, 5, num_units=4)
        >>> cell(torch.randn(2, 4, 3), torch.zeros(2, 4, 5)).shape
        torch.Size([2, 4, 5])
    """

    gates = 3

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        return self.recur(self.input_gates(x), h)

    def recur(self, gi: Tensor, h: Tensor) -> Tensor:
        """Step from precomputed input gates ``gi`` (see :meth:`input_gates`)."""
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = self.hidden_gates(h).chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h


class InputAttention(nn.Module):
    r"""Key-value attention of each module over ``[null, input]``; picks the top-k modules.

    Queries come from each module's state (a :class:`GroupLinear`), keys and values from
    the input and a zero "null" input. Module ``n`` is scored by its attention logit to the
    real input, averaged over heads; the ``k`` highest are active. Active modules receive
    :math:`\mathrm{softmax}(q_n K^\top / \sqrt{d})\, V`; inactive ones receive zeros.

    The key and value maps have no bias, so the null input's key and value are exactly
    zero: its logit is 0 and the softmax over ``[null, x]`` is
    :math:`p = \sigma(q_n k(x) / \sqrt d)` on the real input. The module's read is then
    :math:`p\, v(x)`, computed as such without materialising the null input.
    """

    def __init__(self, input_size: int, unit_size: int, num_units: int, k: int,
                 key_size: int, value_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.k, self.key_size, self.value_size, self.num_heads = k, key_size, value_size, num_heads
        self.key = nn.Linear(input_size, key_size * num_heads, bias=False)
        self.value = nn.Linear(input_size, value_size * num_heads, bias=False)
        self.query = GroupLinear(unit_size, key_size * num_heads, num_units, bias=False)
        self.dropout = nn.Dropout(dropout)

    def select(self, keys: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """Attention weights on the real input ``(B, H, N)`` (zero for inactive modules)
        and the activity mask ``(B, N)``, from input keys ``(B, H, dk)`` and state ``h``."""
        b, n = h.shape[0], h.shape[1]
        queries = self.query(h).view(b, n, self.num_heads, self.key_size)
        logits = torch.einsum("bnhd,bhd->bhn", queries, keys) / math.sqrt(self.key_size)
        score = logits.mean(dim=1)  # (B, N): attention to the real input
        mask = torch.zeros_like(score).scatter_(1, score.topk(self.k, dim=1).indices, 1.0)
        probs = self.dropout(torch.sigmoid(logits))  # softmax([0, l])[1] = sigmoid(l)
        return probs * mask.unsqueeze(1), mask


class CommAttention(nn.Module):
    r"""Multi-head attention in which each module reads from all modules (residual).

    .. math:: h_n \leftarrow h_n + W^o_n\,\mathrm{concat}_h\big(
        \mathrm{softmax}(q_{n,h} K_h^\top/\sqrt{d})\, V_h\big)

    Only active modules' rows are kept by the caller.
    """

    def __init__(self, unit_size: int, num_units: int, key_size: int, value_size: int,
                 num_heads: int, dropout: float):
        super().__init__()
        self.key_size, self.value_size, self.num_heads = key_size, value_size, num_heads
        # Queries, keys and values in one stacked map: one batched matmul instead of three.
        self.qkv = GroupLinear(unit_size, (2 * key_size + value_size) * num_heads, num_units,
                               bias=False)
        self.output = GroupLinear(value_size * num_heads, unit_size, num_units)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        b, n = h.shape[0], h.shape[1]
        hd, dk, dv = self.num_heads, self.key_size, self.value_size
        q, k, v = self.qkv(h).split([hd * dk, hd * dk, hd * dv], dim=-1)
        q = q.view(b, n, hd, dk).transpose(1, 2)  # (B, H, N, dk)
        k = k.view(b, n, hd, dk).transpose(1, 2)
        v = v.view(b, n, hd, dv).transpose(1, 2)
        probs = self.dropout((q @ k.transpose(-1, -2) / math.sqrt(dk)).softmax(dim=-1))
        ctx = (probs @ v).transpose(1, 2).reshape(b, n, hd * dv)
        return h + self.output(ctx)


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
