"""Minigrid success of a trained run, split by whether the mission matches a pattern.

Plays ``--episodes`` episodes of the run's level on minigrid, one env per episode, seeds
``--seed``, ``--seed + 1``, ... (the same episodes for every run), sampling actions from
the policy of the run's newest checkpoint, and reports success with a 95 % Wilson
interval for the missions that match ``--pattern`` (a Python regular expression searched
in the mission text) and for the others. The default pattern is PickupLoc's location
clause ("the red key on your left": relative to the agent's *initial* pose), which a
policy has to remember across the episode.

    python benchmarks/mission_split.py --run runs/pickuploc --episodes 400

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

LOCATION = r"on your (left|right)|in front of you|behind you"


def split_success(run: pathlib.Path, episodes: int, pattern: str, seed: int) -> dict[str, dict[str, object]]:
    """``{"match": ..., "other": ...}``, each with episodes, success and its interval."""
    import torch

    from metarim.envs.minigrid import make_env
    from metarim.evaluation.evaluate import load_run
    from metarim.evaluation.stats import wilson_interval
    from metarim.rl.rollout import play
    from metarim.tasks.task import Task

    config, policy, vocab, _ = load_run(run)
    regex = re.compile(pattern)
    torch.manual_seed(seed)
    wins: dict[str, list[int]] = {"match": [], "other": []}
    for i in range(episodes):
        env = make_env(Task(config.env), vocab, seed=seed + i)
        try:
            last = list(play(policy, env))[-1]
            mission = env.unwrapped.mission
        finally:
            env.close()
        key = "match" if regex.search(mission) else "other"
        wins[key].append(int(bool(last.terminated[0]) and last.reward[0] > 0))
    return {k: {"episodes": len(v), "success": sum(v) / len(v) if v else None,
                "success_ci95": list(wilson_interval(sum(v), len(v))) if v else None}
            for k, v in wins.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=pathlib.Path, required=True, help="a trained run folder")
    p.add_argument("--episodes", type=int, default=400)
    p.add_argument("--pattern", default=LOCATION, help=f"regular expression (default: {LOCATION!r})")
    p.add_argument("--seed", type=int, default=2_000_000)
    args = p.parse_args()
    if args.episodes < 1:
        p.error(f"--episodes {args.episodes} must be >= 1")
    try:
        re.compile(args.pattern)
    except re.error as e:
        p.error(f"--pattern {args.pattern!r} is not a regular expression: {e}")
    if not (args.run / "config.json").is_file():
        p.error(f"--run {args.run}: no config.json there; pass a run folder")
    import torch

    torch.set_num_threads(1)
    out = split_success(args.run, args.episodes, args.pattern, args.seed)
    print(json.dumps({"run": str(args.run), "pattern": args.pattern, "episodes": args.episodes,
                      "seed": args.seed, **out}))


if __name__ == "__main__":
    main()
