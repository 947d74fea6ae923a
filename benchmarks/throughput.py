"""Env-only rate vs full training rate (collection + PPO updates), LSTM and RIM.

Prints one JSON object. Each measurement runs in its own subprocess so that its peak
resident memory (``ru_maxrss``) is its own.

    python benchmarks/throughput.py [--env BabyAI-GoToLocal-v0] [--num-envs 16]
        [--frames 20480] [--threads 1] [--interleave] [--env-worker] [--compile]
    python benchmarks/throughput.py --meta [meta_throughput.py's arguments]

``--meta`` measures the meta-learners instead: Meta-RIM (second and first order),
MAML and Reptile against the env-only rate of their level (issue 5's target: Meta-RIM
second order >= 0.3x); it runs ``benchmarks/meta_throughput.py`` with the remaining
arguments.

Targets (issue 4): training >= 0.5x env-only for LSTM, >= 0.4x for RIM; peak <= 2 GB.
``ratio_*`` use wall-clock time; ``ratio_*_cpu`` use the process's CPU time, which is
what to read on a machine shared with other jobs (with one torch thread, CPU time is the
work done; wall time also counts waiting for a core). Per training mode, ``collect_s``
splits into ``collect_env_s`` (inside ``envs.step``) and ``collect_policy_s`` (policy
forward, sampling and bookkeeping), all wall seconds; ``load_before``/``load_after`` are
the 1-minute load averages (read the ratios with them).

``--env-worker`` trains with ``env_worker=True`` (the envs in a background process,
stepped half at a time while the policy acts on the other half) and adds ``env_worker``,
the env-only rate of that worker env; the ``ratio_*`` stay against the in-process env
(the faster of the two env-only rates) and ``ratio_*_vs_worker_env`` are against the
worker env's. CPU time and peak memory then include the worker process's. With
``--interleave`` too, the env-only blocks step an in-process env.

``--legacy`` trains with the defaults of before issue 18 (``metarim.config.DEFAULT_CHANGES``
old values), to compare the two in one session (alternate the two commands).

``--interleave`` measures each memory in one process that alternates an env-only block
of ``num_steps`` steps (random actions, its own vector env of the same task) with one
training step of the same number of frames: the ratios mean the same, but a background
load that changes over the minute hits numerator and denominator alike (its peak
memory includes the second vector env).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time


def _worker_cpu(envs) -> float:
    """CPU seconds of ``envs``' worker process so far (0 for an in-process env)."""
    return envs.cpu_seconds() if hasattr(envs, "cpu_seconds") else 0.0


def _worker_peak_mb(envs) -> float:
    return envs.peak_rss_mb() if hasattr(envs, "peak_rss_mb") else 0.0


def _env_only(env: str, num_envs: int, frames: int, worker: bool = False) -> dict:
    import numpy as np

    from metarim.envs import make_vec_env
    from metarim.tasks import Task, Vocab

    envs = make_vec_env(Task(env), num_envs, seed=0, vocab=Vocab(), worker=worker)
    envs.reset()
    rng = np.random.default_rng(0)
    n = envs.single_action_space.n
    steps = frames // num_envs
    t0, c0, w0 = time.perf_counter(), time.process_time(), _worker_cpu(envs)
    for _ in range(steps):
        envs.step(rng.integers(0, n, size=num_envs))
    cpu = time.process_time() - c0 + _worker_cpu(envs) - w0
    return {"fps": steps * num_envs / (time.perf_counter() - t0),
            "fps_cpu": steps * num_envs / cpu, "worker_peak_rss_mb": _worker_peak_mb(envs)}


def _old_defaults(legacy: bool) -> dict:
    """``TrainConfig`` overrides that restore the defaults changed by issue 18 (``legacy``)."""
    from metarim.config import DEFAULT_CHANGES

    return {name: old for name, (old, _, _) in DEFAULT_CHANGES.items()} if legacy else {}


def _train(env: str, num_envs: int, frames: int, memory: str, threads: int, batch: int,
           worker: bool = False, compile: bool = False, legacy: bool = False) -> dict:
    import torch

    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig

    torch.set_num_threads(threads)
    kw = {**({} if batch is None else {"batch_size": batch}), **_old_defaults(legacy)}
    learner = make_learner(TrainConfig(env=env, num_envs=num_envs, memory=memory, frames=frames,
                                       env_worker=worker, compile=compile, **kw))
    learner.step()  # warm-up (allocations, first env resets; with --compile, compilation)
    env_s = [0.0]

    def timed(fn):  # env time inside collection (with a worker: waiting for it), to split collect_s
        def wrapper(*args):
            t = time.perf_counter()
            out = fn(*args)
            env_s[0] += time.perf_counter() - t
            return out
        return wrapper

    learner.envs.step = timed(learner.envs.step)
    if worker:
        learner.envs.step_wait = timed(learner.envs.step_wait)
    envs = learner.envs
    t0, c0, f0, w0 = time.perf_counter(), time.process_time(), learner.frames, _worker_cpu(envs)
    collect = update = 0.0
    while learner.frames - f0 < frames:
        m = learner.step()
        collect += m["time/collect_s"]
        update += m["time/update_s"]
    dt, dc = time.perf_counter() - t0, time.process_time() - c0 + _worker_cpu(envs) - w0
    return {"fps": (learner.frames - f0) / dt, "fps_cpu": (learner.frames - f0) / dc,
            "collect_s": collect, "collect_env_s": env_s[0], "collect_policy_s": collect - env_s[0],
            "update_s": update, "worker_peak_rss_mb": _worker_peak_mb(envs)}


def _interleaved(env: str, num_envs: int, frames: int, memory: str, threads: int, batch: int,
                 worker: bool = False, compile: bool = False, legacy: bool = False) -> dict:
    """Alternates one env-only block and one training step of the same number of frames,
    in one process, so that a changing background load hits both rates alike."""
    import numpy as np
    import torch

    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig
    from metarim.envs import make_vec_env
    from metarim.tasks import Task, Vocab

    torch.set_num_threads(threads)
    kw = {**({} if batch is None else {"batch_size": batch}), **_old_defaults(legacy)}
    learner = make_learner(TrainConfig(env=env, num_envs=num_envs, memory=memory, frames=frames,
                                       env_worker=worker, compile=compile, **kw))
    learner.step()  # warm-up, as in _train
    envs = make_vec_env(Task(env), num_envs, seed=0, vocab=Vocab())  # env-only: in-process
    envs.reset()
    rng = np.random.default_rng(0)
    n = envs.single_action_space.n
    steps = learner.config.num_steps
    env_t = env_c = train_t = train_c = 0.0
    env_f = train_f = 0
    while train_f < frames:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            envs.step(rng.integers(0, n, size=num_envs))
        t1, c1 = time.perf_counter(), time.process_time()
        f0, w1 = learner.frames, _worker_cpu(learner.envs)
        learner.step()
        env_t, env_c = env_t + t1 - t0, env_c + c1 - c0
        train_t = train_t + time.perf_counter() - t1
        train_c = train_c + time.process_time() - c1 + _worker_cpu(learner.envs) - w1
        env_f, train_f = env_f + steps * num_envs, train_f + learner.frames - f0
    envs.close()
    peak = _worker_peak_mb(learner.envs)
    learner.close()
    return {"worker_peak_rss_mb": peak, "env_fps": env_f / env_t, "env_fps_cpu": env_f / env_c,
            "fps": train_f / train_t, "fps_cpu": train_f / train_c,
            "ratio": (train_f / train_t) / (env_f / env_t),
            "ratio_cpu": (train_f / train_c) / (env_f / env_c)}


def main() -> None:
    if "--meta" in sys.argv[1:]:
        import runpy

        sys.argv = [str(pathlib.Path(__file__).with_name("meta_throughput.py"))] + [
            a for a in sys.argv[1:] if a != "--meta"]
        runpy.run_path(sys.argv[0], run_name="__main__")
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--env", default="BabyAI-GoToLocal-v0")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--frames", type=int, default=20480)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=None, help="PPO minibatch (default: config's)")
    p.add_argument("--interleave", action="store_true",
                   help="per memory, alternate env-only blocks and training steps in one process "
                        "(for a machine with a changing background load)")
    p.add_argument("--env-worker", action="store_true",
                   help="train with env_worker=True and also measure the worker env's env-only rate")
    p.add_argument("--meta", action="store_true",
                   help="measure the meta-learners instead (runs benchmarks/meta_throughput.py with the "
                        "other arguments)")
    p.add_argument("--compile", action="store_true",
                   help="train with compile=True (torch.compile of the memory core; the warm-up "
                        "step, not timed, compiles)")
    p.add_argument("--legacy", action="store_true",
                   help="train with the defaults of before issue 18 (config.DEFAULT_CHANGES' old values)")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mode is not None:
        if a.mode.startswith("interleave-"):
            res = _interleaved(a.env, a.num_envs, a.frames, a.mode.split("-", 1)[1], a.threads, a.batch_size,
                               a.env_worker, a.compile, a.legacy)
        elif a.mode in ("env", "env_worker"):
            res = _env_only(a.env, a.num_envs, a.frames, a.mode == "env_worker")
        else:
            res = _train(a.env, a.num_envs, a.frames, a.mode, a.threads, a.batch_size, a.env_worker,
                         a.compile, a.legacy)
        # the worker's peak adds to the main process's (both are resident at once)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + res.pop(
            "worker_peak_rss_mb", 0.0)
        print(json.dumps(res))
        return
    out = {"env": a.env, "num_envs": a.num_envs, "frames": a.frames, "threads": a.threads,
           "batch_size": a.batch_size, "train_with_env_worker": a.env_worker, "compile": a.compile, "legacy": a.legacy,
           "load_before": os.getloadavg()[0]}
    modes = (("interleave-lstm", "interleave-rim") if a.interleave
             else ("env", "env_worker", "lstm", "rim") if a.env_worker else ("env", "lstm", "rim"))
    # with --interleave --env-worker the env-only blocks use the in-process env
    for mode in modes:
        cmd = [sys.executable, __file__, "--mode", mode, "--env", a.env, "--num-envs", str(a.num_envs),
               "--frames", str(a.frames), "--threads", str(a.threads)]
        if a.batch_size is not None:
            cmd += ["--batch-size", str(a.batch_size)]
        if a.env_worker:
            cmd += ["--env-worker"]
        if a.compile:
            cmd += ["--compile"]
        if a.legacy:
            cmd += ["--legacy"]
        out[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    if a.interleave:
        for mode in ("lstm", "rim"):
            res = out.pop(f"interleave-{mode}")
            out[mode] = res
            out[f"ratio_{mode}"], out[f"ratio_{mode}_cpu"] = res.pop("ratio"), res.pop("ratio_cpu")
        out["peak_rss_mb"] = max(out[m]["peak_rss_mb"] for m in ("lstm", "rim"))
        out["load_after"] = os.getloadavg()[0]
        print(json.dumps(out, indent=2))
        return
    for mode in ("lstm", "rim"):
        out[f"ratio_{mode}"] = out[mode]["fps"] / out["env"]["fps"]
        out[f"ratio_{mode}_cpu"] = out[mode]["fps_cpu"] / out["env"]["fps_cpu"]
        if a.env_worker:
            out[f"ratio_{mode}_vs_worker_env"] = out[mode]["fps"] / out["env_worker"]["fps"]
    out["peak_rss_mb"] = max(out[m]["peak_rss_mb"] for m in modes)
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
