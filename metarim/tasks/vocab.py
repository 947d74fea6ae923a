"""Mission tokeniser: words to fixed-length arrays of ids.

The vocabulary starts with every word of the MiniGrid and BabyAI mission grammars, so
runs on different levels share ids; an unseen word gets the next free id unless the
vocabulary is frozen (then it maps to ``<unk>``). It is saved with a run
(:meth:`Vocab.to_dict`) so that evaluation uses the ids training used.

Example:
    >>> v = Vocab()
    >>> v.encode("go to the red ball")[:6].tolist()
    [2, 3, 4, 5, 6, 0]
    >>> v.decode(v.encode("go to the red ball"))
    'go to the red ball'
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["BASE_WORDS", "Vocab"]

BASE_WORDS = (
    "go to the red ball green blue purple yellow grey box key door a pick up open put "
    "next and then after you on your left right in front of behind use get goal square "
    "avoid lava wall object empty floor agent unlocked locked"
).split()


class Vocab:
    """Word ↔ id map with padding id 0 and unknown id 1.

    Args:
        max_size: size of the embedding table (ids are ``< max_size``).
        max_len: length of encoded missions (longer ones are truncated).
        words: initial words after the two special tokens; BabyAI grammar by default.
    """

    PAD, UNK = 0, 1

    def __init__(
        self, max_size: int = 128, max_len: int = 32, words: list[str] | None = None
    ) -> None:
        self.max_size, self.max_len = max_size, max_len
        self.frozen = False
        self.words: dict[str, int] = {"<pad>": 0, "<unk>": 1}
        self._cache: dict[str, np.ndarray] = {}
        for w in BASE_WORDS if words is None else words:
            self._add(w)

    def _add(self, word: str) -> int:
        if word not in self.words:
            if len(self.words) >= self.max_size:
                return self.UNK
            self.words[word] = len(self.words)
        return self.words[word]

    def encode(self, mission: str) -> np.ndarray:
        """Returns the ``(max_len,)`` int64 id array of ``mission`` (zero-padded)."""
        out = self._cache.get(mission)
        if out is None:
            toks = re.findall(r"[a-z]+", mission.lower())[: self.max_len]
            ids = [self.words.get(w, self.UNK) if self.frozen else self._add(w) for w in toks]
            out = np.zeros(self.max_len, dtype=np.int64)
            out[: len(ids)] = ids
            self._cache[mission] = out
        return out.copy()

    def decode(self, ids: Any) -> str:
        """Inverse of :meth:`encode` (padding dropped)."""
        inv = {i: w for w, i in self.words.items()}
        return " ".join(inv.get(int(i), "<unk>") for i in np.asarray(ids) if int(i) != self.PAD)

    def replace_with(self, other: Vocab) -> None:
        """Takes ``other``'s words in place (size, length and frozen flag stay), so that
        every holder of this object (envs, workers) sees them; the encoding cache is
        dropped.

        Example:
            >>> v, saved = Vocab(), Vocab(words=["go", "north"])
            >>> v.replace_with(saved)
            >>> v.encode("go north")[:3].tolist()
            [2, 3, 0]
        """
        self.words.clear()
        self.words.update(other.words)
        self._cache.clear()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"max_size": self.max_size, "max_len": self.max_len, "words": list(self.words)[2:]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["max_size"]), int(d["max_len"]), list(d["words"]))
