"""Meta-RIM fast-weight modes (``carry`` vs ``reset``): training success after a budget.

    python examples/fast_weight_modes.py [--frames 50000] [--seeds 0 1] [--out results/fast_weight_modes.json]

Prints one line per run and writes the curves as JSON; ``docs/meta_learners.md`` reports
the numbers behind the default.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=50_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--level", default="BabyAI-GoToLocalS6N2-v0")
    p.add_argument("--out", default="results/fast_weight_modes.json")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for mode in ("reset", "carry"):
        for seed in args.seeds:
            cfg = TrainConfig(algo="metarim", memory="rim", env=args.level, num_steps=64, chunk_length=32,
                              frames=args.frames, seed=seed, fast_weights=mode)
            torch.manual_seed(seed)
            learner, t0, curve = make_learner(cfg), time.time(), []
            while learner.frames < cfg.frames:
                m = learner.step()
                curve.append((m["frames"], m["rollout/success_rate"], m["losses/outer"]))
            learner.close()
            final = float(np.mean([c[1] for c in curve[-5:]]))
            results.append({"mode": mode, "seed": seed, "final_success": final,
                            "seconds": time.time() - t0, "curve": curve})
            print(mode, seed, round(final, 3), f"{time.time() - t0:.0f}s", flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
