"""Memory cores, looked up by name.

Every core is an ``nn.Module`` with

* ``initial_state(batch_size) -> tuple[Tensor, ...]``, each tensor batch-first;
* ``forward(x, state, done) -> (out, state, masks)`` with ``x`` of shape
  ``(T, B, input_size)``, ``done`` of shape ``(T, B)`` (``done[t, b]`` true: observation
  ``t`` starts an episode, so the state is zeroed before step ``t``), ``out`` of shape
  ``(T, B, hidden_size)`` and ``masks`` either ``None`` or ``(T, B, num_units)`` (the
  modules that were active, for RIMs).

so the policy does not care which one it holds.

Example:
    >>> core = make_memory("lstm", input_size=4, hidden_size=8)
    >>> out, state, masks = core(torch.randn(3, 2, 4), core.initial_state(2), None)
    >>> out.shape, masks is None
    (torch.Size([3, 2, 8]), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MEMORY_CORES", "LSTMCore", "make_memory", "register_memory"]

State = tuple[Tensor, ...]
MEMORY_CORES: dict[str, Callable[..., nn.Module]] = {}


def register_memory(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Registers a core factory ``f(input_size, hidden_size, **kw) -> nn.Module``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MEMORY_CORES:
            raise ValueError(f"memory core {name!r} is already registered")
        MEMORY_CORES[name] = fn
        return fn

    return deco


def make_memory(name: str, input_size: int, hidden_size: int, **kwargs: Any) -> nn.Module:
    """Builds the core registered as ``name``."""
    if name not in MEMORY_CORES:
        raise ValueError(f"unknown memory {name!r}; choose one of {sorted(MEMORY_CORES)}")
    return MEMORY_CORES[name](input_size, hidden_size, **kwargs)


@register_memory("lstm")
class LSTMCore(nn.Module):
    r"""An ``nn.LSTM`` with episode resets: :math:`(h, c) \leftarrow (1 - d_t)(h, c)`.

    Runs the fused ``nn.LSTM`` over the stretches between resets, so a sequence with no
    reset is a single cuDNN/MKL call. A short sequence (``<= max_cell_steps``, e.g. a PPO
    recurrence window) with resets inside, and a single step, run ``torch.lstm_cell`` per
    step instead: a minibatch of 64 four-step windows nearly always has a reset at every
    step, and four one-step ``nn.LSTM`` calls cost more (forward and backward) than four
    cells. Same function either way, up to float rounding.

    Args:
        input_size: features per step.
        hidden_size: LSTM size.
    """

    max_cell_steps = 16
    """Longest sequence with inner resets that runs as per-step cells."""
    compiles = False
    """``compile=True`` leaves this core eager: its cells are already single fused
    kernels, and compiled it was slower: 0.126 against 0.080 ms per 8-env step without
    gradient, 2.26 against 1.99 ms forward + backward over 64 four-step windows
    (``python benchmarks/compile_memory.py --memory lstm --repeats 3``, idle machine).
    Cores without the attribute are compiled."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.lstm = nn.LSTM(input_size, hidden_size)

    def initial_state(self, batch_size: int, device: Any = None, dtype: Any = None) -> State:
        """Zero ``(h, c)``, each ``(B, hidden_size)``."""
        z = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return (z, z.clone())

    def forward(
        self, x: Tensor, state: State | None = None, done: Tensor | None = None
    ) -> tuple[Tensor, State, None]:
        steps, batch = x.shape[0], x.shape[1]
        if state is None:
            state = self.initial_state(batch, x.device, x.dtype)
        if steps == 1:  # one step (rollout collection)
            return self._cells(x, state, done)
        inner: list[int] = []  # steps after the first where some row resets
        if done is not None:
            inner = (torch.nonzero(done[1:].any(1)).flatten() + 1).tolist()
        if inner and steps <= self.max_cell_steps:
            return self._cells(x, state, done)
        h, c = state[0].unsqueeze(0), state[1].unsqueeze(0)
        cuts = [0, *inner, steps]
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            if done is not None:
                keep = (~done[a]).to(x.dtype).view(1, batch, 1)
                h, c = h * keep, c * keep
            out, (h, c) = self.lstm(x[a:b], (h, c))
            outs.append(out)
        return torch.cat(outs) if len(outs) > 1 else outs[0], (h[0], c[0]), None

    def _cells(self, x: Tensor, state: State, done: Tensor | None) -> tuple[Tensor, State, None]:
        """One ``torch.lstm_cell`` per step, resetting rows before each step."""
        lstm, (h, c) = self.lstm, state
        keep = None if done is None else (~done).to(x.dtype).unsqueeze(-1)  # (T, B, 1)
        outs = []
        for t in range(x.shape[0]):
            if keep is not None:
                h, c = h * keep[t], c * keep[t]
            h, c = torch.lstm_cell(x[t], (h, c), lstm.weight_ih_l0, lstm.weight_hh_l0,
                                   lstm.bias_ih_l0, lstm.bias_hh_l0)
            outs.append(h)
        return torch.stack(outs) if len(outs) > 1 else h.unsqueeze(0), (h, c), None


@register_memory("rim")
def _rim(
    input_size: int, hidden_size: int, num_units: int = 4, k: int = 2, cell: str = "lstm", **kw: Any
) -> nn.Module:
    from metarim.rim import RIM

    return RIM(input_size, hidden_size, num_units, k, cell=cell, **kw)
