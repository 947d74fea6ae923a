"""Cell codes and the lookup tables of the tensor env (NumPy only).

A MiniGrid cell is the triple ``(type, colour, state)`` of ``WorldObj.encode``. The
tensor env stores one byte per cell instead,

.. math::

    c = \\text{type} + 11\\,(\\text{colour} + 6\\,\\text{state}),

so that every per-cell property is one table lookup: :data:`ENCODING` (code → the
triple the observation shows), :data:`OPAQUE` (``not see_behind()``),
:data:`CAN_OVERLAP`, :data:`CAN_PICKUP`, :data:`IS_BOX`, :data:`IS_DOOR`,
:data:`IS_GOAL`, :data:`IS_LAVA`, :data:`IS_OPEN_DOOR`, :data:`TOGGLED` (a door's code
after ``Door.toggle`` opens or closes it) and :data:`DOOR_KEY` (the code of the key that
unlocks a locked door, ``-1`` otherwise). Code ``0`` is "unseen" (``(0, 0, 0)``) and
:data:`EMPTY` (``1``) is MiniGrid's ``None`` cell, which encodes as ``(1, 0, 0)``.

The env's grids hold one int64 *word* per cell,

.. math::

    w = c + 2^{8}\\,\\text{tag} + 2^{16}\\,c_{\\text{in}},

with the instruction tags of the object (bit :data:`TAG_ACT`: an object of the
instruction's acted-on set; bit :data:`TAG_POS`: an object whose position the
instruction checks) and the code :math:`c_{\\text{in}}` of a box's contents (``0``: none),
so that an object's identity and contents move with it in one gather and one scatter.

:data:`VISIBILITY` tabulates one row of ``Grid.process_vis``: given the 7-bit mask
that reaches a row of the agent's view from the row below it and the row's 7-bit
transparency, it returns the row's final mask (bits 0-6) and the mask it passes to the
row above (bits 7-13). Seven lookups replace MiniGrid's double loop.

Example:
    >>> encode_cell(2, 5, 0)  # a grey wall
    57
    >>> ENCODING[57].tolist(), bool(OPAQUE[57]), bool(CAN_OVERLAP[EMPTY])
    ([2, 5, 0], True, True)
    >>> int(VISIBILITY[1 << 3 | 0b1111111 << 7])  # open floor: the row and all above
    16383
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CAN_OVERLAP",
    "CAN_PICKUP",
    "CODE_MASK",
    "CONTENTS_SHIFT",
    "DOOR_KEY",
    "EMPTY",
    "ENCODING",
    "GOTO",
    "IS_BOX",
    "IS_DOOR",
    "IS_GOAL",
    "IS_LAVA",
    "IS_OPEN_DOOR",
    "NONE",
    "NUM_CODES",
    "OPAQUE",
    "OPEN",
    "PICKUP",
    "PUTNEXT",
    "TAG_ACT",
    "TAG_POS",
    "TOGGLED",
    "UNSEEN",
    "VIEW",
    "VISIBILITY",
    "WALL",
    "encode_cell",
]

NUM_TYPES, NUM_COLORS, NUM_STATES = 11, 6, 3
NUM_CODES = NUM_TYPES * NUM_COLORS * NUM_STATES
VIEW = 7
UNSEEN, EMPTY = 0, 1
_WALL_T, _DOOR_T, _KEY_T, _BALL_T, _BOX_T = 2, 4, 5, 6, 7
_FLOOR_T, _GOAL_T, _LAVA_T = 3, 8, 9


def encode_cell(obj_type: int, color: int, state: int) -> int:
    """The byte code of the cell ``(obj_type, color, state)``."""
    if not (0 <= obj_type < NUM_TYPES and 0 <= color < NUM_COLORS and 0 <= state < NUM_STATES):
        raise ValueError(f"cell {(obj_type, color, state)} is outside MiniGrid's encoding")
    return obj_type + NUM_TYPES * (color + NUM_COLORS * state)


WALL = encode_cell(_WALL_T, 5, 0)

_codes = np.arange(NUM_CODES)
_type, _color, _state = _codes % NUM_TYPES, (_codes // NUM_TYPES) % NUM_COLORS, _codes // (NUM_TYPES * NUM_COLORS)
ENCODING = np.stack([_type, _color, _state], axis=1).astype(np.uint8)
ENCODING[EMPTY] = (1, 0, 0)
OPAQUE = (_type == _WALL_T) | ((_type == _DOOR_T) & (_state != 0))
CAN_OVERLAP = np.isin(_type, (1, _FLOOR_T, _GOAL_T, _LAVA_T)) | ((_type == _DOOR_T) & (_state == 0))
CAN_PICKUP = np.isin(_type, (_KEY_T, _BALL_T, _BOX_T))
IS_BOX = _type == _BOX_T
IS_DOOR = _type == _DOOR_T
IS_GOAL = _type == _GOAL_T
IS_LAVA = _type == _LAVA_T
IS_OPEN_DOOR = IS_DOOR & (_state == 0)
TOGGLED = np.where(IS_DOOR, _type + NUM_TYPES * (_color + NUM_COLORS * np.where(_state == 0, 1, 0)), _codes)
DOOR_KEY = np.where(IS_DOOR & (_state == 2), _KEY_T + NUM_TYPES * _color, -1)
del _codes, _type, _color, _state

NONE, GOTO, PICKUP, OPEN, PUTNEXT = 0, 1, 2, 3, 4
"""Instruction kinds: none (goal and lava only), GoTo, Pickup, Open, PutNext."""

CODE_MASK = 0xFF
TAG_ACT, TAG_POS = 1 << 8, 1 << 9
CONTENTS_SHIFT = 16


def _visibility_table(n: int = VIEW) -> np.ndarray:
    """Row transition of ``Grid.process_vis`` for every (incoming mask, transparency)."""
    table = np.zeros(1 << (2 * n), dtype=np.int64)
    for key in range(table.size):
        m = [(key >> i) & 1 for i in range(n)]
        t = [(key >> (n + i)) & 1 for i in range(n)]
        up = [0] * n
        for i in range(n - 1):
            if m[i] and t[i]:
                m[i + 1] = up[i + 1] = up[i] = 1
        for i in reversed(range(1, n)):
            if m[i] and t[i]:
                m[i - 1] = up[i - 1] = up[i] = 1
        table[key] = sum(b << i for i, b in enumerate(m)) | sum(b << (n + i) for i, b in enumerate(up))
    return table


VISIBILITY = _visibility_table()
