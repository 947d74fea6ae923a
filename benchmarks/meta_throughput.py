"""Frames per second of the meta-learners' training step against the env-only rate.

Rows: the vector env stepped with random actions (env only), then one row per learner
(``Learner.step``, collection and update together, one thread), with the update's share
of the time. Meta-RIM is measured with one meta-step per update (second and first order:
the cost of the masked second-order step itself), with four (4 epochs over all env
columns) and with its training default (4 epochs × 4 minibatches, PPO's number of
gradient steps per frame, 4-step truncated backprop windows inside each chunk), and
variants of that default: windows of 16 and 8 steps and whole chunks (``meta_window``
0, the default until issue 19), first order, and larger minibatches (fewer chains per
update). The target is Meta-RIM second order at ≥ 0.3×
the env-only rate. CPU-time rates (``time.process_time``, one torch thread, plus the env
worker's CPU time with ``--env-worker``) are the ones to read on a machine shared with
other jobs.

The env-only rate is measured again before every learner row and after the last one, and
each row is divided by the mean of the two env-only measurements beside it (its
"× env-only" columns; the table's first row is their median); the 1-minute load average
at each row's start is printed with it. ``--repeats R`` runs the whole sequence R times
and reports each row's median.

Usage::

    python benchmarks/meta_throughput.py                    # 16 envs, 6 modules, 32-step chunks
    python benchmarks/meta_throughput.py --updates 3 --json out.json
    python benchmarks/meta_throughput.py --rows default window "ppo (rim)" --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
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
    p.add_argument("--repeats", type=int, default=1, help="run the row sequence this many times (medians)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = {"env": args.level, "num_envs": args.num_envs, "num_units": args.num_units, "k": args.k,
            "hidden_size": args.hidden_size, "threads": 1, "batch_size": 256}
    T = 2 * args.chunk_length
    single = {"num_steps": T, "chunk_length": args.chunk_length, "epochs": 1, "batch_size": T * args.num_envs}
    default = {"algo": "metarim", "memory": "rim", "num_steps": T, "chunk_length": args.chunk_length}
    configs = {
        # one meta-step over all envs per update: the cost of the masked second-order step
        "metarim (2nd order, 1 step)": {**single, "algo": "metarim", "memory": "rim"},
        "metarim (1st order, 1 step)": {**single, "algo": "metarim", "memory": "rim", "first_order": True},
        # the training default: 4 epochs x (batch_size / num_steps)-column minibatches, each
        # chunk's chain in 4-step truncated windows (meta_window=4, the default since issue 19)
        "metarim (2nd order, default)": default,
        # the same with longer windows, and whole chunks (meta_window=0, the default before)
        **{f"metarim (2nd order, default, window {w})": {**default, "meta_window": w}
           for w in (16, 8) if w < args.chunk_length and args.chunk_length % w == 0},
        "metarim (2nd order, default, whole chunks)": {**default, "meta_window": 0},
        "metarim (1st order, default)": {**default, "first_order": True},
        "metarim (1st order, default, whole chunks)": {**default, "first_order": True, "meta_window": 0},
        # twice the columns per minibatch: 8 chains per update instead of 16 (the comparison's
        # Meta-RIM since issue 19: examples/sweeps/gotolocal.json; 0.31x with --compile)
        "metarim (2nd order, 8 columns)": {**default, "batch_size": 8 * T},
        "metarim (1st order, 8 columns)": {**default, "batch_size": 8 * T, "first_order": True},
        # issue 19's variants: top-k module selection, the reversed roles (attentions fast)
        "metarim (2nd order, default, topk)": {**default, "selection": "topk"},
        "metarim (2nd order, default, reversed roles)": {**default, "fast_params": "attention"},
        # the two-timescale learner, first order (PPO's loop, two optimisers)
        "fastslow (rim)": {"algo": "fastslow", "memory": "rim", "num_steps": T},
        "fastslow (rim, reversed roles)": {"algo": "fastslow", "memory": "rim", "num_steps": T,
                                           "fast_params": "attention"},
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
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    envs: list[dict[str, float]] = []
    for _ in range(args.repeats):  # env only, row, env only, row, ..., env only
        envs.append({**env_only(args.level, args.num_envs, args.env_frames), "load": os.getloadavg()[0]})
        for name, over in configs.items():
            if args.env_worker and over["algo"] in ("metarim", "ppo", "fastslow"):
                over = {**over, "env_worker": True}
            if args.compile and over["algo"] in ("metarim", "ppo", "fastslow"):
                over = {**over, "compile": True}
            load = os.getloadavg()[0]
            r = {**learner_fps({**base, **over}, args.updates), "load": load}
            envs.append({**env_only(args.level, args.num_envs, args.env_frames), "load": os.getloadavg()[0]})
            before, after = envs[-2], envs[-1]
            for key in ("fps", "fps_cpu"):
                r[f"env_{key}"] = (before[key] + after[key]) / 2
                r[f"ratio{key[3:]}"] = r[key] / r[f"env_{key}"]
            runs[name].append(r)
            print(f"{name:>42}: {r['fps']:7.0f} frames/s, {r['ratio']:.3f}x env-only beside it "
                  f"({r['env_fps']:.0f}), load {load:.2f}", file=sys.stderr, flush=True)
    med = lambda xs: float(np.median(xs))  # noqa: E731
    rows: dict[str, dict[str, Any]] = {"env only": {k: med([e[k] for e in envs]) for k in envs[0]}}
    rows["env only"]["fps_all"] = [e["fps"] for e in envs]
    for name, rs in runs.items():
        rows[name] = {k: med([r[k] for r in rs]) for k in rs[0]}
        rows[name]["ratio_all"] = [r["ratio"] for r in rs]
    print(f"\n{args.level}, {args.num_envs} envs, RIM {args.num_units} modules (k={args.k}, "
          f"hidden {args.hidden_size}), chunks of {args.chunk_length} steps, 1 thread, "
          f"{args.repeats} repeat(s); × env-only: against the env-only runs beside each row\n")
    print("| row | frames/s (wall) | × env-only (wall) | frames/s (CPU) | × env-only (CPU) | update share | load |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        share = f"{r['update_share']:.0%}" if "update_share" in r else "–"
        ratio, ratio_cpu = r.get("ratio", 1.0), r.get("ratio_cpu", 1.0)
        print(f"| {name} | {r['fps']:.0f} | {ratio:.2f} | {r['fps_cpu']:.0f} | {ratio_cpu:.2f} | {share} | "
              f"{r['load']:.2f} |")
    result = {"benchmark": "meta_throughput", "args": vars(args), "rows": rows}
    print(json.dumps(result))  # the line benchmarks/run_all.py collects
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
