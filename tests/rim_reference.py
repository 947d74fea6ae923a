"""A plain per-module, per-step reference of one RIM step, written from the equations.

It reads the parameters of a :class:`metarim.rim.RIMCell` but none of its code paths:
every module is handled in a Python loop, the null input is materialised, and the
input reaches each module's LSTM/GRU through an explicit ``x_n W_n`` product. Tests use
it to check the batched, re-associated implementation; ``benchmarks/rim_cell.py`` times
against it.
"""

from __future__ import annotations

import math

import torch


class BlockedGrad(torch.autograd.Function):
    """The reference code's ``blocked_grad``: identity forward, gradient times ``mask``."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def reference_step(cell, x, state):
    """One RIM step; returns ``(output, new_state, mask)`` like ``RIMCell.forward``.

    The communication attention reads what ``cell.comm_reads`` names: ``"cells"``, every
    module's new cell output through :class:`BlockedGrad` (as Goyal et al.'s
    ``BlocksCore``), or ``"kept"``, the active modules' new outputs and the others' kept
    states."""
    att, mech, comm = cell.input_attention, cell.mechanisms, cell.comm_attention
    h = state[0]
    b, n_units, d = h.shape
    hd, dk, dv = att.num_heads, att.key_size, att.value_size
    inputs = torch.stack([torch.zeros_like(x), x], dim=1)  # [null, x]
    keys = (inputs @ att.key.weight.T).view(b, 2, hd, dk)
    values = (inputs @ att.value.weight.T).view(b, 2, hd, dv)

    scores, reads = [], []
    for n in range(n_units):
        q = (h[:, n] @ att.query.weight[n]).view(b, hd, dk)
        logits = torch.einsum("bhd,bjhd->bhj", q, keys) / math.sqrt(dk)
        scores.append(logits[..., 1].mean(dim=1))
        probs = logits.softmax(dim=-1)
        reads.append(torch.einsum("bhj,bjhd->bhd", probs, values).reshape(b, hd * dv))
    score = torch.stack(scores, dim=1)
    mask = torch.zeros_like(score).scatter_(1, score.topk(cell.k, dim=1).indices, 1.0)

    h_hat, c_hat = [], []
    for n in range(n_units):
        x_n = reads[n] * mask[:, n : n + 1]
        gi = x_n @ mech.weight_ih[n] + mech.bias_ih[n]
        gh = h[:, n] @ mech.weight_hh[n] + mech.bias_hh[n]
        if cell.cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c_n = torch.sigmoid(f) * state[1][:, n] + torch.sigmoid(i) * torch.tanh(g)
            h_hat.append(torch.sigmoid(o) * torch.tanh(c_n))
            c_hat.append(c_n)
        else:
            ir, iz, in_ = gi.chunk(3, dim=-1)
            hr, hz, hn = gh.chunk(3, dim=-1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            h_hat.append((1 - z) * torch.tanh(in_ + r * hn) + z * h[:, n])

    active = mask.bool().unsqueeze(-1)
    if cell.comm_reads == "cells":
        read_from = BlockedGrad.apply(torch.stack(h_hat, 1), active.to(h.dtype))
    else:
        read_from = torch.where(active, torch.stack(h_hat, 1), h)
    ck, cv, ch = comm.key_size, comm.value_size, comm.num_heads
    w_q, w_k, w_v = comm.qkv.weight.split([ch * ck, ch * ck, ch * cv], dim=-1)  # fused q|k|v
    qs = [(read_from[:, n] @ w_q[n]).view(b, ch, ck) for n in range(n_units)]
    ks = torch.stack([(read_from[:, n] @ w_k[n]).view(b, ch, ck) for n in range(n_units)], 1)
    vs = torch.stack([(read_from[:, n] @ w_v[n]).view(b, ch, cv) for n in range(n_units)], 1)
    out = []
    for n in range(n_units):
        probs = (torch.einsum("bhd,bmhd->bhm", qs[n], ks) / math.sqrt(ck)).softmax(dim=-1)
        ctx = torch.einsum("bhm,bmhd->bhd", probs, vs).reshape(b, ch * cv)
        out.append(read_from[:, n] + ctx @ comm.output.weight[n] + comm.output.bias[n])
    h_new = torch.where(active, torch.stack(out, 1), h)
    if cell.cell == "lstm":
        new_state = (h_new, torch.where(active, torch.stack(c_hat, 1), state[1]))
    else:
        new_state = (h_new,)
    return h_new.reshape(b, n_units * d), new_state, mask


def never_select_last(monkeypatch):
    """Patches the input attention so that its active set is always the first k modules."""
    from metarim.rim import InputAttention

    def select(self, keys, h):
        b, n = h.shape[0], h.shape[1]
        queries = self.query(h).view(b, n, self.num_heads, self.key_size)
        logits = torch.einsum("bnhd,bhd->bhn", queries, keys) / math.sqrt(self.key_size)
        mask = torch.zeros(b, n, dtype=logits.dtype)
        mask[:, : self.k] = 1.0
        return torch.sigmoid(logits) * mask.unsqueeze(1), mask

    monkeypatch.setattr(InputAttention, "select", select)
