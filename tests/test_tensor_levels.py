"""Every supported level of the tensor env equals minigrid step for step.

The reference is ``make_vec_env`` (gymnasium ``SyncVectorEnv`` of real minigrid envs,
same-step autoreset). Both backends get the same actions: uniformly random ones, and
those of a scripted solver (:func:`solver_action`, a breadth-first planner over the
reference env's grid that walks to, opens, unlocks and picks up what the instruction
needs), so that success paths, doors, keys and pickups are exercised, not only random
walks. At every step the test asserts bitwise equality of the observation (image,
direction, mission ids), the float64 reward, terminated, truncated and the carried
object, and counts episodes and successes so that it cannot pass on idle episodes.

The default run covers a sample of levels (one per family); ``-m slow`` runs every
supported level with ≥ 200 random-action and ≥ 50 solver episodes.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from metarim.envs import make_vec_env
from metarim.envs.tensor import SUPPORTED_LEVELS, TensorGoToVecEnv
from metarim.envs.tensor.codes import CODE_MASK, ENCODING
from metarim.tasks import Task, Vocab

_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = range(6)


# ---------------------------------------------------------------------------- solver
def _find(env, pred) -> list[tuple[int, int]]:
    g = env.grid
    return [(k % g.width, k // g.width) for k, c in enumerate(g.grid) if c is not None and pred(c)]


def _passable(cell, carrying) -> bool:
    if cell is None or cell.type in ("goal", "floor"):
        return True
    if cell.type == "door":
        if cell.is_locked:
            return carrying is not None and carrying.type == "key" and carrying.color == cell.color
        return True
    return False


def _step_towards(env, targets: set[tuple[int, int]], final: int | None, rng) -> int | None:
    """The next action to face one of ``targets`` (then ``final``); ``None`` if unreachable."""
    if not targets:
        return None
    pos, d = tuple(int(v) for v in env.agent_pos), int(env.agent_dir)
    g = env.grid
    prev = {pos: None}
    queue = collections.deque([pos])
    goal = None
    while queue:
        c = queue.popleft()
        if any(abs(c[0] - t[0]) + abs(c[1] - t[1]) == 1 for t in targets):
            goal = c
            break
        for dx, dy in _DIRS:
            n = (c[0] + dx, c[1] + dy)
            if 0 <= n[0] < g.width and 0 <= n[1] < g.height and n not in prev \
                    and _passable(g.get(*n), env.carrying):
                prev[n] = c
                queue.append(n)
    if goal is None:
        return None
    path = [goal]
    while prev[path[-1]] is not None:
        path.append(prev[path[-1]])
    path.reverse()
    if len(path) > 1:
        nxt = path[1]
        want = _DIRS.index((nxt[0] - pos[0], nxt[1] - pos[1]))
        if want != d:
            return RIGHT if (want - d) % 4 == 1 else LEFT
        cell = g.get(*nxt)
        if cell is not None and cell.type == "door" and not cell.is_open:
            return TOGGLE
        return FORWARD
    faced = [t for t in targets if abs(pos[0] - t[0]) + abs(pos[1] - t[1]) == 1]
    want = _DIRS.index((faced[0][0] - pos[0], faced[0][1] - pos[1]))
    if want != d:
        return RIGHT if (want - d) % 4 == 1 else LEFT
    return FORWARD if final is None else final


def _free_hands(env, rng) -> int:
    """Drop what is carried on the nearest empty cell."""
    g, pos = env.grid, tuple(int(v) for v in env.agent_pos)
    empty = {(k % g.width, k // g.width) for k, c in enumerate(g.grid) if c is None} - {pos}
    act = _step_towards(env, empty, DROP, rng)
    return int(rng.choice([LEFT, RIGHT])) if act is None else act


def _get_key(env, color: str | None, rng) -> int | None:
    """Fetch a key (of ``color`` if given), opening boxes if no key lies on the grid."""
    want = lambda c: c.type == "key" and (color is None or c.color == color)  # noqa: E731
    if env.carrying is not None and want(env.carrying):
        return None
    if env.carrying is not None:
        return _free_hands(env, rng)
    keys = set(_find(env, want))
    if keys:
        return _step_towards(env, keys, PICKUP, rng)
    return _step_towards(env, set(_find(env, lambda c: c.type == "box")), TOGGLE, rng)


def _objects(env, objs) -> set[tuple[int, int]]:
    return set(_find(env, lambda c: any(c is o for o in objs)))


def solver_action(env, rng) -> int:
    """A scripted action for the minigrid ``env`` (unwrapped) that solves it often."""
    from minigrid.envs.babyai.core import verifier as v
    from minigrid.envs.keycorridor import KeyCorridorEnv

    instr = getattr(env, "instrs", None)
    carrying = env.carrying
    act = None
    if isinstance(env, KeyCorridorEnv) or isinstance(instr, v.PickupInstr):
        objs = [env.obj] if isinstance(env, KeyCorridorEnv) else instr.desc.obj_set
        cells = _objects(env, objs)
        ax, ay = (int(v) for v in env.agent_pos)
        if carrying is not None and any(abs(ax - x) + abs(ay - y) == 1 for x, y in cells):
            return _free_hands(env, rng)  # next to it with full hands (e.g. the key)
        act = _step_towards(env, cells, PICKUP, rng)
    elif isinstance(instr, v.GoToInstr):
        act = _step_towards(env, set(map(tuple, instr.desc.obj_poss)), None, rng)
    elif isinstance(instr, v.OpenInstr):
        doors = _objects(env, instr.desc.obj_set)
        locked = [d for d in instr.desc.obj_set if d.is_locked]
        if locked:
            act = _get_key(env, locked[0].color, rng)
        if act is None:
            act = _step_towards(env, doors, TOGGLE, rng)
    elif isinstance(instr, v.PutNextInstr):
        if carrying is not None and any(carrying is o for o in instr.desc_move.obj_set):
            fixed = [tuple(p) for p in instr.desc_fixed.obj_poss]
            spots = {(x + dx, y + dy) for x, y in fixed for dx, dy in _DIRS
                     if env.grid.get(x + dx, y + dy) is None and (x + dx, y + dy) != tuple(env.agent_pos)}
            act = _step_towards(env, spots, DROP, rng)
        elif carrying is not None:
            return _free_hands(env, rng)
        else:
            act = _step_towards(env, _objects(env, instr.desc_move.obj_set), PICKUP, rng)
    else:
        act = _step_towards(env, set(_find(env, lambda c: c.type == "goal")), None, rng)
    if act is None:  # blocked: a locked door on the way needs its key
        locked = _find(env, lambda c: c.type == "door" and c.is_locked)
        if locked:
            act = _get_key(env, env.grid.get(*locked[0]).color, rng)
    return int(rng.integers(0, 7)) if act is None else act


# ---------------------------------------------------------------------------- comparison
def compare(tasks, num_envs: int, *, seed: int, action_seed: int, mode: str, episodes: int,
            max_steps: int = 100_000) -> dict[str, int]:
    """Steps both backends until ``episodes`` episodes ended; asserts equality every step."""
    vocab = Vocab()
    ref = make_vec_env(tasks, num_envs, seed=seed, vocab=vocab)
    ten = TensorGoToVecEnv(tasks, num_envs, seed=seed, vocab=vocab, numpy=True)
    try:
        ev = dict.fromkeys(("episodes", "success", "truncated", "carried", "steps"), 0)
        o_ref, _ = ref.reset()
        o_ten, _ = ten.reset()
        rng = np.random.default_rng(action_seed)
        while ev["episodes"] < episodes and ev["steps"] < max_steps:
            for k in ("image", "direction", "mission"):
                assert o_ref[k].dtype == o_ten[k].dtype, k
                np.testing.assert_array_equal(o_ten[k], o_ref[k], err_msg=f"step {ev['steps']} {k}")
            envs = [e.unwrapped for e in ref.envs]
            carried = np.array([ENCODING[int(c) & CODE_MASK].tolist() for c in ten.state.carrying])
            want = np.array([e.carrying.encode() if e.carrying is not None else (1, 0, 0) for e in envs])
            np.testing.assert_array_equal(carried, want, err_msg=f"step {ev['steps']} carrying")
            if mode == "uniform":
                a = rng.integers(0, 7, num_envs)
            else:
                a = np.array([solver_action(e, rng) if rng.random() > 0.05 else rng.integers(0, 7) for e in envs])
            o_ref, r_ref, te_ref, tr_ref, _ = ref.step(a)
            o_ten, r_ten, te_ten, tr_ten, _ = ten.step(a)
            assert r_ten.dtype == r_ref.dtype == np.float64
            np.testing.assert_array_equal(r_ten, r_ref, err_msg=f"step {ev['steps']} reward")
            np.testing.assert_array_equal(te_ten, te_ref, err_msg=f"step {ev['steps']} terminated")
            np.testing.assert_array_equal(tr_ten, tr_ref, err_msg=f"step {ev['steps']} truncated")
            ev["episodes"] += int((te_ref | tr_ref).sum())
            ev["success"] += int((r_ref > 0).sum())
            ev["truncated"] += int(tr_ref.sum())
            ev["carried"] += int((want[:, 0] != 1).sum())
            ev["steps"] += 1
        for k in ("image", "direction", "mission"):
            np.testing.assert_array_equal(o_ten[k], o_ref[k])
        return ev
    finally:
        ten.close()
        ref.close()


# Levels whose own step limit makes 200 random episodes long get a shorter limit for the
# random-action runs (same dynamics; the solver runs use the level's own limit).
_SHORT = (("max_steps", 64),)
SAMPLE = ("BabyAI-PickupLoc-v0", "BabyAI-PutNextLocal-v0", "BabyAI-OpenDoor-v0", "BabyAI-KeyInBox-v0",
          "MiniGrid-DoorKey-5x5-v0", "MiniGrid-LavaGapS5-v0", "MiniGrid-MultiRoom-N2-S4-v0",
          "MiniGrid-KeyCorridorS3R2-v0", "MiniGrid-Empty-6x6-v0")
_CARRY = ("Pickup", "PutNext", "KeyInBox", "Unlock", "DoorKey", "KeyCorridor")


def _check_level(level: str, random_episodes: int, solver_episodes: int, num_envs: int = 8) -> None:
    ev = compare(Task(level, env_kwargs=_SHORT), num_envs, seed=1, action_seed=2, mode="uniform",
                 episodes=random_episodes)
    assert ev["episodes"] >= random_episodes, ev
    sv = compare(Task(level), num_envs, seed=3, action_seed=4, mode="solver", episodes=solver_episodes,
                 max_steps=200 * solver_episodes)
    assert sv["episodes"] >= solver_episodes and sv["success"] >= sv["episodes"] // 2, (level, sv)
    if any(k in level for k in _CARRY):
        assert ev["carried"] + sv["carried"] > 0, (level, ev, sv)


@pytest.mark.parametrize("level", SAMPLE)
def test_level_equal_to_minigrid_sample(level):
    _check_level(level, random_episodes=24, solver_episodes=12, num_envs=4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*is out of date:DeprecationWarning")  # MultiRoom-N4-S5-v0
@pytest.mark.parametrize("level", SUPPORTED_LEVELS)
def test_level_equal_to_minigrid_exhaustive(level):
    """≥ 200 random-action and ≥ 50 solver episodes per level."""
    _check_level(level, random_episodes=200, solver_episodes=50)


def test_mixed_batch_of_levels_and_sizes():
    """One vector env of several levels and grid sizes equals the per-level minigrid envs."""
    tasks = [Task("MiniGrid-DoorKey-8x8-v0"), Task("BabyAI-PickupLoc-v0"), Task("BabyAI-PutNextLocalS5N3-v0"),
             Task("BabyAI-GoToLocalS6N2-v0"), Task("MiniGrid-Empty-5x5-v0"), Task("MiniGrid-LavaGapS6-v0"),
             Task("BabyAI-KeyInBox-v0"), Task("MiniGrid-MultiRoom-N2-S4-v0")]
    for mode, n in (("uniform", 12), ("solver", 24)):
        ev = compare(tasks, len(tasks), seed=5, action_seed=6, mode=mode, episodes=n, max_steps=3000)
        assert ev["episodes"] >= n and ev["success"] > 0, (mode, ev)


def test_unsupported_kwargs_are_one_line_errors():
    with pytest.raises(ValueError, match="start_carrying") as err:
        TensorGoToVecEnv(Task("BabyAI-PutNextS5N2-v0", env_kwargs=(("start_carrying", True),)), 2, seed=0,
                         vocab=Vocab())
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="agent_view_size=7"):
        TensorGoToVecEnv(Task("MiniGrid-Empty-8x8-v0", env_kwargs=(("agent_view_size", 5),)), 2, seed=0,
                         vocab=Vocab())
    with pytest.raises(ValueError, match="not supported by the tensor env; supported: .*MiniGrid-DoorKey-5x5-v0"):
        TensorGoToVecEnv(Task("BabyAI-PutNextS5N2Carrying-v0"), 2, seed=0, vocab=Vocab())
