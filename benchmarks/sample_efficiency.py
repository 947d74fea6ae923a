"""Sample efficiency: frames to a mean return, and the return at fixed budgets.

For every (variant, level, seed) it trains ``metarim train ... --env-backend tensor`` (the
run folder is kept and resumed, so an interrupted benchmark continues) and reads
``metrics.csv``: ``return_mean`` is the mean return of the last 100 finished episodes.
It prints one JSON object: per run, the frames at which ``return_mean`` first reaches
0.5 / 0.7 / 0.8 / 0.9 (``null``: not within the budget) and ``return_mean`` at fixed
budgets; per (variant, level), the means over seeds.

    python benchmarks/sample_efficiency.py                       # the three levels, defaults
    python benchmarks/sample_efficiency.py --levels BabyAI-GoToLocalS6N2-v0 --frames 61440 \\
        --variant kit-hp="--lr 0.001 --entropy-coef 0.01" --variant default= --seeds 1 2 3

A variant is ``NAME=FLAGS`` (extra ``metarim train`` flags, shell-quoted; empty: the
defaults). ``--parallel N`` trains N runs at once (the machine has 2 cores: use 2 when
nothing else runs). ``--table`` also prints a markdown table of the means, ``--plot PNG``
draws the return curves (``--band LEVEL=LOW:HIGH:LABEL`` shades a reference range).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import math
import pathlib
import shlex
import subprocess
import sys
import time
from typing import Any

LEVEL_FRAMES = {
    "BabyAI-GoToLocalS6N2-v0": 100_000,
    "BabyAI-GoToLocal-v0": 400_000,
    "MiniGrid-DoorKey-5x5-v0": 150_000,
}
THRESHOLDS = (0.5, 0.7, 0.8, 0.9)
BUDGETS = (30_720, 61_440, 100_000, 200_000, 400_000)


def curve(run: pathlib.Path) -> tuple[list[float], list[float], list[float]]:
    """``(frames, return_mean, success_rate)`` of a run's ``metrics.csv``."""
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return ([float(r["frames"]) for r in rows], [float(r["return_mean"]) for r in rows],
            [float(r["success_rate"]) for r in rows])


def first_reaching(frames: list[float], values: list[float], level: float) -> float | None:
    """The first frame count at which ``values`` is ``>= level`` (``None``: never).

    Example:
        >>> first_reaching([2048, 4096, 6144], [0.2, 0.75, 0.7], 0.7)
        4096
    """
    return next((f for f, v in zip(frames, values) if v >= level), None)


def at_budget(frames: list[float], values: list[float], budget: float) -> float | None:
    """``values`` at the first row whose frame count is ``>= budget`` (``None``: not reached).

    Example:
        >>> at_budget([2048, 4096, 6144], [0.2, 0.75, 0.7], 5000)
        0.7
    """
    return next((v for f, v in zip(frames, values) if f >= budget), None)


def summarise(frames: list[float], returns: list[float], success: list[float],
              budgets: list[int]) -> dict[str, Any]:
    """Frames to each return threshold and the return (and success) at each budget."""
    return {
        "frames_to_return": {str(t): first_reaching(frames, returns, t) for t in THRESHOLDS},
        "return_at": {str(b): at_budget(frames, returns, b) for b in budgets if b <= frames[-1]},
        "success_at": {str(b): at_budget(frames, success, b) for b in budgets if b <= frames[-1]},
        "final_return": returns[-1],
        "final_success": success[-1],
        "frames": frames[-1],
    }


def train(out: pathlib.Path, level: str, seed: int, frames: int, flags: list[str]) -> float:
    """Trains (or resumes) one run; returns the wall time of this call in seconds."""
    cmd = [sys.executable, "-m", "metarim.cli", "train", "--out", str(out), "--quiet"]
    if (out / "config.json").is_file():
        cmd += ["--resume", "--frames", str(frames)]
    else:
        cmd += ["--env", level, "--env-backend", "tensor", "--seed", str(seed), "--frames", str(frames), *flags]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def _mean(xs: list[float | None]) -> float | None:
    """Mean of the values, ``None`` if any is ``None`` (a threshold some seed missed)."""
    return None if not xs or any(x is None for x in xs) else sum(xs) / len(xs)  # type: ignore[arg-type]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``variant/level``: means over seeds of every number in :func:`summarise`."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(f"{r['variant']}/{r['level']}", []).append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {
            "seeds": [r["seed"] for r in rs],
            "frames_to_return": {t: _mean([r["frames_to_return"][t] for r in rs]) for t in rs[0]["frames_to_return"]},
            "reached": {t: sum(r["frames_to_return"][t] is not None for r in rs) for t in rs[0]["frames_to_return"]},
            "return_at": {b: _mean([r["return_at"].get(b) for r in rs]) for b in rs[0]["return_at"]},
            "final_return": _mean([r["final_return"] for r in rs]),
            "final_success": _mean([r["final_success"] for r in rs]),
            "wall_s": _mean([r["wall_s"] for r in rs]),
        }
    return out


def table(agg: dict[str, dict[str, Any]], budget: str) -> str:
    """Markdown table: return at ``budget``, frames to 0.8 and how many seeds got there."""
    fmt = lambda x, d=2: "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"  # noqa: E731
    lines = [f"| variant / level | return at {int(budget):,} | frames to 0.8 (mean) | seeds ≥ 0.8 | final return |",
             "|---|---|---|---|---|"]
    for key, a in agg.items():
        f08 = a["frames_to_return"]["0.8"]
        lines.append(f"| {key} | {fmt(a['return_at'].get(budget))} | {'—' if f08 is None else f'{f08:,.0f}'} "
                     f"| {a['reached']['0.8']}/{len(a['seeds'])} | {fmt(a['final_return'])} |")
    return "\n".join(lines)


def plot(root: pathlib.Path, runs: list[dict[str, Any]], path: pathlib.Path,
         bands: dict[str, tuple[float, float, str]] | None = None) -> None:
    """One panel per level: ``return_mean`` against frames, a thin line per seed and the
    mean over seeds per variant; ``bands``: ``{level: (low, high, label)}``, a shaded
    reference range (e.g. the starter kit's return on that level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    levels = list(dict.fromkeys(r["level"] for r in runs))
    fig, axes = plt.subplots(1, len(levels), figsize=(5.5 * len(levels), 3.8), squeeze=False)
    for ax, level in zip(axes[0], levels):
        if bands and level in bands:
            lo, hi, label = bands[level]
            ax.axhspan(lo, hi, color="grey", alpha=0.25, label=label)
        for i, name in enumerate(dict.fromkeys(r["variant"] for r in runs if r["level"] == level)):
            color = f"C{i}"
            curves = [curve(root / name / f"{level}-s{r['seed']}")[:2] for r in runs
                      if r["level"] == level and r["variant"] == name]
            for f, ret in curves:
                ax.plot(f, ret, color=color, lw=0.6, alpha=0.5)
            n = min(len(f) for f, _ in curves)
            ax.plot(curves[0][0][:n], np.mean([ret[:n] for _, ret in curves], 0), color=color, lw=2,
                    label=f"{name} (mean of {len(curves)} seeds)")
        ax.set_title(level)
        ax.set_xlabel("frames")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:.0f}k")
        ax.set_ylabel("return_mean (last 100 episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--levels", nargs="+", default=list(LEVEL_FRAMES))
    p.add_argument("--frames", type=int, help="frames per run (default: per level, see LEVEL_FRAMES)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--variant", action="append", metavar="NAME=FLAGS",
                   help="a named set of extra train flags (repeatable; default: one variant, the defaults)")
    p.add_argument("--runs", default="/tmp/metarim-sample-efficiency", help="folder for the run folders")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--table", metavar="BUDGET", help="also print a markdown table at this budget")
    p.add_argument("--plot", metavar="PNG", help="also draw the return curves (one panel per level)")
    p.add_argument("--band", action="append", metavar="LEVEL=LOW:HIGH:LABEL", default=[],
                   help="a shaded reference range on a level's panel (repeatable)")
    a = p.parse_args(argv)
    variants: dict[str, list[str]] = {}
    for v in a.variant or ["default="]:
        name, sep, flags = v.partition("=")
        if not sep or not name:
            p.error(f"--variant {v!r} must be NAME=FLAGS")
        variants[name] = shlex.split(flags)
    jobs = [(name, level, seed) for name in variants for level in a.levels for seed in a.seeds]
    root = pathlib.Path(a.runs)

    def one(job: tuple[str, str, int]) -> dict[str, Any]:
        name, level, seed = job
        frames = a.frames or LEVEL_FRAMES.get(level, 100_000)
        out = root / name / f"{level}-s{seed}"
        out.parent.mkdir(parents=True, exist_ok=True)
        wall = train(out, level, seed, frames, variants[name])
        res = {"variant": name, "level": level, "seed": seed, "flags": shlex.join(variants[name]),
               "wall_s": wall, **summarise(*curve(out), list(BUDGETS) + [frames])}
        print(json.dumps(res), file=sys.stderr, flush=True)
        return res

    with concurrent.futures.ThreadPoolExecutor(max(1, a.parallel)) as pool:
        runs = list(pool.map(one, jobs))
    agg = aggregate(runs)
    print(json.dumps({"runs": runs, "mean": agg}))
    if a.table:
        print(table(agg, a.table))
    if a.plot:
        bands = {}
        for spec in a.band:
            level, _, rest = spec.partition("=")
            lo, hi, label = rest.split(":", 2)
            bands[level] = (float(lo), float(hi), label)
        plot(root, runs, pathlib.Path(a.plot), bands)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
