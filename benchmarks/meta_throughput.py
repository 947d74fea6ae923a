"""Frames per second of the meta-learners' training step against the env-only rate.

Rows: the vector env stepped with random actions (env only), then one row per learner
(``Learner.step``, collection and update together, one thread), with the update's share
of the time. Meta-RIM is measured with one meta-step per update (second and first order:
the cost of the masked second-order step itself), with four (4 epochs over all env
columns) and with its training default (4 epochs × 4 minibatches, PPO's number of
gradient steps per frame). The target is Meta-RIM
second order at ≥ 0.3× the env-only rate. CPU-time rates (``time.process_time``, one
torch thread, plus the env worker's CPU time with ``--env-worker``) are the ones to read
on a machine shared with other jobs.

Usage::

    python benchmarks/meta_throughput.py                    # 16 envs, 6 modules, 32-step chunks
    python benchmarks/meta_throughput.py --updates 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch


def env_only(level: str, num_envs: int, frames: int, seed: int = 0) -> dict[str, float]:
    """Frames per second (wall and CPU time) of the vector env alone with random actions."""
    from metarim.envs import make_vec_env
    from metarim.tasks.task import Task
    from metarim.tasks.vocab import Vocab

    envs = make_vec_env(Task(level), num_envs, seed=seed, vocab=Vocab())
    envs.reset()
    rng = np.random.default_rng(seed)
    steps = frames // num_envs
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        envs.step(rng.integers(0, envs.single_action_space.n, size=num_envs))
    out = {"fps": steps * num_envs / (time.perf_counter() - t0),
           "fps_cpu": steps * num_envs / (time.process_time() - c0)}
    envs.close()
    return out


def learner_fps(overrides: dict[str, Any], updates: int) -> dict[str, float]:
    """Median frames/s of ``updates`` learner steps after one warm-up step."""
    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig

    learner = make_learner(TrainConfig.from_dict(overrides))
    learner.step()  # warm-up (env resets, allocator)
    envs = getattr(learner, "envs", None)
    worker_cpu = envs.cpu_seconds if hasattr(envs, "cpu_seconds") else lambda: 0.0
    rates, cpu_rates, update_share = [], [], []
    for _ in range(updates):
        before = learner.frames
        t0, c0, w0 = time.perf_counter(), time.process_time(), worker_cpu()
        m = learner.step()
        dt = time.perf_counter() - t0
        rates.append((learner.frames - before) / dt)
        cpu_rates.append((learner.frames - before) / (time.process_time() - c0 + worker_cpu() - w0))
        if "time/update_s" in m:
            update_share.append(m["time/update_s"] / dt)
    learner.close()
    out = {"fps": float(np.median(rates)), "fps_cpu": float(np.median(cpu_rates)),
           "frames_per_step": float(learner.frames / (updates + 1))}
    if update_share:
        out["update_share"] = float(np.median(update_share))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--level", default="BabyAI-GoToLocalS6N2-v0")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--chunk-length", type=int, default=32)
    p.add_argument("--num-units", type=int, default=6)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--hidden-size", type=int, default=192)
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--env-frames", type=int, default=16384,
                   help="frames of the env-only measurement (4096 until commit ab96cc6: ~0.7 s, noisy)")
    p.add_argument("--env-worker", action="store_true",
                   help="Meta-RIM and PPO rows with env_worker=True (envs in a background process, "
                        "overlapped with the policy); env-only stays the in-process env")
    p.add_argument("--compile", action="store_true",
                   help="Meta-RIM and PPO rows with compile=True (torch.compile of the memory core: "
                        "PPO's collection and update, Meta-RIM's collection pass; the warm-up step compiles)")
    p.add_argument("--rows", nargs="+", metavar="TEXT",
                   help="only the learner rows whose name contains one of these (e.g. 'metarim')")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = {"env": args.level, "num_envs": args.num_envs, "num_units": args.num_units, "k": args.k,
            "hidden_size": args.hidden_size, "threads": 1, "batch_size": 256}
    T = 2 * args.chunk_length
    single = {"num_steps": T, "chunk_length": args.chunk_length, "epochs": 1, "batch_size": T * args.num_envs}
    rows: dict[str, dict[str, Any]] = {}
    rows["env only"] = env_only(args.level, args.num_envs, args.env_frames)
    configs = {
        # one meta-step over all envs per update: the cost of the masked second-order step
        "metarim (2nd order, 1 step)": {**single, "algo": "metarim", "memory": "rim"},
        "metarim (1st order, 1 step)": {**single, "algo": "metarim", "memory": "rim", "first_order": True},
        # the training default: 4 epochs x (batch_size / num_steps)-column minibatches
        "metarim (2nd order, default)": {"algo": "metarim", "memory": "rim", "num_steps": T,
                                         "chunk_length": args.chunk_length},
        # 4 epochs x all columns: 4 chains per update (examples/gotolocal_meta.py's
        # metarim-4step and metarim-4step-lr4x, which plateau at ~0.6; docs/results.md)
        "metarim (2nd order, 4 steps)": {**single, "algo": "metarim", "memory": "rim", "epochs": 4},
        "maml (rim, 2nd order)": {"algo": "maml", "memory": "rim", "num_steps": args.chunk_length, "meta_batch": 2},
        "reptile (rim, 3 steps)": {"algo": "reptile", "memory": "rim", "num_steps": args.chunk_length,
                                   "meta_batch": 2, "inner_steps": 3},
        "ppo (rim)": {"algo": "ppo", "memory": "rim", "num_steps": T},
        "ppo (lstm)": {"algo": "ppo", "memory": "lstm", "num_steps": T},
    }
    if args.rows:
        configs = {k: v for k, v in configs.items() if any(t in k for t in args.rows)}
    for name, over in configs.items():
        if args.env_worker and over["algo"] in ("metarim", "ppo"):
            over = {**over, "env_worker": True}
        if args.compile and over["algo"] in ("metarim", "ppo"):
            over = {**over, "compile": True}
        rows[name] = learner_fps({**base, **over}, args.updates)
        print(f"{name:>24}: {rows[name]['fps']:7.0f} frames/s", file=sys.stderr, flush=True)
    env, env_cpu = rows["env only"]["fps"], rows["env only"]["fps_cpu"]
    print(f"\n{args.level}, {args.num_envs} envs, RIM {args.num_units} modules (k={args.k}, "
          f"hidden {args.hidden_size}), chunks of {args.chunk_length} steps, 1 thread\n")
    print("| row | frames/s (wall) | × env-only (wall) | frames/s (CPU) | × env-only (CPU) | update share |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        share = f"{r['update_share']:.0%}" if "update_share" in r else "–"
        print(f"| {name} | {r['fps']:.0f} | {r['fps'] / env:.2f} | {r['fps_cpu']:.0f} | "
              f"{r['fps_cpu'] / env_cpu:.2f} | {share} |")
    result = {"benchmark": "meta_throughput", "args": vars(args), "rows": rows}
    print(json.dumps(result))  # the line benchmarks/run_all.py collects
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
