"""How a trained GoTo agent fails: success by mission and layout, and what it faces at a timeout.

For each episode of a BabyAI GoTo level (one env, seeds ``--seed`` onwards, actions
sampled from the policy as in training), records

* whether the target was in the first 7×7 view, and whether a distractor of the
  target's type was in the room;
* for a failed episode (GoTo ends only on success or at the step limit), what the agent
  faced at the end: nothing or a wall, an object of the target's type, of its colour, or
  another object.

A policy that confuses objects fails facing the wrong one; a policy that cannot find or
reach the target fails facing nothing. Prints one JSON object of counts and rates.

    python examples/failure_modes.py --run results/metasteps400k/runs/metarim-1step-s0 --episodes 200
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder (metarim train --out)")
    p.add_argument("--env", default=None, help="level (default: the run's)")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=10_000, help="first episode seed")
    args = p.parse_args(argv)
    if args.episodes < 1:
        print(f"error: --episodes {args.episodes} must be >= 1", file=sys.stderr)
        return 2

    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

    from metarim.envs.minigrid import make_env
    from metarim.evaluation.evaluate import load_run
    from metarim.rl.rollout import play
    from metarim.tasks.task import Task

    try:
        config, policy, vocab, _ = load_run(args.run)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    env = make_env(Task(args.env or config.env), vocab, args.seed)
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])  # successes, episodes
    fails: collections.Counter[str] = collections.Counter()
    try:
        for ep in range(args.episodes):
            obs, _ = env.reset(seed=args.seed + ep)
            u = env.unwrapped
            desc = u.instrs.desc
            objs = [o for o in u.grid.grid if o is not None and o.type in ("ball", "box", "key")]
            img = np.asarray(obs["image"])
            visible = bool(((img[..., 0] == OBJECT_TO_IDX[desc.type])
                            & (img[..., 1] == COLOR_TO_IDX[desc.color])).any())
            same_type = any(o.type == desc.type and o.color != desc.color for o in objs)
            last = list(play(policy, env, obs=obs))[-1]  # one episode, actions sampled as in training
            ok = bool(last.terminated[0] and last.reward[0] > 0)
            for key in (f"target visible at start: {visible}", f"same-type distractor: {same_type}", "all"):
                counts[key][0] += ok
                counts[key][1] += 1
            if not ok:  # play leaves the env at the episode's last state
                front = u.grid.get(*u.front_pos)
                fails["nothing or wall" if front is None or front.type in ("wall", "door")
                      else "target's type" if front.type == desc.type
                      else "target's colour" if front.color == desc.color else "other object"] += 1
    finally:
        env.close()
    print(json.dumps({
        "run": args.run, "env": args.env or config.env, "episodes": args.episodes,
        "success": {k: {"rate": s / n, "episodes": n} for k, (s, n) in sorted(counts.items())},
        "failed_facing": dict(fails.most_common()),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
