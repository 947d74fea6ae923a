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
    reset is a single cuDNN/MKL call.

    Args:
        input_size: features per step.
        hidden_size: LSTM size.
    """

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
        if steps == 1:  # one step (rollout collection): the cell kernel has less overhead
            h, c = state
            if done is not None:
                keep = (~done[0]).to(x.dtype).unsqueeze(1)
                h, c = h * keep, c * keep
            lstm = self.lstm
            h, c = torch.lstm_cell(x[0], (h, c), lstm.weight_ih_l0, lstm.weight_hh_l0,
                                   lstm.bias_ih_l0, lstm.bias_hh_l0)
            return h.unsqueeze(0), (h, c), None
        h, c = state[0].unsqueeze(0), state[1].unsqueeze(0)
        cuts = [0, steps]
        if done is not None:
            any_done = done.any(1)
            any_done[0] = True
            cuts = sorted(set(torch.nonzero(any_done).flatten().tolist()) | {steps})
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            if done is not None:
                keep = (~done[a]).to(x.dtype).view(1, batch, 1)
                h, c = h * keep, c * keep
            out, (h, c) = self.lstm(x[a:b], (h, c))
            outs.append(out)
        return torch.cat(outs) if len(outs) > 1 else outs[0], (h[0], c[0]), None


@register_memory("rim")
def _rim(
    input_size: int, hidden_size: int, num_units: int = 4, k: int = 2, cell: str = "lstm", **kw: Any
) -> nn.Module:
    from metarim.rim import RIM

    return RIM(input_size, hidden_size, num_units, k, cell=cell, **kw)
