"""Learning benchmark: PPO with LSTM and RIM memory on small MiniGrid/BabyAI levels.

For every (level, memory) pair it runs ``metarim train`` (the exact command is stored),
then ``metarim eval`` on 200 fresh episodes, and writes

* ``docs/learning.json`` — per run: command, frames to reach the success threshold
  (rolling success over the last 100 training episodes, once 100 have finished), final training success and
  the evaluation with 95 % intervals, wall time;
* ``docs/learning_curves.png`` — success rate against frames, one panel per level.

    python benchmarks/learn.py [--frames 200000] [--levels ...] [--memories lstm rim]
        [--seeds 0 1]

Runs one training process at a time (the machine has two shared cores); one line per
seed in the plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
LEVELS = ["MiniGrid-DoorKey-5x5-v0", "BabyAI-GoToLocalS6N2-v0"]


def _curve(run: pathlib.Path) -> tuple[list[float], list[float], list[float], list[int]]:
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    frames = [float(r["frames"]) for r in rows]
    episodes, total = [], 0
    for r in rows:
        total += int(float(r["episodes"]))
        episodes.append(total)
    return (frames, [float(r["success_rate"]) for r in rows], [float(r["return_mean"]) for r in rows],
            episodes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", nargs="+", default=LEVELS)
    p.add_argument("--memories", nargs="+", default=["lstm", "rim"])
    p.add_argument("--frames", type=int, default=200_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threshold", type=float, default=0.9)
    p.add_argument("--eval-episodes", type=int, default=200)
    p.add_argument("--runs", default="/tmp/metarim-learn", help="folder for the run folders")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="where JSON and PNG go")
    p.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    a = p.parse_args()
    docs = pathlib.Path(a.docs)
    if a.plot_only:
        _plot(json.loads((docs / "learning.json").read_text()), a.levels, a.memories, a.threshold, docs)
        return
    runs = pathlib.Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    metarim = [sys.executable, "-m", "metarim.cli"]
    results = []
    for level, memory, seed in ((lv, m, s) for lv in a.levels for m in a.memories for s in a.seeds):
        # finished runs are resumed (nothing to do) and only re-evaluated
        out = runs / f"{level}-{memory}-s{seed}"
        cmd = ["train", "--env", level, "--memory", memory, "--frames", str(a.frames),
               "--seed", str(seed), "--out", str(out), "--quiet"]
        done_before = (out / "bench.json").is_file()
        cmd += ["--resume"] if (out / "config.json").is_file() else []
        t0 = time.time()
        subprocess.run(metarim + cmd, check=True)
        if not done_before:
            (out / "bench.json").write_text(json.dumps({"wall_s": time.time() - t0}))
        wall = json.loads((out / "bench.json").read_text())["wall_s"]
        ev = subprocess.run(metarim + ["eval", "--run", str(out), "--episodes", str(a.eval_episodes)],
                            check=True, capture_output=True, text=True)
        frames, success, returns, episodes = _curve(out)
        # the rolling window must be full (100 episodes) before it counts
        hit = next((f for f, s, n in zip(frames, success, episodes) if s >= a.threshold and n >= 100), None)
        results.append({
            "level": level, "memory": memory, "seed": seed,
            "command": "metarim " + shlex.join([c for c in cmd if c != "--resume"]),
            "frames": frames[-1], "frames_to_threshold": hit, "threshold": a.threshold,
            "final_train_success": success[-1], "final_train_return": returns[-1],
            "eval": json.loads(ev.stdout), "wall_s": wall,
            "curve": {"frames": frames, "success_rate": success, "return_mean": returns,
                      "episodes": episodes},
        })
        print(json.dumps({k: v for k, v in results[-1].items() if k != "curve"}), flush=True)
    (docs / "learning.json").write_text(json.dumps(results, indent=1))
    _plot(results, a.levels, a.memories, a.threshold, docs)


def _plot(results: list[dict], levels: list[str], memories: list[str], threshold: float,
          docs: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.6), squeeze=False)
    for ax, level in zip(axes[0], levels):
        for i, memory in enumerate(memories):
            for j, r in enumerate(r for r in results if r["level"] == level and r["memory"] == memory):
                c = r["curve"]
                keep = [k for k, n in enumerate(c["episodes"]) if n >= 20]  # skip tiny windows
                ax.plot([c["frames"][k] for k in keep], [c["success_rate"][k] for k in keep],
                        color=f"C{i}", lw=1.2, label=f"PPO + {memory.upper()}" if j == 0 else None)
        ax.axhline(threshold, color="grey", lw=0.8, ls="--")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
        ax.set(title=level, xlabel="frames", ylabel="success rate (last 100 episodes)", ylim=(0, 1.02))
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(docs / "learning_curves.png", dpi=110)


if __name__ == "__main__":
    main()
