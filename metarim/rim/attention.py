"""The two attentions of a RIM: input attention (top-k selection) and communication."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from metarim.rim.group import GroupLinear

__all__ = ["CommAttention", "InputAttention"]


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
        # A broadcast product, not a (B, N, dk) x (B, dk, 1) bmm: 64 one-column matmuls
        # cost more than the multiply-add.
        logits = (queries * keys.unsqueeze(1)).sum(-1).transpose(1, 2) / math.sqrt(self.key_size)
        score = logits.mean(dim=1) if self.num_heads > 1 else logits[:, 0]  # (B, N)
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
        """``(B, N, unit) -> (B, N, unit)``; see :meth:`attend` for the module-first layout."""
        return self.attend(h.transpose(0, 1)).transpose(0, 1)

    def attend(self, h: Tensor) -> Tensor:
        """The same map on module-first states ``(N, B, unit)``, the layout in which the
        stacked weights apply as plain batched matmuls (no permute, in either pass)."""
        n, b = h.shape[0], h.shape[1]
        hd, dk, dv = self.num_heads, self.key_size, self.value_size
        q, k, v = torch.bmm(h, self.qkv.weight).split([hd * dk, hd * dk, hd * dv], dim=-1)
        q = q.reshape(n, b * hd, dk).transpose(0, 1)  # (B*H, N, dk)
        k = k.reshape(n, b * hd, dk).transpose(0, 1)
        v = v.reshape(n, b * hd, dv).transpose(0, 1)
        # Transposed logits (B*H, M, N), softmax over M: torch's softmax over a last dim
        # of size N = 6 is ~4x slower (forward and backward) than over a middle dim.
        if torch.compiler.is_compiling():
            # Under torch.compile the N x N products are broadcast multiply-sums, which
            # inductor fuses into one loop each; as bmm they stay library calls that cost
            # ~30-60 us apiece for 4 x 4 matrices (in eager the bmm is the faster form).
            logits_t = (k.unsqueeze(2) * q.unsqueeze(1)).sum(-1)  # (B*H, M, N)
            probs_t = self.dropout((logits_t / math.sqrt(dk)).softmax(dim=1))
            ctx = (probs_t.unsqueeze(-1) * v.unsqueeze(2)).sum(1)  # (B*H, N, dv)
        else:
            probs_t = self.dropout((k @ q.transpose(1, 2) / math.sqrt(dk)).softmax(dim=1))
            ctx = probs_t.transpose(1, 2) @ v
        ctx = ctx.transpose(0, 1).reshape(n, b, hd * dv)  # (N, B, H*dv)
        return h + torch.baddbmm(self.output.bias.unsqueeze(1), ctx, self.output.weight)
