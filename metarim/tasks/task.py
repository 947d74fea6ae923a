"""Plain, seedable task descriptions.

A :class:`Task` says *which* environments an agent meets: a level id, keyword arguments
for ``gymnasium.make``, a half-open range of episode seeds ``[seed_start, seed_stop)``
and an optional :class:`MissionFilter`. It holds no environment and can be compared,
hashed, saved as JSON and tested without stepping anything.

Example:
    >>> t = Task("BabyAI-GoToLocal-v0", seed_start=0, seed_stop=100)
    >>> Task.from_dict(t.to_dict()) == t
    True
    >>> t.overlaps(Task("BabyAI-GoToLocal-v0", seed_start=100, seed_stop=200))
    False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MissionFilter", "Task"]

MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class MissionFilter:
    """Keeps only the missions that name one of ``colors`` and one of ``objects``.

    A field left ``None`` accepts anything. Two filters whose (colour, object) products
    do not intersect accept disjoint sets of missions of the form "go to the red ball".

    Args:
        colors: accepted colour words, e.g. ``("red",)``.
        objects: accepted object words, e.g. ``("ball", "key")``.

    Example:
        >>> MissionFilter(colors=("red",), objects=("ball",)).matches("go to the red ball")
        True
        >>> MissionFilter(colors=("red",)).matches("go to a blue key")
        False
    """

    colors: tuple[str, ...] | None = None
    objects: tuple[str, ...] | None = None

    def matches(self, mission: str) -> bool:
        """Whether ``mission`` names an accepted colour and an accepted object."""
        words = set(mission.lower().split())
        if self.colors is not None and not words.intersection(self.colors):
            return False
        return self.objects is None or bool(words.intersection(self.objects))

    def families(self) -> set[tuple[str, str]] | None:
        """The (colour, object) pairs accepted, or ``None`` if a field is open."""
        if self.colors is None or self.objects is None:
            return None
        return {(c, o) for c in self.colors for o in self.objects}


@dataclass(frozen=True)
class Task:
    """One task: a level, its keyword arguments, a seed range and a mission filter.

    Args:
        level: a registered gymnasium id, e.g. ``"MiniGrid-DoorKey-5x5-v0"``.
        env_kwargs: extra keyword arguments for ``gymnasium.make`` as sorted pairs.
        seed_start: first episode seed (inclusive).
        seed_stop: last episode seed (exclusive); must be ``> seed_start``.
        mission_filter: if given, episodes whose mission it rejects are redrawn.
    """

    level: str
    env_kwargs: tuple[tuple[str, Any], ...] = ()
    seed_start: int = 0
    seed_stop: int = MAX_SEED
    mission_filter: MissionFilter | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.level, str) or not self.level:
            raise ValueError(f"level must be a non-empty string, got {self.level!r}")
        if not 0 <= self.seed_start < self.seed_stop <= MAX_SEED:
            raise ValueError(
                f"seed range [{self.seed_start}, {self.seed_stop}) must satisfy "
                f"0 <= start < stop <= {MAX_SEED}"
            )
        object.__setattr__(self, "env_kwargs", tuple(sorted(dict(self.env_kwargs).items())))

    def overlaps(self, other: Task) -> bool:
        """Whether some episode could belong to both tasks.

        Tasks on different levels never overlap; on one level they overlap when both
        their seed ranges and their accepted mission families intersect.
        """
        if self.level != other.level or dict(self.env_kwargs) != dict(other.env_kwargs):
            return False
        if self.seed_stop <= other.seed_start or other.seed_stop <= self.seed_start:
            return False
        a = self.mission_filter.families() if self.mission_filter else None
        b = other.mission_filter.families() if other.mission_filter else None
        return a is None or b is None or bool(a & b)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict; :meth:`from_dict` inverts it."""
        mf = self.mission_filter
        return {
            "level": self.level,
            "env_kwargs": dict(self.env_kwargs),
            "seed_start": self.seed_start,
            "seed_stop": self.seed_stop,
            "mission_filter": None
            if mf is None
            else {"colors": mf.colors and list(mf.colors), "objects": mf.objects and list(mf.objects)},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        """Builds a task from :meth:`to_dict` output."""
        mf = d.get("mission_filter")
        if mf is not None:
            mf = MissionFilter(
                colors=None if mf.get("colors") is None else tuple(mf["colors"]),
                objects=None if mf.get("objects") is None else tuple(mf["objects"]),
            )
        return cls(
            level=d["level"],
            env_kwargs=tuple(dict(d.get("env_kwargs") or {}).items()),
            seed_start=int(d.get("seed_start", 0)),
            seed_stop=int(d.get("seed_stop", MAX_SEED)),
            mission_filter=mf,
        )
