"""Sweep benchmark: wall time of a 4-run sweep on the local backend against sequential runs.

The same 4 runs (PPO with LSTM and RIM memory × 2 seeds on ``MiniGrid-DoorKey-5x5-v0``)
are trained

* ``sequential``: one ``metarim train --config`` process after the other (by hand);
* ``by_hand_p2``: two ``metarim train`` processes at a time, started by hand: the best a
  2-way split can do on the machine as loaded now (the control for ``sweep_p2``);
* ``sweep_p1``: ``metarim sweep --max-parallel 1`` (the sweep's own overhead);
* ``sweep_p2``: ``metarim sweep --max-parallel 2`` (both cores);
* ``ray_p2``: ``metarim sweep --backend ray --max-parallel 2`` (when Ray is installed;
  includes starting and stopping a local Ray).

Each run uses one torch thread. Prints one JSON line: seconds per mode, the speed-up of
each against ``sequential``, and the load average before and after (the machine is
shared, so other work lowers the speed-up). On 2 cores the local speed-up is ≈ 2× at best.

    python benchmarks/sweep.py [--frames 16384] [--modes sequential sweep_p1 sweep_p2 ray_p2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = ("sequential", "by_hand_p2", "sweep_p1", "sweep_p2", "ray_p2")


def spec(frames: int) -> dict:
    """The 4-run sweep: 2 learners × 2 seeds."""
    return {"base": {"env": "MiniGrid-DoorKey-5x5-v0", "frames": frames, "num_envs": 16, "num_steps": 64,
                     "batch_size": 256, "threads": 1},
            "learners": {"lstm": {"algo": "ppo", "memory": "lstm"}, "rim": {"algo": "ppo", "memory": "rim"}},
            "seeds": [0, 1]}


def _metarim(*args: str, wait: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metarim.cli", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if wait and proc.wait():
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16_384, help="frames per run")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    a = p.parse_args()
    from metarim.sweep.spec import expand_sweep

    work = pathlib.Path(tempfile.mkdtemp(prefix="metarim-bench-sweep-"))
    sweep_file = work / "sweep.json"
    sweep_file.write_text(json.dumps(spec(a.frames)))
    runs = expand_sweep(spec(a.frames))
    seconds: dict[str, float] = {}
    load_before = os.getloadavg()[0]
    try:
        for mode in a.modes:
            if mode == "ray_p2" and importlib.util.find_spec("ray") is None:
                continue
            out = work / mode
            t0 = time.perf_counter()
            if mode in ("sequential", "by_hand_p2"):
                step = 2 if mode == "by_hand_p2" else 1
                for i in range(0, len(runs), step):
                    procs = []
                    for run in runs[i:i + step]:
                        cfg = work / f"{run.name}.json"
                        cfg.write_text(json.dumps(run.config))
                        procs.append(_metarim("train", "--config", str(cfg), "--out", str(out / run.name),
                                              "--quiet", wait=False))
                    if any(proc.wait() for proc in procs):
                        raise SystemExit(f"{mode}: a metarim train failed")
            else:
                backend = ["--backend", "ray"] if mode == "ray_p2" else []
                _metarim("sweep", "--config", str(sweep_file), "--out", str(out), "--max-parallel", mode[-1], *backend)
            seconds[mode] = time.perf_counter() - t0
            print(f"{mode}: {seconds[mode]:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = seconds.get("sequential")
    print(json.dumps({"benchmark": "sweep", "runs": len(runs), "frames_per_run": a.frames, "cpus": os.cpu_count(),
                      "seconds": {k: round(v, 1) for k, v in seconds.items()},
                      "speedup_vs_sequential": {k: round(base / v, 2) for k, v in seconds.items()} if base else {},
                      "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
