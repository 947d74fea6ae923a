"""``make demo``: PPO+LSTM, PPO+RIM and Meta-RIM learn BabyAI GoToLocalS6N2, in minutes.

Three learners of ``examples/sweeps/gotolocal.json`` (``metarim``, ``rim``, ``lstm``),
one seed each, train on the batched tensor env (``env_backend: tensor``) for
:data:`FRAMES` frames, two runs at a time (``metarim sweep``'s local runner), with the
settings of :data:`KIT` (and ``meta_window`` 4 for Meta-RIM, :data:`EXTRA`). A progress
bar per run shows frames and training success. Each trained policy is then measured on
minigrid with :data:`EPISODES` episodes per measurement, and the script prints the
table and where to find ``curves.png``, ``modules.png`` and ``metarim.gif`` (five
episodes of the trained Meta-RIM agent on a held-out seed range).

Outputs in ``--out`` (default ``results/demo/``) are those of
``examples/gotolocal_meta.py`` plus ``metarim.gif``; every JSON file is strict JSON.
Finished runs and measurements are reused, so a second ``make demo`` only prints the
results again (delete the folder to train afresh).

Why a script of its own rather than a mode of ``gotolocal_meta.py``: that script is
the measurement (five learners, three seeds, and ``--quick``, the smoke run the tests
use); the demo adds what only a first reader needs (live bars over runs trained in
other processes, a GIF, a reading guide), which would take it past 300 lines for
features its long runs do not use. The demo calls its functions (``sweep_spec``,
``measure_all``, ``aggregate``), so the demo's table, curves and module figure are
computed exactly as the comparison's.

Usage::

    python examples/demo.py                      # what `make demo` runs
    python examples/demo.py --frames 2048 --episodes 4 --out /tmp/demo   # a smoke run
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import threading
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gotolocal_meta as comparison  # noqa: E402  (examples/ is not a package)

LEARNERS = ["metarim", "rim", "lstm"]
"""Learners of the sweep file, in start order: Meta-RIM, the slowest, starts at once."""
FRAMES = 51_200
"""Frames per run (50 updates of 16 envs x 64 steps): seed 0 of each learner passes 0.8
training success by about 30k frames (README.md, "The demo")."""
EPISODES = 24
"""Evaluation episodes per measurement (the comparison uses 100)."""
JOBS = 2
"""Runs trained at once."""
KIT: dict[str, Any] = {"lr": 0.001, "entropy_coef": 0.01, "init": "kit", "combine": "heads",
                       "mission_dim": 128, "image_encoding": "raw"}
"""Overrides on every learner: the starter kit's settings (docs/rl.md, "Sample efficiency
against the starter kit"), passed explicitly so the demo trains the same runs whatever
``TrainConfig``'s defaults are."""
EXTRA: dict[str, dict[str, Any]] = {"metarim": {"meta_window": 4}}
"""Further overrides per learner, on top of :data:`KIT`."""
GIF_EPISODES = 5
FULL = ("python examples/gotolocal_meta.py --frames 500000 --seeds 0 1 2 --env-backend tensor "
        "--jobs 2")
"""The full comparison (README, "GoToLocal comparison")."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The demo's options, as the :mod:`gotolocal_meta` namespace that its functions read."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="results/demo")
    p.add_argument("--frames", type=int, default=FRAMES, help="frames per run")
    p.add_argument("--episodes", type=int, default=EPISODES, help="evaluation episodes per measurement")
    p.add_argument("--jobs", type=int, default=JOBS, help="runs trained at once")
    a = p.parse_args(argv)
    for name in ("frames", "episodes", "jobs"):
        if getattr(a, name) < 1:
            p.error(f"--{name} {getattr(a, name)} must be >= 1")
    return comparison.parse_args(["--learners", *LEARNERS, "--seeds", "0", "--frames", str(a.frames),
                                  "--episodes", str(a.episodes), "--jobs", str(a.jobs), "--out", a.out,
                                  "--env-backend", "tensor"])


def demo_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep the demo trains: the comparison's (:func:`gotolocal_meta.sweep_spec`)
    with :data:`KIT` and :data:`EXTRA` on its learners.

    Every run the demo trains is a learner of this spec, so a further segment (another
    learner or setting of the sweep file) enters the demo, its bars, table and curves
    by being added to ``args.learners`` and, for its settings, to :data:`EXTRA`.

    Example:
        >>> spec = demo_spec(parse_args([]))
        >>> spec["base"]["env_backend"], spec["learners"]["metarim"]["meta_window"]
        ('tensor', 4)
    """
    spec = comparison.sweep_spec(args)
    for name, over in spec["learners"].items():
        over.update(KIT)
        over.update(EXTRA.get(name, {}))
    return spec


class Progress:
    """One progress bar per run, fed from the run folders' ``metrics.csv`` (each run
    trains in a process of its own and writes a row per update), polled every ``every``
    seconds: tqdm bars on a terminal; elsewhere (a log file, a pipe) one line per run
    every ``line_every`` seconds while it moves, since bars redrawn in place are
    unreadable there."""

    def __init__(self, runs: list[Any], out: pathlib.Path, *, every: float = 0.5, line_every: float = 15.0,
                 tty: bool | None = None) -> None:
        from tqdm import tqdm

        self.folders = [out / "runs" / r.name for r in runs]
        width = max(len(r.name) for r in runs)
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bars = [tqdm(total=r.config["frames"], desc=r.name.ljust(width), position=i, unit="frame",
                          unit_scale=True, dynamic_ncols=True, file=sys.stderr, leave=True, disable=not self.tty)
                     for i, r in enumerate(runs)]
        self.names, self.shown = [r.name.ljust(width) for r in runs], [-1] * len(runs)
        self.every, self.line_every, self.last_line = every, line_every, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            self.poll()

    def poll(self, *, final: bool = False) -> None:
        """Moves each bar to its run's last complete ``metrics.csv`` row."""
        lines_due = final or time.monotonic() - self.last_line >= self.line_every
        for i, (folder, bar) in enumerate(zip(self.folders, self.bars)):
            try:
                lines = (folder / "metrics.csv").read_text().splitlines(keepends=True)
            except OSError:
                continue
            rows = [ln for ln in lines[1:] if ln.endswith("\n")]
            if not rows:
                continue
            row = dict(zip(lines[0].strip().split(","), rows[-1].strip().split(",")))
            frames, success, fps = int(float(row["frames"])), float(row["success_rate"]), float(row["fps"])
            if self.tty:
                bar.n = min(frames, bar.total)
                bar.set_postfix(success=f"{success:.2f}", fps=f"{fps:.0f}", refresh=False)
                bar.refresh()
            elif lines_due and frames != self.shown[i]:
                self.shown[i] = frames
                print(f"{self.names[i]} {frames:>7,}/{bar.total:,} frames  success {success:.2f}  {fps:.0f} frames/s",
                      file=sys.stderr, flush=True)
        if lines_due:
            self.last_line = time.monotonic()

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self.poll(final=True)
        for bar in self.bars:
            bar.close()


def write_gif(out: pathlib.Path, name: str = "metarim", episodes: int = GIF_EPISODES) -> pathlib.Path:
    """Renders ``episodes`` episodes of the trained ``name`` run on its held-out task."""
    from metarim.algorithms.common import make_task_samplers
    from metarim.evaluation.evaluate import load_run, render

    config, policy, vocab, _ = load_run(out / "runs" / f"{name}-s0")
    path = out / f"{name}.gif"
    render(policy, make_task_samplers(config)[1].tasks[0], vocab, path, episodes=episodes, seed=40_000)
    return path


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from metarim.sweep import expand_sweep, run_sweep

    t0 = time.perf_counter()
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    todo = expand_sweep(demo_spec(args))
    print(f"Training {', '.join(LEARNERS)} on {args.train_level} (tensor env), {args.frames:,} frames each, "
          f"{args.jobs} at a time; then {args.episodes} evaluation episodes per measurement on minigrid.",
          file=sys.stderr)
    with Progress(todo, out):
        results = run_sweep(todo, out, max_parallel=args.jobs, log=lambda s: tqdm.write(s, file=sys.stderr))
    failed = {n: r["error"] for n, r in results.items() if r["status"] not in ("done", "skipped")}
    if failed:
        print(f"runs not finished (rerun to retry): {failed}", file=sys.stderr)
        return 1
    trained = time.perf_counter() - t0
    runs = comparison.measure_all(args, out)
    comparison.aggregate(runs, args, out)
    gif = write_gif(out)
    train_s = sum(r["train_seconds"] for r in runs)
    print((out / "summary.md").read_text())
    print(f"Wall time {time.perf_counter() - t0:.0f} s (training {trained:.0f} s; training time summed over "
          f"the runs {train_s:.0f} s). One seed per learner, so each [CI] is a single value; the full comparison "
          f"below has three.\n")
    for f in ("curves.png", "modules.png", gif.name, "summary.md", "summary.json"):
        print(f"  {out / f}")
    print(f"\ncurves.png: training success (mean of the last 100 episodes) against frames, a line per learner; "
          f"'frames to 0.8' in the table is where a line first crosses the dotted 0.8.\n"
          f"modules.png: per RIM learner, the fraction of steps each of its 4 modules is active (2 per step) by "
          f"mission object, colour and episode step; {gif.name}: the trained Meta-RIM agent, held-out episodes.\n"
          f"Full comparison (5 learners, 3 seeds, 500k frames each, 80-90 min): {FULL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
