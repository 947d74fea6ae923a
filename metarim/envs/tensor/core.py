"""Functional tensor core of the GoTo levels: state, one step, the egocentric view.

A :class:`GoToState` holds ``B`` episodes on padded flat grids (see
:mod:`metarim.envs.tensor.layouts`). :func:`step` applies one action per episode with
``MiniGridEnv.step`` + ``RoomGridLevel.step`` semantics, and :func:`observe` computes
``MiniGridEnv.gen_obs()["image"]``; both are a fixed, short sequence of tensor ops
with no Python loop over the batch.

Step, for action :math:`a` and front cell :math:`f = p + \\delta(d)`:

* ``left``/``right``: :math:`d \\leftarrow (d \\mp 1) \\bmod 4`;
* ``forward``: :math:`p \\leftarrow f` if the cell at :math:`f` can be overlapped;
* ``pickup``: carry the object at :math:`f` if it can be picked up and the agent
  carries nothing; ``drop``: put the carried object on :math:`f` if it is empty;
  ``toggle``: a box at :math:`f` is replaced by its contents (nothing); ``done``: no-op;
* then :math:`t \\leftarrow t + 1`, success iff the new front cell is one of the
  instruction's object cells (``GoToInstr.verify``), reward
  :math:`r = 1 - 0.9\\,t / T_{\\max}` on success (float64, as minigrid computes it),
  ``terminated = success`` and ``truncated = t \\ge T_{\\max}``.

The view: cell :math:`(v_x, v_y)` of the 7×7 image shows the world cell
:math:`p + (6 - v_y)\\,\\delta(d) + (v_x - 3)\\,\\rho(d)` with :math:`\\rho(d)` the right
vector, made visible by ``Grid.process_vis``'s row scan (one table lookup per row,
:data:`~metarim.envs.tensor.codes.VISIBILITY`); the agent's cell shows what it carries.

References:
    Chevalier-Boisvert et al. "Minigrid & Miniworld". NeurIPS 2023 Datasets and
    Benchmarks. arXiv:2306.13831. Chevalier-Boisvert et al. "BabyAI". ICLR 2019.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from metarim.envs.tensor import codes

__all__ = ["GoToState", "Tables", "observe", "step"]

_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))


@dataclass
class Tables:
    """Lookup tables and view offsets on one device for padded grids of height ``hp``."""

    encoding: Tensor
    opaque: Tensor
    can_overlap: Tensor
    can_pickup: Tensor
    is_box: Tensor
    visibility: Tensor
    front: Tensor
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
            is_box=t(codes.IS_BOX, torch.bool), visibility=t(codes.VISIBILITY, torch.int64),
            front=t(front, torch.int64), view=t(view, torch.int64),
            bits=t([1 << i for i in range(n)], torch.int64),
        )


@dataclass
class GoToState:
    """``B`` GoTo episodes as tensors.

    Attributes:
        grid: ``(B, N)`` uint8 cell codes of the padded grids (N = Wp * Hp).
        target: ``(B, N)`` bool, the instruction's object cells.
        pos: ``(B,)`` int64 flat agent cell.
        dir: ``(B,)`` int64 agent direction.
        carrying: ``(B,)`` uint8 code of the carried object (``EMPTY`` if none).
        steps: ``(B,)`` int64 steps taken in the episode.
        max_steps: ``(B,)`` int64 step limits.
    """

    grid: Tensor
    target: Tensor
    pos: Tensor
    dir: Tensor
    carrying: Tensor
    steps: Tensor
    max_steps: Tensor

    def index_copy_(self, idx: Tensor, other: GoToState) -> None:
        """Writes the rows of ``other`` into rows ``idx`` (in place)."""
        for f in fields(self):
            getattr(self, f.name).index_copy_(0, idx, getattr(other, f.name))

    def clone(self) -> GoToState:
        """A deep copy."""
        return GoToState(**{f.name: getattr(self, f.name).clone() for f in fields(self)})


def step(state: GoToState, action: Tensor, tables: Tables) -> tuple[Tensor, Tensor, Tensor]:
    """Steps every episode once, in place; returns ``(reward, terminated, truncated)``.

    Args:
        state: the episodes (mutated).
        action: ``(B,)`` int64 actions in ``0..6``.
        tables: :meth:`Tables.build` for the state's grid height.

    Returns:
        float64 rewards and bool termination and truncation flags, each ``(B,)``.
    """
    grid, pos, d, carrying = state.grid, state.pos, state.dir, state.carrying
    fwd = pos + tables.front[d]
    fcode = grid.gather(1, fwd.unsqueeze(1)).squeeze(1)
    fcode_l = fcode.long()
    new_dir = torch.where(action == 0, (d + 3) % 4, torch.where(action == 1, (d + 1) % 4, d))
    new_pos = torch.where((action == 2) & tables.can_overlap[fcode_l], fwd, pos)
    empty = codes.EMPTY
    pick = (action == 3) & tables.can_pickup[fcode_l] & (carrying == empty)
    drop = (action == 4) & (fcode == empty) & (carrying != empty)
    toggle_box = (action == 5) & tables.is_box[fcode_l]
    cell = torch.where(pick | toggle_box, torch.full_like(fcode, empty), torch.where(drop, carrying, fcode))
    grid.scatter_(1, fwd.unsqueeze(1), cell.unsqueeze(1))
    state.carrying = torch.where(pick, fcode, torch.where(drop, torch.full_like(carrying, empty), carrying))
    state.pos, state.dir = new_pos, new_dir
    state.steps = steps = state.steps + 1
    success = state.target.gather(1, (new_pos + tables.front[new_dir]).unsqueeze(1)).squeeze(1)
    reward = torch.where(success, 1 - 0.9 * (steps.double() / state.max_steps.double()), 0.0)
    return reward, success, steps >= state.max_steps


def observe(state: GoToState, tables: Tables) -> Tensor:
    """``(B, 7, 7, 3)`` uint8 images, equal to minigrid's ``gen_obs()["image"]``."""
    n = codes.VIEW
    b = state.pos.shape[0]
    idx = state.pos.unsqueeze(1) + tables.view[state.dir]
    cells = state.grid.gather(1, idx).long()  # (B, 49), index vx * 7 + vy
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
    cells = cells.view(b, n, n)
    cells[:, n // 2, n - 1] = state.carrying.long()
    cells = torch.where(visible, cells, 0)
    return tables.encoding[cells]
