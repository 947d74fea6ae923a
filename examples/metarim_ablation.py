"""Meta-RIM ablations: fast-weight mode, no inner step, first order; training success.

    python examples/metarim_ablation.py [--variants carry reset] [--frames 50000] [--seeds 0 1]
        [--out results/metarim_ablation.json]

Variants (all other settings are the defaults of ``TrainConfig`` for ``--algo metarim``,
with ``num_steps=64``, ``chunk_length=32``):

* ``carry`` — the default (fast weights carried forward after each update);
* ``reset`` — fast weights reset to the meta-learned initial values;
* ``no-inner`` — ``inner_lr=0``: the same data layout, losses and optimiser steps with
  no fast adaptation (what the inner step adds; the outer loss still sees chunks 1..C-1);
* ``first-order`` — first-order meta-gradient;
* ``outer-all`` — ``outer_chunks="all"`` (the default since commit 2d73834, 2026-11-25): the outer loss
  also includes chunk 0 under the unadapted weights, so no collected frame is left out
  of the slow weights' loss;
* ``outer-adapted`` — ``outer_chunks="adapted"``: the MAML split, outer loss only on the
  chunks after an inner step (the default until commit 2d73834; stalls at ~0.6);
* ``inner-lr-0.1`` — ``inner_lr=0.1`` (the default until commit d40afc6; the default is now
  10): the masked inner step moves the module weights by ~1e-5 of their norm and the
  action probabilities by ~1e-4, i.e. it does nothing (``benchmarks/inner_lr.py``);
* ``inner-lr-10`` — ``inner_lr=10``, the default, named explicitly (results recorded with
  the old default used this name);
* ``ppo-like`` — no inner step, outer loss on every chunk, 4-step chunks: PPO's
  backprop window inside Meta-RIM's pipeline (whole-column minibatches), to locate the
  gap between Meta-RIM and PPO+RIM.

Prints one line per run (final success = mean of the last 5 updates' 100-episode
training success) and writes the curves as JSON; ``docs/meta_learners.md`` and
``docs/results.md`` report the numbers.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch

VARIANTS = {
    "carry": {"fast_weights": "carry"},
    "reset": {"fast_weights": "reset"},
    "no-inner": {"inner_lr": 0.0},
    "first-order": {"first_order": True},
    "outer-all": {"outer_chunks": "all"},
    "outer-adapted": {"outer_chunks": "adapted"},
    "inner-lr-0.1": {"inner_lr": 0.1},
    "inner-lr-10": {"inner_lr": 10.0},
    "ppo-like": {"inner_lr": 0.0, "outer_chunks": "all", "chunk_length": 4},
}


def main(argv: list[str] | None = None) -> int:
    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["reset", "carry"], choices=list(VARIANTS))
    p.add_argument("--frames", type=int, default=50_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--level", default="BabyAI-GoToLocalS6N2-v0")
    p.add_argument("--out", default="results/metarim_ablation.json")
    p.add_argument("--append", action="store_true", help="keep the runs already in --out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    if args.append and pathlib.Path(args.out).is_file():
        results = json.loads(pathlib.Path(args.out).read_text())
    for name in args.variants:
        for seed in args.seeds:
            over = {"num_steps": 64, "chunk_length": 32, **VARIANTS[name]}
            cfg = TrainConfig(algo="metarim", memory="rim", env=args.level, frames=args.frames, seed=seed, **over)
            torch.manual_seed(seed)
            learner, t0, curve = make_learner(cfg), time.time(), []
            while learner.frames < cfg.frames:
                m = learner.step()
                curve.append((m["frames"], m["rollout/success_rate"], m["losses/outer"]))
            learner.close()
            final = float(np.mean([c[1] for c in curve[-5:]]))
            results.append({"variant": name, "seed": seed, "final_success": final,
                            "seconds": time.time() - t0, "curve": curve})
            print(name, seed, round(final, 3), f"{time.time() - t0:.0f}s", flush=True)
            with open(args.out, "w") as f:
                json.dump(results, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
