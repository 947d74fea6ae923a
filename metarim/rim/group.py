"""Per-module layers with stacked weights ``(N, in, out)``, applied with one batched matmul.

There is no Python loop over modules: ``N`` modules cost one ``einsum`` per layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["GroupGRUCell", "GroupLSTMCell", "GroupLinear"]


def check_positive(**kwargs: int) -> None:
    for name, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def _group_apply(x: Tensor, weight: Tensor) -> Tensor:
    """``(B, N, in) x (N, in, out) -> (B, N, out)`` with one batched matmul."""
    return torch.einsum("bni,nio->bno", x, weight)


def lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    r"""The LSTM update from pre-activation gates (order i, f, g, o as torch), any layout.

    :math:`c' = \sigma(f) \odot c + \sigma(i) \odot \tanh g`, :math:`h' = \sigma(o) \odot \tanh c'`.
    """
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_pointwise(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    r"""The GRU update from input gates ``gi`` and state gates ``gh`` (order r, z, n).

    :math:`r, z = \sigma(gi_{r,z} + gh_{r,z})`, :math:`n = \tanh(gi_n + r \odot gh_n)`,
    :math:`h' = (1 - z) \odot n + z \odot h`.
    """
    ir, iz, in_ = gi.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r = torch.sigmoid(ir + hr)
    z = torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    return (1 - z) * n + z * h


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
        check_positive(in_features=in_features, out_features=out_features, num_units=num_units)
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
        check_positive(input_size=input_size, hidden_size=hidden_size, num_units=num_units)
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
        return lstm_pointwise(gi + self.hidden_gates(h), c)


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
        return gru_pointwise(gi, self.hidden_gates(h), h)
