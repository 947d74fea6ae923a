"""Functional tensor core: world state, one step, the egocentric view.

A :class:`GoToState` holds ``B`` episodes on padded flat grids of cell words (see
:mod:`metarim.envs.tensor.codes` and :mod:`metarim.envs.tensor.layouts`). :func:`step`
applies one action per episode with ``MiniGridEnv.step`` semantics followed by the
episode's instruction check (``RoomGridLevel.step`` with a BabyAI verifier, or
``KeyCorridorEnv.step``), and :func:`observe` computes ``MiniGridEnv.gen_obs()["image"]``;
both are a fixed, short sequence of tensor ops with no Python loop over the batch.

World dynamics, for action :math:`a` and front cell :math:`f = p + \\delta(d)`:

* ``left``/``right``: :math:`d \\leftarrow (d \\mp 1) \\bmod 4`;
* ``forward``: :math:`p \\leftarrow f` if the cell at :math:`f` can be overlapped (empty,
  open door, goal, lava); onto a goal: terminate with reward :math:`r(t)`; onto lava:
  terminate with reward 0;
* ``pickup``: carry the key/ball/box at :math:`f` if the agent carries nothing;
  ``drop``: put the carried object on :math:`f` if it is empty;
* ``toggle``: a box at :math:`f` becomes its contents; a door opens or closes, a locked
  door opens only if the agent carries the key of its colour (``Door.toggle``);
* ``done``: no-op.

Then :math:`t \\leftarrow t + 1` and the instruction (``kind``) is checked, with the
BabyAI verifiers' rules (``strict`` adds the failures):

* ``GOTO`` (``GoToInstr``): success iff the new front cell is in ``target``, the
  positions of the described objects as last rescanned (at reset and on every ``drop``
  action, which is when ``RoomGridLevel.step`` calls ``update_objs_poss``);
* ``PICKUP`` (``PickupInstr``; also ``KeyCorridorEnv``): success iff a ``pickup`` picked
  up a described object; strict: failure if a ``pickup`` leaves the agent carrying
  another;
* ``OPEN`` (``OpenInstr``): success iff a ``toggle`` leaves a described door open;
  strict: failure if a ``toggle`` on any door does not;
* ``PUTNEXT`` (``PutNextInstr``): success iff a ``drop`` put a described object next to
  (4-neighbourhood) one of the ``target`` cells; strict: failure if a ``pickup`` leaves
  the agent carrying something.

The reward on success is :math:`r(t) = 1 - 0.9\\,t / T_{\\max}` (float64, as
``MiniGridEnv._reward`` computes it), 0 otherwise; ``terminated`` is goal, lava, success
or failure and ``truncated = t \\ge T_{\\max}`` (both may hold).

The view: cell :math:`(v_x, v_y)` of the 7×7 image shows the world cell
:math:`p + (6 - v_y)\\,\\delta(d) + (v_x - 3)\\,\\rho(d)` with :math:`\\rho(d)` the right
vector, made visible by ``Grid.process_vis``'s row scan (one table lookup per row,
:data:`~metarim.envs.tensor.codes.VISIBILITY`; walls and closed or locked doors are
opaque; every cell is visible in levels with ``see_through_walls``); the agent's cell
shows what it carries.

References:
    Chevalier-Boisvert et al. "Minigrid & Miniworld". NeurIPS 2023 Datasets and
    Benchmarks. arXiv:2306.13831. Chevalier-Boisvert et al. "BabyAI". ICLR 2019.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from metarim.envs.tensor import codes
from metarim.envs.tensor.codes import GOTO, NONE, OPEN, PICKUP, PUTNEXT

__all__ = ["ALL_KINDS", "GOTO", "NONE", "OPEN", "PICKUP", "PUTNEXT", "Features", "GoToState", "Tables", "observe",
           "step"]

ALL_KINDS = frozenset((NONE, GOTO, PICKUP, OPEN, PUTNEXT))
_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))
_LEFT, _RIGHT, _FORWARD, _PICKUP, _DROP, _TOGGLE = range(6)


@dataclass
class Tables:
    """Lookup tables and view offsets on one device for padded grids of height ``hp``."""

    encoding: Tensor
    opaque: Tensor
    can_overlap: Tensor
    can_pickup: Tensor
    is_box: Tensor
    is_door: Tensor
    is_goal: Tensor
    is_lava: Tensor
    is_open_door: Tensor
    toggled: Tensor
    door_key: Tensor
    visibility: Tensor
    front: Tensor
    neighbours: Tensor
    view: Tensor
    bits: Tensor

    @classmethod
    def build(cls, hp: int, device: torch.device | str = "cpu") -> Tables:
        """Tables for padded grid height ``hp`` on ``device``."""
        n, half = codes.VIEW, codes.VIEW // 2
        front, view = [], []
        for dx, dy in _DIRS:
            rx, ry = -dy, dx
            front.append(dx * hp + dy)
            view.append([(dx * (n - 1 - vy) + rx * (vx - half)) * hp + dy * (n - 1 - vy) + ry * (vx - half)
                         for vx in range(n) for vy in range(n)])
        t = lambda a, dt: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731
        return cls(
            encoding=t(codes.ENCODING, torch.uint8), opaque=t(codes.OPAQUE, torch.bool),
            can_overlap=t(codes.CAN_OVERLAP, torch.bool), can_pickup=t(codes.CAN_PICKUP, torch.bool),
            is_box=t(codes.IS_BOX, torch.bool), is_door=t(codes.IS_DOOR, torch.bool),
            is_goal=t(codes.IS_GOAL, torch.bool), is_lava=t(codes.IS_LAVA, torch.bool),
            is_open_door=t(codes.IS_OPEN_DOOR, torch.bool), toggled=t(codes.TOGGLED, torch.int64),
            door_key=t(codes.DOOR_KEY, torch.int64), visibility=t(codes.VISIBILITY, torch.int64),
            front=t(front, torch.int64), neighbours=t(front, torch.int64).view(1, 4), view=t(view, torch.int64),
            bits=t([1 << i for i in range(n)], torch.int64),
        )


@dataclass
class GoToState:
    """``B`` episodes as tensors (any level: the name is historical API).

    Attributes:
        grid: ``(B, N)`` int64 cell words of the padded grids (N = Wp * Hp; code, tags
            and box contents, see :mod:`~metarim.envs.tensor.codes`).
        target: ``(B, N)`` bool, the positions the instruction checks (``GOTO``: the
            described objects; ``PUTNEXT``: the fixed objects).
        pos: ``(B,)`` int64 flat agent cell.
        dir: ``(B,)`` int64 agent direction.
        carrying: ``(B,)`` int64 word of the carried object (``EMPTY`` if none).
        steps: ``(B,)`` int64 steps taken in the episode.
        max_steps: ``(B,)`` int64 step limits.
        kind: ``(B,)`` int64 instruction kind (:data:`NONE` ... :data:`PUTNEXT`).
        strict: ``(B,)`` bool, the verifier's ``strict`` flag.
        see_through: ``(B,)`` bool, the level's ``see_through_walls`` (every view cell
            visible, no ``process_vis``).
        dirty: ``(B,)`` bool, a position-checked object moved or vanished since
            ``target`` was last rescanned.
    """

    grid: Tensor
    target: Tensor
    pos: Tensor
    dir: Tensor
    carrying: Tensor
    steps: Tensor
    max_steps: Tensor
    kind: Tensor
    strict: Tensor
    see_through: Tensor
    dirty: Tensor

    def index_copy_(self, idx: Tensor, other: GoToState) -> None:
        """Writes the rows of ``other`` into rows ``idx`` (in place)."""
        for f in fields(self):
            getattr(self, f.name).index_copy_(0, idx, getattr(other, f.name))

    def clone(self) -> GoToState:
        """A deep copy."""
        return GoToState(**{f.name: getattr(self, f.name).clone() for f in fields(self)})


@dataclass(frozen=True)
class Features:
    """What a batch's levels use; :func:`step` skips the checks of absent features.

    Attributes:
        kinds: the instruction kinds present.
        strict: some verifier is strict.
        hazards: some level has goal or lava cells.
        see_through: some level has ``see_through_walls``.
    """

    kinds: frozenset[int] = ALL_KINDS
    strict: bool = True
    hazards: bool = True
    see_through: bool = True

    def __or__(self, other: Features) -> Features:
        return Features(self.kinds | other.kinds, self.strict or other.strict,
                        self.hazards or other.hazards, self.see_through or other.see_through)


def step(state: GoToState, action: Tensor, tables: Tables,
         features: Features | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Steps every episode once, in place; returns ``(reward, terminated, truncated)``.

    Args:
        state: the episodes (mutated).
        action: ``(B,)`` int64 actions in ``0..6``.
        tables: :meth:`Tables.build` for the state's grid height.
        features: what the episodes' levels use (a superset); ``None``: everything.

    Returns:
        float64 rewards and bool termination and truncation flags, each ``(B,)``.
    """
    grid, pos, d, carry, kind = state.grid, state.pos, state.dir, state.carrying, state.kind
    empty = codes.EMPTY
    fwd = pos + tables.front[d]
    fw = grid.gather(1, fwd.unsqueeze(1)).squeeze(1)  # front word
    fc = fw & codes.CODE_MASK
    is_fwd, is_pick, is_drop, is_tog = action == _FORWARD, action == _PICKUP, action == _DROP, action == _TOGGLE
    new_dir = torch.where(action == _LEFT, (d + 3) % 4, torch.where(action == _RIGHT, (d + 1) % 4, d))
    new_pos = torch.where(is_fwd & tables.can_overlap[fc], fwd, pos)
    hands_empty = carry == empty
    pick = is_pick & tables.can_pickup[fc] & hands_empty
    drop = is_drop & (fw == empty) & ~hands_empty
    tog_box = is_tog & tables.is_box[fc]
    tog_door = is_tog & tables.is_door[fc] & ((tables.door_key[fc] < 0) | (tables.door_key[fc] == (carry & codes.CODE_MASK)))
    cell = torch.where(
        pick, empty, torch.where(
            drop, carry, torch.where(
                tog_box, (fw >> codes.CONTENTS_SHIFT).clamp(min=empty), torch.where(
                    tog_door, fw - fc + tables.toggled[fc], fw))))
    grid.scatter_(1, fwd.unsqueeze(1), cell.unsqueeze(1))
    state.carrying = new_carry = torch.where(pick, fw, torch.where(drop, empty, carry))
    state.pos, state.dir = new_pos, new_dir
    state.steps = steps = state.steps + 1

    # RoomGridLevel.step rescans the described objects' positions on every drop action;
    # the rescan can only differ from ``target`` after such an object moved or vanished.
    moved = (pick | tog_box | drop) & (((fw | carry) & codes.TAG_POS) != 0)
    state.dirty = dirty = state.dirty | moved
    rescan = is_drop & dirty
    if bool(rescan.any()):
        rows = rescan.nonzero().squeeze(1)
        state.target[rows] = (grid[rows] & codes.TAG_POS) != 0
        state.dirty = dirty & ~rescan
    target = state.target
    kinds = ALL_KINDS if features is None else features.kinds
    checks = []
    if GOTO in kinds:
        checks.append((GOTO, target.gather(1, (new_pos + tables.front[new_dir]).unsqueeze(1)).squeeze(1)))
    if PICKUP in kinds:
        picked = pick & ((fw & codes.TAG_ACT) != 0)
        checks.append((PICKUP, picked))
    if OPEN in kinds:
        opened = is_tog & ((fw & codes.TAG_ACT) != 0) & tables.is_open_door[cell & codes.CODE_MASK]
        checks.append((OPEN, opened))
    if PUTNEXT in kinds:
        near = target.gather(1, fwd.unsqueeze(1) + tables.neighbours).any(1)
        checks.append((PUTNEXT, drop & ((carry & codes.TAG_ACT) != 0) & near))
    success = _by_kind(kind, checks, len(kinds))
    if features is None or features.strict:
        holds = is_pick & (new_carry != empty)
        fails = []
        if PICKUP in kinds:
            fails.append((PICKUP, holds & ~picked))
        if OPEN in kinds:
            fails.append((OPEN, is_tog & tables.is_door[fc] & ~opened))
        if PUTNEXT in kinds:
            fails.append((PUTNEXT, holds))
        failure = state.strict & _by_kind(kind, fails, len(kinds))  # never where success
    else:
        failure = torch.zeros_like(success)
    if features is None or features.hazards:
        goal = is_fwd & tables.is_goal[fc]
        lava = is_fwd & tables.is_lava[fc]
        win = (goal & ~failure) | success
        ended = goal | lava | success | failure
    else:
        win, ended = success, success | failure
    reward = torch.where(win, 1 - 0.9 * (steps.double() / state.max_steps.double()), 0.0)
    return reward, ended, steps >= state.max_steps


def _by_kind(kind: Tensor, checks: list[tuple[int, Tensor]], num_kinds: int) -> Tensor:
    """``checks[i][1]`` where ``kind == checks[i][0]``, False elsewhere."""
    if not checks:
        return torch.zeros_like(kind, dtype=torch.bool)
    if len(checks) == 1 and num_kinds == 1:
        return checks[0][1]
    out = (kind == checks[-1][0]) & checks[-1][1]
    for k, v in reversed(checks[:-1]):
        out = torch.where(kind == k, v, out)
    return out


def observe(state: GoToState, tables: Tables, features: Features | None = None) -> Tensor:
    """``(B, 7, 7, 3)`` uint8 images, equal to minigrid's ``gen_obs()["image"]``."""
    n = codes.VIEW
    b = state.pos.shape[0]
    idx = state.pos.unsqueeze(1) + tables.view[state.dir]
    cells = state.grid.gather(1, idx) & codes.CODE_MASK  # (B, 49), index vx * 7 + vy
    clear = ~tables.opaque[cells].view(b, n, n)  # [b, vx, vy]
    keys = (clear.long() * (tables.bits << n).view(1, n, 1)).sum(1).unbind(1)  # per vy: bits over vx, << 7
    m = torch.full((b,), 1 << (n // 2), dtype=torch.int64, device=clear.device)
    outs = []
    for vy in reversed(range(n)):
        out = tables.visibility[m | keys[vy]]
        outs.append(out)
        m = out >> n
    masks = torch.stack(outs[::-1], 1)  # (B, 7): bits 0-6 are row vy's final mask
    visible = (masks.unsqueeze(1) & tables.bits.view(1, n, 1)) != 0  # [b, vx, vy]
    if features is None or features.see_through:
        visible = visible | state.see_through.view(b, 1, 1)
    cells = cells.view(b, n, n)
    cells[:, n // 2, n - 1] = state.carrying & codes.CODE_MASK
    cells = torch.where(visible, cells, 0)
    return tables.encoding[cells]
