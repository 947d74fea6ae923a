r"""Actor-critic policy: image and mission encoders, a memory core, two heads.

The 7×7×3 symbolic view (object, colour, state ids) is one-hot coded per channel
(11 + 6 + 3 planes; ``image_encoding="onehot"``) or read as its three raw ids
cast to float (``"raw"``, default, as the rl-starter-files model), and goes through three small
convolutions (7→6→3→2→1, as in torch-ac's BabyAI model); the first convolution on
one-hot planes is exactly a learned embedding of each cell followed by a convolution,
without the embedding's slow scatter backward. The mission's word ids go through an
embedding and a GRU whose last valid hidden state is the mission code :math:`m`.

They are combined by **FiLM** (Perez et al. 2018, as in the BabyAI baselines):
the last convolution's pre-activation :math:`z` becomes
:math:`\mathrm{ReLU}(\gamma(m) \odot z + \beta(m))`, so the instruction gates *which*
visual features reach the memory; or by **concatenation** ``[ReLU(z), m]``; or, the
default since issue 18, by the **heads** (below). See ``docs/rl.md`` for the measurements
behind the defaults. The memory core (``"lstm"`` or ``"rim"``)
reads the combined code; the actor gives action logits and the critic a value. With
``combine="heads"`` (the rl-starter-files layout) the memory reads :math:`\mathrm{ReLU}(z)`
only and the heads read :math:`[h_t, m]`, the memory output next to the mission code.

``init="kit"`` (default) re-initialises the ``nn.Linear`` layers outside the memory core as
rl-starter-files' ``init_params``: :math:`W_{ij} \sim \mathcal{N}(0, 1)`, then each row
:math:`W_i \leftarrow W_i / \lVert W_i \rVert_2`, bias 0.

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

__all__ = ["ActorCritic", "MissionEncoder", "kit_init", "unique_rows"]

State = tuple[Tensor, ...]
# ids per channel of the symbolic view: 11 object types, 6 colours, 3 door states
CHANNEL_SIZES = (11, 6, 3)
NATIVE_CONV_ROWS = 8
"""Up to this many frames, without autograd, the convolutions use ATen's native CPU
kernels instead of MKL-DNN's, which carry a fixed cost per call: 117 against 237 us per
image code of 8 frames (one half of the env worker's 16 envs), 417 against 359 us for 16,
same values to 1e-7 (``benchmarks/throughput.py`` gives the effect on collection)."""


def unique_rows(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Exact ``torch.unique(ids, dim=0, return_inverse=True)`` for int64 rows, via NumPy.

    Sorting rows as raw bytes is far cheaper than ``unique_dim``'s row comparisons.
    """
    a = np.ascontiguousarray(ids.numpy())
    keys = a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return ids[torch.from_numpy(first)], torch.from_numpy(inverse.ravel())


def _used_rows(index: Tensor, multiple: int = 8) -> tuple[Tensor, Tensor]:
    """The distinct values of ``index`` and each entry's position among them.

    The list is padded (repeating its first entry) to a multiple of ``multiple`` rows:
    MKL-DNN builds a kernel per batch size (≈ 2 ms for a new one, against 1.6 ms for a
    whole convolution stack on 100 rows), so rounding keeps the number of sizes small.
    The padding rows are computed and never read.
    """
    used, inverse = torch.unique(index.flatten(), return_inverse=True)
    pad = -len(used) % multiple
    if pad:
        used = torch.cat([used, used[:1].expand(pad)])
    return used, inverse


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

    def encode_unique(self, uniq: Tensor) -> Tensor:
        """Codes ``(U, out_dim)`` of ``uniq (U, L)`` missions, without de-duplication."""
        lengths = (uniq != 0).sum(1).clamp(min=1)
        width = int(lengths.max())
        out, _ = self.gru(self.embed(uniq[:, :width]))
        return out[torch.arange(len(uniq)), lengths - 1]

    def forward(self, ids: Tensor) -> Tensor:
        """``ids (N, L)`` int64 → ``(N, out_dim)``; duplicates are encoded once."""
        if not self._caching or torch.is_grad_enabled() or ids.device.type != "cpu":
            uniq, inverse = unique_rows(ids.cpu()) if ids.device.type == "cpu" else torch.unique(
                ids, dim=0, return_inverse=True)
            return self.encode_unique(uniq.to(ids.device))[inverse.to(ids.device)]
        rows = [r.tobytes() for r in ids.numpy()]
        missing = sorted({r for r in rows if r not in self._cache})
        if missing:
            idx = [rows.index(r) for r in missing]
            for r, code in zip(missing, self.encode_unique(ids[idx])):
                self._cache[r] = code
        return torch.stack([self._cache[r] for r in rows])


class ActorCritic(nn.Module):
    """Recurrent actor-critic over MiniGrid observations (see module docstring).

    Args:
        num_actions: size of the discrete action space.
        vocab_size: size of the word-id table.
        memory: name of a registered memory core (``"lstm"``, ``"rim"``).
        hidden_size: memory size (total over modules for a RIM).
        combine: ``"film"``, ``"concat"`` or ``"heads"`` (see the module docstring).
        image_dim: image code size.
        mission_dim: mission code size.
        memory_kwargs: extra arguments of the core (``num_units``, ``k`` for a RIM).
        image_encoding: ``"onehot"`` (20 planes) or ``"raw"`` (the 3 ids as floats).
        init: ``"torch"`` (PyTorch's defaults, the actor's last layer orthogonal with gain
            0.01) or ``"kit"`` (:func:`kit_init` on every ``nn.Linear`` outside the
            memory core, the actor's last layer included).

    References:
        rl-starter-files ``model.py`` (``ACModel``, ``init_params``), Lucas Willems,
        https://github.com/lcswillems/rl-starter-files.
    """

    def __init__(
        self,
        num_actions: int,
        vocab_size: int,
        *,
        memory: str = "lstm",
        hidden_size: int = 64,
        combine: str = "heads",
        image_dim: int = 64,
        mission_dim: int = 128,
        memory_kwargs: dict[str, Any] | None = None,
        image_encoding: str = "raw",
        init: str = "kit",
    ) -> None:
        super().__init__()
        if combine not in ("film", "concat", "heads"):
            raise ValueError(f"combine={combine!r} must be 'film', 'concat' or 'heads'")
        if image_encoding not in ("onehot", "raw"):
            raise ValueError(f"image_encoding={image_encoding!r} must be 'onehot' or 'raw'")
        if init not in ("torch", "kit"):
            raise ValueError(f"init={init!r} must be 'torch' or 'kit'")
        self.combine, self.image_encoding = combine, image_encoding
        self.register_buffer("offsets", torch.tensor([0, 11, 17]), persistent=False)
        self.register_buffer("maxima", torch.tensor(CHANNEL_SIZES) - 1, persistent=False)
        in_planes = sum(CHANNEL_SIZES) if image_encoding == "onehot" else len(CHANNEL_SIZES)
        self.conv = nn.Sequential(
            nn.Conv2d(in_planes, 16, 2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 2), nn.ReLU(),
        )
        self.conv_last = nn.Conv2d(32, image_dim, 2)
        self.mission = MissionEncoder(vocab_size, 32, mission_dim)
        if combine == "film":
            self.film = nn.Linear(mission_dim, 2 * image_dim)
        mem_in = image_dim + mission_dim if combine == "concat" else image_dim
        self.memory = make_memory(memory, mem_in, hidden_size, **(memory_kwargs or {}))
        head_in = hidden_size + mission_dim if combine == "heads" else hidden_size
        self.actor = nn.Sequential(nn.Linear(head_in, 64), nn.Tanh(), nn.Linear(64, num_actions))
        self.critic = nn.Sequential(nn.Linear(head_in, 64), nn.Tanh(), nn.Linear(64, 1))
        if init == "kit":
            for name, module in self.named_modules():
                if isinstance(module, nn.Linear) and not name.startswith("memory."):
                    kit_init(module)
        else:
            nn.init.orthogonal_(self.actor[-1].weight, 0.01)
            nn.init.zeros_(self.actor[-1].bias)

    def initial_state(self, batch_size: int) -> State:
        """Zero memory for ``batch_size`` sequences."""
        p = next(self.parameters())
        return self.memory.initial_state(batch_size, device=p.device, dtype=p.dtype)

    def image_code(self, image: Tensor) -> Tensor:
        """``image (N, 7, 7, 3)`` → the last convolution's pre-activation ``z (N, image_dim)``."""
        wt = self.conv_last.weight
        n = image.shape[0]
        if self.image_encoding == "raw":
            x = image.to(device=wt.device, dtype=wt.dtype).permute(0, 3, 1, 2)
        else:
            ids = torch.minimum(image.long(), self.maxima) + self.offsets  # (N, 7, 7, 3)
            n, h, w, _ = ids.shape
            x = torch.zeros(n, h, w, sum(CHANNEL_SIZES), dtype=wt.dtype, device=wt.device)
            x.scatter_(-1, ids, 1.0)
            x = x.permute(0, 3, 1, 2)
        if (n <= NATIVE_CONV_ROWS and wt.device.type == "cpu" and not torch.is_grad_enabled()
                and torch.backends.mkldnn.enabled):
            torch.backends.mkldnn.enabled = False  # a process-wide switch, restored below
            try:
                return self.conv_last(self.conv(x)).flatten(1)
            finally:
                torch.backends.mkldnn.enabled = True
        return self.conv_last(self.conv(x)).flatten(1)

    def mission_terms(self, m: Tensor) -> Tensor:
        """What the image code meets, per mission code ``m (N, mission_dim)``: FiLM's
        ``[γ, β] (N, 2 * image_dim)``, or ``m`` itself (``concat``, ``heads``)."""
        return self.film(m) if self.combine == "film" else m

    def combine_codes(self, z: Tensor, terms: Tensor) -> Tensor:
        """Image code ``z (N, image_dim)`` and :meth:`mission_terms` ``(N, ...)`` → memory
        input (``heads``: the image code alone; the mission joins at the heads)."""
        if self.combine == "film":
            gamma, beta = terms.chunk(2, dim=-1)
            return torch.relu((1 + gamma) * z + beta)
        if self.combine == "heads":
            return torch.relu(z)
        return torch.cat([torch.relu(z), terms], dim=-1)

    def encode(self, image: Tensor, mission: Tensor) -> Tensor:
        """``image (N, 7, 7, 3)``, ``mission (N, L)`` → memory input ``(N, D)``."""
        return self.combine_codes(self.image_code(image), self.mission_terms(self.mission(mission)))

    def encode_indexed(self, obs: dict[str, Tensor]) -> Tensor:
        """:meth:`encode` of frames given as rows of tables of distinct values.

        ``obs["image"] (U, 7, 7, 3)`` and ``obs["mission"] (V, L)`` hold distinct views and
        missions; ``obs["image_index"]`` and ``obs["mission_index"]`` (same shape, any)
        say which row each frame uses. Each row that is used is encoded once, so a
        minibatch whose frames repeat views (no-op actions, bumping into walls) runs the
        convolutions on fewer rows. Same values as :meth:`encode` on the gathered frames.

        Returns:
            ``(*index.shape, D)``.
        """
        z, terms = self._indexed_codes(obs)
        return self.combine_codes(z, terms).view(*obs["image_index"].shape, -1)

    def _indexed_codes(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Image codes and mission terms ``(N, ...)`` of the frames of :meth:`encode_indexed`."""
        used, inverse = _used_rows(obs["image_index"])
        z = self.image_code(obs["image"][used])[inverse]
        used, inverse = _used_rows(obs["mission_index"])
        terms = self.mission_terms(self.mission.encode_unique(obs["mission"][used]))
        return z, terms[inverse]

    def forward(
        self, obs: dict[str, Tensor], state: State | None, done: Tensor | None
    ) -> tuple[Tensor, Tensor, State, Tensor | None]:
        """Runs the policy over a ``(T, B)`` sequence of observations.

        Args:
            obs: ``image (T, B, 7, 7, 3)`` and ``mission (T, B, L)``; or tables of
                distinct rows with ``image_index`` and ``mission_index`` ``(T, B)`` (see
                :meth:`encode_indexed`).
            state: memory before step 0, or ``None`` for zeros.
            done: ``(T, B)`` bool, true where an observation starts an episode.

        Returns:
            ``logits (T, B, A)``, ``value (T, B)``, the memory after the last step, and
            the core's activity masks ``(T, B, N)`` or ``None``.
        """
        x, terms = self.codes(obs)
        out, state, masks = self.memory(x, state, done)
        if self.combine == "heads":
            out = torch.cat([out, terms], dim=-1)
        return self.actor(out), self.critic(out).squeeze(-1), state, masks

    def codes(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The encoders' part of :meth:`forward`: the memory input ``x (T, B, D)`` and the
        mission terms ``(T, B, M)`` (:meth:`mission_terms`, which the heads read with
        ``combine="heads"``) of a ``(T, B)`` sequence, ``obs`` as for :meth:`forward`."""
        if "image_index" in obs:
            shape = obs["image_index"].shape
            z, terms = self._indexed_codes(obs)
        else:
            shape = obs["image"].shape[:2]
            z = self.image_code(obs["image"].flatten(0, 1))
            terms = self.mission_terms(self.mission(obs["mission"].flatten(0, 1)))
        return self.combine_codes(z, terms).view(*shape, -1), terms.view(*shape, -1)


def kit_init(layer: nn.Linear) -> None:
    r"""rl-starter-files' ``init_params`` on one layer, in place: :math:`W_{ij} \sim
    \mathcal{N}(0, 1)`, each row divided by its L2 norm, bias 0 (draws from torch's RNG).

    Example:
        >>> layer = nn.Linear(5, 3)
        >>> kit_init(layer)
        >>> torch.allclose(layer.weight.norm(dim=1), torch.ones(3)), bool((layer.bias == 0).all())
        (True, True)
    """
    with torch.no_grad():
        layer.weight.normal_(0, 1)
        layer.weight.div_(layer.weight.pow(2).sum(1, keepdim=True).sqrt())
        if layer.bias is not None:
            layer.bias.zero_()
