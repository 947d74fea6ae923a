"""How well can an agent do in episode 1 of a hidden-task trial without knowing the target?

For each GoTo level, minigrid plays ``--episodes`` episodes (seeds 1000, 1001, ...)
with four scripted agents, none of them trained:

* ``random``: uniform over the level's 7 actions;
* ``random3``: uniform over left, right and forward;
* ``blind``: sees the whole grid but not the mission; walks (shortest path over
  position and direction) to face the nearest object it has not faced yet, until one
  is the target: the best an agent that has not identified the target can do, short
  of guessing;
* ``sighted``: the same walk to the nearest object that matches the mission: what
  knowing the target is worth.

A GoTo episode succeeds as soon as the agent faces a matching object (``GoToInstr``),
and facing a wrong one gives nothing and goes on. So ``blind`` success tells whether
episode-1 success can stay below 1.0 for a good agent (not if blind visiting always
finishes in time), and ``sighted`` minus ``blind`` return is what identification can
add in the later episodes of a trial (docs/adaptation_benchmarks.md uses this to pick
the trials level).

    python benchmarks/hidden_levels.py [--episodes 300] [--levels LEVEL ...]

Prints one JSON object per level: ``max_steps`` and, per agent, ``success`` and mean
``return`` (the level's own ``1 - 0.9 t / T``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections import deque

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI levels)
import numpy as np
from minigrid.core.constants import DIR_TO_VEC

LEFT, RIGHT, FORWARD = 0, 1, 2
AGENTS = ("random", "random3", "blind", "sighted")


def path_to_face(env: gym.Env, cells: list[tuple[int, int]]) -> list[int] | None:
    """Shortest action list (left, right, forward) after which the agent faces one of
    ``cells``; ``None`` if none can be faced."""
    u = env.unwrapped
    start = (int(u.agent_pos[0]), int(u.agent_pos[1]), int(u.agent_dir))
    goals, prev, todo = set(cells), {start: None}, deque([start])
    while todo:
        s = todo.popleft()
        x, y, d = s
        dx, dy = DIR_TO_VEC[d]
        if (x + dx, y + dy) in goals:
            actions = []
            while prev[s] is not None:
                s, a = prev[s]
                actions.append(a)
            return actions[::-1]
        nxt = [((x, y, (d - 1) % 4), LEFT), ((x, y, (d + 1) % 4), RIGHT)]
        cell = u.grid.get(x + dx, y + dy)
        if cell is None or cell.can_overlap():
            nxt.append(((x + dx, y + dy, d), FORWARD))
        for n, a in nxt:
            if n not in prev:
                prev[n] = (s, a)
                todo.append(n)
    return None


def play(level: str, seed: int, agent: str, rng: np.random.Generator) -> float:
    """One episode of ``agent``; returns its return (> 0 exactly when it succeeded)."""
    env = gym.make(level)
    env.reset(seed=seed)
    u = env.unwrapped
    targets = [tuple(int(v) for v in p) for p in u.instrs.desc.obj_poss]
    objects = [(i, j) for i in range(u.grid.width) for j in range(u.grid.height)
               if (c := u.grid.get(i, j)) is not None and c.type in ("ball", "box", "key")]
    faced: set[tuple[int, int]] = set()
    while True:
        if agent.startswith("random"):
            _, r, term, trunc, _ = env.step(int(rng.integers(3 if agent == "random3" else env.action_space.n)))
            if term or trunc:
                return float(r)
            continue
        goals = targets if agent == "sighted" else [o for o in objects if o not in faced] or objects
        actions = path_to_face(env, goals)
        if actions is None:
            return 0.0
        for a in actions or [LEFT]:
            _, r, term, trunc, _ = env.step(a)
            if term or trunc:
                return float(r)
        faced.add(tuple(int(v) for v in u.front_pos))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--levels", nargs="+",
                   default=["BabyAI-GoToLocalS6N2-v0", "BabyAI-GoToLocalS8N7-v0", "BabyAI-GoToLocal-v0"])
    args = p.parse_args()
    for level in args.levels:
        rng = np.random.default_rng(0)
        env = gym.make(level)
        env.reset(seed=0)
        out = {"benchmark": "hidden_levels", "level": level, "episodes": args.episodes,
               "max_steps": int(env.unwrapped.max_steps)}
        for agent in AGENTS:
            with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints its layout rejections
                returns = np.array([play(level, 1000 + s, agent, rng) for s in range(args.episodes)])
            out[agent] = {"success": round(float((returns > 0).mean()), 3), "return": round(float(returns.mean()), 3)}
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
