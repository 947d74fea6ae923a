"""Suite-wide settings.

One intra-op thread: the tests use tiny tensors, for which OpenMP's thread handoff costs
more than it saves, and on a busy 2-core machine two threads made some tests up to 25x
slower. Benchmarks set their own thread counts.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
