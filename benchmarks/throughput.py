"""Env-only rate vs full training rate (collection + PPO updates), LSTM and RIM.

Prints one JSON object. Each measurement runs in its own subprocess so that its peak
resident memory (``ru_maxrss``) is its own.

    python benchmarks/throughput.py [--env BabyAI-GoToLocal-v0] [--num-envs 16]
        [--frames 20480] [--threads 1]

Targets (issue 4): training >= 0.5x env-only for LSTM, >= 0.4x for RIM; peak <= 2 GB.
``ratio_*`` use wall-clock time; ``ratio_*_cpu`` use the process's CPU time, which is
what to read on a machine shared with other jobs (with one torch thread, CPU time is the
work done; wall time also counts waiting for a core).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _env_only(env: str, num_envs: int, frames: int) -> dict:
    import numpy as np

    from metarim.tasks import Task, Vocab, make_vec_env

    envs = make_vec_env(Task(env), num_envs, seed=0, vocab=Vocab())
    envs.reset()
    rng = np.random.default_rng(0)
    n = envs.single_action_space.n
    steps = frames // num_envs
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        envs.step(rng.integers(0, n, size=num_envs))
    return {"fps": steps * num_envs / (time.perf_counter() - t0),
            "fps_cpu": steps * num_envs / (time.process_time() - c0)}


def _train(env: str, num_envs: int, frames: int, memory: str, threads: int, batch: int) -> dict:
    import torch

    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig

    torch.set_num_threads(threads)
    kw = {} if batch is None else {"batch_size": batch}
    learner = make_learner(TrainConfig(env=env, num_envs=num_envs, memory=memory, frames=frames, **kw))
    learner.step()  # warm-up (allocations, first env resets)
    t0, c0, f0 = time.perf_counter(), time.process_time(), learner.frames
    collect = update = 0.0
    while learner.frames - f0 < frames:
        m = learner.step()
        collect += m["time/collect_s"]
        update += m["time/update_s"]
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    return {"fps": (learner.frames - f0) / dt, "fps_cpu": (learner.frames - f0) / dc,
            "collect_s": collect, "update_s": update}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--env", default="BabyAI-GoToLocal-v0")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--frames", type=int, default=20480)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=None, help="PPO minibatch (default: config's)")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mode is not None:
        res = _env_only(a.env, a.num_envs, a.frames) if a.mode == "env" else _train(
            a.env, a.num_envs, a.frames, a.mode, a.threads, a.batch_size)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    out = {"env": a.env, "num_envs": a.num_envs, "frames": a.frames, "threads": a.threads,
           "batch_size": a.batch_size}
    for mode in ("env", "lstm", "rim"):
        cmd = [sys.executable, __file__, "--mode", mode, "--env", a.env, "--num-envs", str(a.num_envs),
               "--frames", str(a.frames), "--threads", str(a.threads)]
        if a.batch_size is not None:
            cmd += ["--batch-size", str(a.batch_size)]
        out[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    for mode in ("lstm", "rim"):
        out[f"ratio_{mode}"] = out[mode]["fps"] / out["env"]["fps"]
        out[f"ratio_{mode}_cpu"] = out[mode]["fps_cpu"] / out["env"]["fps_cpu"]
    out["peak_rss_mb"] = max(out[m]["peak_rss_mb"] for m in ("env", "lstm", "rim"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
