"""Recurrent Independent Mechanisms: batched group cells, the RIM cell and a sequence wrapper.

A RIM memory holds ``N`` recurrent modules ("mechanisms"). At each step an input
attention over ``[null, input]`` scores every module; the ``k`` modules that attend most
to the real input are *active*: they read the input and update their state, then read
from all modules' new cell outputs through a multi-head communication attention (with a
residual; the inactive modules' outputs are read with their gradient blocked, as in the
reference). The other ``N - k`` modules get no input and keep their state bit-identical.

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

from metarim.rim.attention import CommAttention, InputAttention
from metarim.rim.cell import COMM_READS, INITS, RIM, RIMCell, State
from metarim.rim.group import GroupGRUCell, GroupLinear, GroupLSTMCell

__all__ = [
    "COMM_READS",
    "CommAttention",
    "GroupGRUCell",
    "GroupLSTMCell",
    "GroupLinear",
    "INITS",
    "InputAttention",
    "RIM",
    "RIMCell",
    "State",
]
