r"""Actor-critic policy: image and mission encoders, a memory core, two heads.

The 7×7×3 symbolic view (object, colour, state ids) is one-hot coded per channel
(11 + 6 + 3 planes) and goes through three small convolutions (7→6→3→2→1, as in torch-ac's
BabyAI model); the first convolution on one-hot planes is exactly a learned embedding of
each cell followed by a convolution, without the embedding's slow scatter backward. The mission's word ids go through an
embedding and a GRU whose last valid hidden state is the mission code :math:`m`.

They are combined by **FiLM** (default, Perez et al. 2018, as in the BabyAI baselines):
the last convolution's pre-activation :math:`z` becomes
:math:`\mathrm{ReLU}(\gamma(m) \odot z + \beta(m))`, so the instruction gates *which*
visual features reach the memory; or by **concatenation** ``[image, m]``. See
``docs/rl.md`` for why FiLM is the default. The memory core (``"lstm"`` or ``"rim"``)
reads the combined code; the actor gives action logits and the critic a value.

Example:
    >>> import torch
    >>> pol = ActorCritic(num_actions=7, vocab_size=64, memory="lstm", hidden_size=32)
    >>> obs = {"image": torch.zeros(5, 2, 7, 7, 3, dtype=torch.uint8),
    ...        "mission": torch.ones(5, 2, 8, dtype=torch.long)}
    >>> logits, value, state, masks = pol(obs, pol.initial_state(2), None)
    >>> logits.shape, value.shape
    (torch.Size([5, 2, 7]), torch.Size([5, 2]))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metarim.rl.memory import make_memory

__all__ = ["ActorCritic", "MissionEncoder", "unique_rows"]

State = tuple[Tensor, ...]
# ids per channel of the symbolic view: 11 object types, 6 colours, 3 door states
CHANNEL_SIZES = (11, 6, 3)


def unique_rows(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Exact ``torch.unique(ids, dim=0, return_inverse=True)`` for int64 rows, via NumPy.

    Sorting rows as raw bytes is far cheaper than ``unique_dim``'s row comparisons.
    """
    a = np.ascontiguousarray(ids.numpy())
    keys = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return ids[torch.from_numpy(first)], torch.from_numpy(inverse.ravel())


class MissionEncoder(nn.Module):
    """Word embedding + GRU over the unique missions of a batch.

    Inside :meth:`cached` (used by the rollout collector) and under ``torch.no_grad``, the
    codes are cached per mission, so a rollout encodes each mission once instead of at
    every step.

    Args:
        vocab_size: number of word ids (0 is padding).
        word_dim: embedding size.
        out_dim: GRU size (the mission code size).
    """

    def __init__(self, vocab_size: int, word_dim: int = 32, out_dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, out_dim, batch_first=True)
        self._cache: dict[bytes, Tensor] = {}
        self._caching = False

    @contextlib.contextmanager
    def cached(self) -> Iterator[None]:
        """Within this block, under ``torch.no_grad``, each mission is encoded once.

        The caller promises that the parameters do not change inside the block (a rollout
        collection); the cache is emptied on entry and exit.
        """
        self._cache, self._caching = {}, True
        try:
            yield
        finally:
            self._cache, self._caching = {}, False

    def _encode(self, uniq: Tensor) -> Tensor:
        lengths = (uniq != 0).sum(1).clamp(min=1)
        width = int(lengths.max())
        out, _ = self.gru(self.embed(uniq[:, :width]))
        return out[torch.arange(len(uniq)), lengths - 1]

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (N, L)`` int64 → ``(N, out_dim)``; duplicates are encoded once."""
        if not self._caching or torch.is_grad_enabled() or ids.device.type != "cpu":
            uniq, inverse = unique_rows(ids.cpu()) if ids.device.type == "cpu" else torch.unique(
                ids, dim=0, return_inverse=True)
            return self._encode(uniq.to(ids.device))[inverse.to(ids.device)]
        rows = [r.tobytes() for r in ids.numpy()]
        missing = sorted({r for r in rows if r not in self._cache})
        if missing:
            idx = [rows.index(r) for r in missing]
            for r, code in zip(missing, self._encode(ids[idx])):
                self._cache[r] = code
        return torch.stack([self._cache[r] for r in rows])


class ActorCritic(nn.Module):
    """Recurrent actor-critic over MiniGrid observations (see module docstring).

    Args:
        num_actions: size of the discrete action space.
        vocab_size: size of the word-id table.
        memory: name of a registered memory core (``"lstm"``, ``"rim"``).
        hidden_size: memory size (total over modules for a RIM).
        combine: ``"film"`` or ``"concat"``.
        image_dim: image code size.
        mission_dim: mission code size.
        memory_kwargs: extra arguments of the core (``num_units``, ``k`` for a RIM).
    """

    def __init__(
        self,
        num_actions: int,
        vocab_size: int,
        *,
        memory: str = "lstm",
        hidden_size: int = 128,
        combine: str = "film",
        image_dim: int = 64,
        mission_dim: int = 64,
        memory_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if combine not in ("film", "concat"):
            raise ValueError(f"combine={combine!r} must be 'film' or 'concat'")
        self.combine = combine
        self.register_buffer("offsets", torch.tensor([0, 11, 17]), persistent=False)
        self.register_buffer("maxima", torch.tensor(CHANNEL_SIZES) - 1, persistent=False)
        self.conv = nn.Sequential(
            nn.Conv2d(sum(CHANNEL_SIZES), 16, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 2), nn.ReLU(),
        )
        self.conv_last = nn.Conv2d(32, image_dim, 2)
        self.mission = MissionEncoder(vocab_size, 32, mission_dim)
        if combine == "film":
            self.film = nn.Linear(mission_dim, 2 * image_dim)
            mem_in = image_dim
        else:
            mem_in = image_dim + mission_dim
        self.memory = make_memory(memory, mem_in, hidden_size, **(memory_kwargs or {}))
        self.actor = nn.Sequential(nn.Linear(hidden_size, 64), nn.Tanh(), nn.Linear(64, num_actions))
        self.critic = nn.Sequential(nn.Linear(hidden_size, 64), nn.Tanh(), nn.Linear(64, 1))
        nn.init.orthogonal_(self.actor[-1].weight, 0.01)
        nn.init.zeros_(self.actor[-1].bias)

    def initial_state(self, batch_size: int) -> State:
        """Zero memory for ``batch_size`` sequences."""
        p = next(self.parameters())
        return self.memory.initial_state(batch_size, device=p.device, dtype=p.dtype)

    def encode(self, image: Tensor, mission: Tensor) -> Tensor:
        """``image (N, 7, 7, 3)``, ``mission (N, L)`` → memory input ``(N, D)``."""
        ids = torch.minimum(image.long(), self.maxima) + self.offsets  # (N, 7, 7, 3)
        n, h, w, _ = ids.shape
        wt = self.conv_last.weight
        x = torch.zeros(n, h, w, sum(CHANNEL_SIZES), dtype=wt.dtype, device=wt.device)
        x.scatter_(-1, ids, 1.0)
        z = self.conv_last(self.conv(x.permute(0, 3, 1, 2))).flatten(1)
        m = self.mission(mission)
        if self.combine == "film":
            gamma, beta = self.film(m).chunk(2, dim=-1)
            return torch.relu((1 + gamma) * z + beta)
        return torch.cat([torch.relu(z), m], dim=-1)

    def forward(
        self, obs: dict[str, Tensor], state: State | None, done: Tensor | None
    ) -> tuple[Tensor, Tensor, State, Tensor | None]:
        """Runs the policy over a ``(T, B)`` sequence of observations.

        Args:
            obs: ``image (T, B, 7, 7, 3)`` and ``mission (T, B, L)``.
            state: memory before step 0, or ``None`` for zeros.
            done: ``(T, B)`` bool, true where an observation starts an episode.

        Returns:
            ``logits (T, B, A)``, ``value (T, B)``, the memory after the last step, and
            the core's activity masks ``(T, B, N)`` or ``None``.
        """
        steps, batch = obs["image"].shape[:2]
        x = self.encode(obs["image"].flatten(0, 1), obs["mission"].flatten(0, 1))
        out, state, masks = self.memory(x.view(steps, batch, -1), state, done)
        return self.actor(out), self.critic(out).squeeze(-1), state, masks
