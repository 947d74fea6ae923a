"""Env-only frames per second: the tensor env at several B beside minigrid, per family.

Both sides step uniformly random actions (drawn before timing) through the same task
and vocabulary, with autoreset; only ``step`` calls are timed, so the figures include
each backend's episode resets (minigrid's ``reset``; the tensor env's layout making
and loading) but no policy. The reference is ``make_vec_env`` (gymnasium
``SyncVectorEnv``) with ``--minigrid-envs`` envs.

    python benchmarks/env_throughput.py                          # GoToLocal, B=16..1024
    python benchmarks/env_throughput.py --level BabyAI-GoToLocalS6N2-v0 --workers 1
    python benchmarks/env_throughput.py --seed-stop 1000 --cache-size 1000   # cached layouts
    python benchmarks/env_throughput.py --families all --batch-sizes 16 256 1024   # one level per family

Prints one JSON object per level (``--families``: one line each): ``minigrid.fps``, and
per B the tensor ``fps``, ``speedup`` and ``layout_s`` (seconds spent making layouts in
this process, part of the time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from metarim.envs import make_vec_env
from metarim.envs.tensor import TensorGoToVecEnv
from metarim.tasks import Task, Vocab


def run(envs, actions: list, seconds: float, frames_per_step: int) -> dict[str, float]:
    """Steps ``envs`` through ``actions`` (cycled) for about ``seconds``; frames/s."""
    envs.reset()
    for a in actions[: min(len(actions), 200)]:  # warm-up (and, with a cache, filling it)
        envs.step(a)
    n, i = 0, 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        envs.step(actions[i % len(actions)])
        i += 1
        n += frames_per_step
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"frames": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "fps": round(n / wall, 1)}


class _Timed:
    """Wraps a layout source to time it (in-process sources only)."""

    def __init__(self, source) -> None:
        self.source, self.seconds = source, 0.0

    def __getattr__(self, name):
        return getattr(self.source, name)

    def take(self, idx):
        t = time.perf_counter()
        out = self.source.take(idx)
        self.seconds += time.perf_counter() - t
        return out


FAMILIES = {
    "goto": "BabyAI-GoToLocal-v0",
    "pickup": "BabyAI-PickupLoc-v0",
    "putnext": "BabyAI-PutNextLocal-v0",
    "open": "BabyAI-OpenDoor-v0",
    "unlock": "BabyAI-UnlockLocal-v0",
    "empty": "MiniGrid-Empty-8x8-v0",
    "doorkey": "MiniGrid-DoorKey-8x8-v0",
    "multiroom": "MiniGrid-MultiRoom-N2-S4-v0",
    "lavagap": "MiniGrid-LavaGapS7-v0",
    "keycorridor": "MiniGrid-KeyCorridorS3R3-v0",
}
"""One representative level per family (``--families``)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--level", default="BabyAI-GoToLocal-v0")
    p.add_argument("--families", nargs="+", default=None,
                   help=f"run one level per family instead of --level: 'all' or names of {sorted(FAMILIES)}")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256, 1024])
    p.add_argument("--minigrid-envs", type=int, default=16)
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per case")
    p.add_argument("--workers", type=int, default=0, help="tensor env layout workers")
    p.add_argument("--seed-stop", type=int, default=None,
                   help="episode seeds in [0, N) (default: the whole range)")
    p.add_argument("--cache-size", type=int, default=0, help="tensor env layouts cached by seed")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.families is None:
        levels = [args.level]
    else:
        names = sorted(FAMILIES) if args.families == ["all"] else args.families
        unknown = [n for n in names if n not in FAMILIES]
        if unknown:
            p.error(f"unknown families {unknown}; choose from {sorted(FAMILIES)} or 'all'")
        levels = [FAMILIES[n] for n in names]
    for level in levels:
        bench(args, level)


def bench(args: argparse.Namespace, level: str) -> None:
    """Measures ``level`` and prints its JSON line."""
    rng = np.random.default_rng(args.seed)
    task = Task(level) if args.seed_stop is None else Task(level, seed_stop=args.seed_stop)
    vocab = Vocab()

    ref = make_vec_env(task, args.minigrid_envs, seed=args.seed, vocab=vocab)
    acts = [rng.integers(0, 7, args.minigrid_envs) for _ in range(256)]
    mg = run(ref, acts, args.seconds, args.minigrid_envs)
    ref.close()
    out = {"benchmark": "env_throughput", "level": level, "device": args.device,
           "threads": args.threads, "workers": args.workers,
           "seed_stop": args.seed_stop, "cache_size": args.cache_size, "cpus": os.cpu_count(),
           "loadavg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
           "torch": torch.__version__,
           "minigrid": {"num_envs": args.minigrid_envs, **mg}, "tensor": []}
    for b in args.batch_sizes:
        env = TensorGoToVecEnv(task, b, seed=args.seed, vocab=vocab, device=args.device,
                               workers=args.workers, cache_size=args.cache_size)
        if args.workers == 0:
            env.source = _Timed(env.source)
        acts = [torch.from_numpy(rng.integers(0, 7, b)).to(args.device) for _ in range(256)]
        res = run(env, acts, args.seconds, b)
        res.update(num_envs=b, speedup=round(res["fps"] / mg["fps"], 2))
        if args.workers == 0:
            res["layout_s"] = round(env.source.seconds, 3)
        out["tensor"].append(res)
        env.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
