"""``make demo``: PPO+LSTM, PPO+RIM and Meta-RIM learn BabyAI GoToLocalS6N2, in minutes.

Three learners of ``examples/sweeps/gotolocal.json`` (``metarim``, ``rim``, ``lstm``),
one seed each, train on the batched tensor env (``env_backend: tensor``) for
:data:`FRAMES` frames, two runs at a time (``metarim sweep``'s local runner), with the
settings of :data:`KIT` (and, :data:`EXTRA`, ``meta_window`` 4 for Meta-RIM, ``k`` 3 for the RIMs). A progress
bar per run shows frames and training success. Each trained policy is then measured on
minigrid with :data:`EPISODES` episodes per measurement, and the script prints the
table and where to find ``curves.png``, ``modules.png`` and ``metarim.gif`` (five
episodes of the trained Meta-RIM agent on a held-out seed range). In the same pool of
runs, a task-switch segment (:func:`switch_spec`) trains PPO+LSTM and Meta-RIM from
scratch under the schedule :data:`SWITCH_LEVELS`, :data:`SWITCH_FRAMES` frames per
phase, unmeasured; the script prints its switch table and writes ``switch.png`` and
``switch.json`` (:func:`switch_report`).

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
import json
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
EXTRA: dict[str, dict[str, Any]] = {"metarim": {"meta_window": 4, "k": 3}, "rim": {"k": 3}}
"""Further overrides per learner, on top of :data:`KIT`: Meta-RIM's 4-step windows
(issue 19) and 3 of 4 RIM modules active (issue 18), today's defaults."""
GIF_EPISODES = 5
SWITCH_LEVELS = ("BabyAI-GoToLocalS6N2-v0", "BabyAI-GoToLocalS8N7-v0")
"""The task-switch segment's two phases: the demo's level, then a larger room with seven
distractors (8x8 rather than 6x6, 7 objects rather than 2)."""
SWITCH_FRAMES = 20_480
"""Frames per phase of the segment (20 updates): enough for PPO+LSTM and Meta-RIM to
learn the first level, dip at the switch and recover on the second (README.md)."""
SWITCH_LEARNERS = ["metarim", "lstm"]
"""Learners of the segment, each trained from scratch as ``switch-<learner>``."""
SWITCH_WINDOW = 10_000
"""Frames after the switch over which the table's success is averaged."""
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
    p.add_argument("--switch-frames", type=int, default=SWITCH_FRAMES,
                   help="frames per phase of the task-switch segment (0: no segment)")
    p.add_argument("--only-switch", action="store_true",
                   help="train and report the task-switch segment alone (to time it)")
    a = p.parse_args(argv)
    for name in ("frames", "episodes", "jobs"):
        if getattr(a, name) < 1:
            p.error(f"--{name} {getattr(a, name)} must be >= 1")
    if a.switch_frames < 0 or (a.only_switch and a.switch_frames == 0):
        p.error(f"--switch-frames {a.switch_frames} must be >= 1 (or 0 for no segment, without --only-switch)")
    args = comparison.parse_args(["--learners", *LEARNERS, "--seeds", "0", "--frames", str(a.frames),
                                  "--episodes", str(a.episodes), "--jobs", str(a.jobs), "--out", a.out,
                                  "--env-backend", "tensor"])
    args.switch_frames, args.only_switch = a.switch_frames, a.only_switch
    return args


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


def switch_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The task-switch segment: :data:`SWITCH_LEARNERS`, with the settings of
    :func:`demo_spec`, trained from scratch under the two-phase schedule
    :data:`SWITCH_LEVELS`, ``args.switch_frames`` frames each (a sweep of its own, so the
    comparison's table and curves are those of :func:`demo_spec` alone).

    Example:
        >>> spec = switch_spec(parse_args([]))
        >>> sorted(spec["learners"]), spec["base"]["frames"]
        (['switch-lstm', 'switch-metarim'], 40960)
        >>> [p["level"] for p in spec["learners"]["switch-lstm"]["schedule"]["phases"]]
        ['BabyAI-GoToLocalS6N2-v0', 'BabyAI-GoToLocalS8N7-v0']
    """
    from metarim.tasks.schedule import sequential_schedule

    main = comparison.sweep_spec(args)
    schedule = sequential_schedule(list(SWITCH_LEVELS), args.switch_frames)
    learners = {f"switch-{n}": {**comparison.LEARNERS[n], **KIT, **EXTRA.get(n, {}), "schedule": schedule}
                for n in SWITCH_LEARNERS}
    return {**main, "base": {**main["base"], "frames": len(SWITCH_LEVELS) * args.switch_frames},
            "levels": [SWITCH_LEVELS[0]], "learners": learners}


def switch_report(out: pathlib.Path) -> list[dict[str, Any]]:
    """Continual metrics (:func:`metarim.evaluation.continual.continual_report`) of the
    segment's runs, written to ``switch.json`` (strict JSON), and ``switch.png``: training
    success against frames, a line per learner, the switch as a vertical line."""
    from metarim.evaluation.continual import continual_report, success_curve
    from metarim.reporting.plotting import _pyplot
    from metarim.reporting.report import finite_or_none

    reports = []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in SWITCH_LEARNERS:
        folder = out / "runs" / f"switch-{n}-s0"
        rep = continual_report(folder, window=SWITCH_WINDOW, threshold=0.8)
        reports.append({"learner": n, **rep})
        frames, success = success_curve(folder)
        ax.plot(frames, success, label=n)
    for sw in reports[0]["switches"]:
        ax.axvline(sw["frames"], color="k", lw=1)
        ax.text(sw["frames"], 1.02, f" -> {sw['name'].replace('BabyAI-', '')}", fontsize=8, va="bottom")
    ax.axhline(0.8, color="grey", ls=":", lw=1)
    ax.set(xlabel="frames", ylabel="success rate (training episodes)", ylim=(0, 1.08),
           title=f"{' -> '.join(lv.replace('BabyAI-', '') for lv in SWITCH_LEVELS)}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "switch.png", dpi=100)
    plt.close(fig)
    (out / "switch.json").write_text(json.dumps(finite_or_none(reports), indent=1, default=float, allow_nan=False))
    return reports


def switch_table(reports: list[dict[str, Any]]) -> str:
    """The segment's table: per learner, success just before the switch, over the first
    :data:`SWITCH_WINDOW` frames after it, and frames after it to 0.8."""
    lines = [f"Task switch ({' -> '.join(SWITCH_LEVELS)}):",
             f"| learner | success before | success, first {SWITCH_WINDOW // 1000}k frames after | frames to 0.8 |",
             "|---|---|---|---|"]
    for r in reports:
        for sw in r["switches"]:
            back = "not reached" if sw["frames_to_threshold"] is None else f"{sw['frames_to_threshold']:,.0f}"
            lines.append(f"| {r['learner']} | {sw['success_before']:.2f} | {sw['success_after']:.2f} | {back} |")
    return "\n".join(lines) + "\n"


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
    main_runs = [] if args.only_switch else expand_sweep(demo_spec(args))
    switch_runs = expand_sweep(switch_spec(args)) if args.switch_frames else []
    # one pool for both: the slowest (Meta-RIM's two) start first, then the rest by cost
    todo = main_runs[:1] + switch_runs[:1] + main_runs[1:] + switch_runs[1:]
    if main_runs:
        print(f"Training {', '.join(LEARNERS)} on {args.train_level} (tensor env), {args.frames:,} frames each, "
              f"{args.jobs} at a time; then {args.episodes} evaluation episodes per measurement on minigrid.",
              file=sys.stderr)
    if switch_runs:
        print(f"Task switch: {', '.join(SWITCH_LEARNERS)} from scratch, {args.switch_frames:,} frames on "
              f"{SWITCH_LEVELS[0]}, then {args.switch_frames:,} on {SWITCH_LEVELS[1]} (no evaluation).",
              file=sys.stderr)
    with Progress(todo, out):
        results = run_sweep(todo, out, max_parallel=args.jobs, log=lambda s: tqdm.write(s, file=sys.stderr))
    failed = {n: r["error"] for n, r in results.items() if r["status"] not in ("done", "skipped")}
    if failed:
        print(f"runs not finished (rerun to retry): {failed}", file=sys.stderr)
        return 1
    trained = time.perf_counter() - t0
    train_s = sum(comparison.training_seconds(_rows(out / "runs" / r.name)) for r in todo)
    paths = []
    if main_runs:
        runs = comparison.measure_all(args, out)
        comparison.aggregate(runs, args, out)
        gif = write_gif(out)
        print((out / "summary.md").read_text())
        paths += ["curves.png", "modules.png", gif.name]
    if switch_runs:
        print(switch_table(switch_report(out)))
        paths.append("switch.png")
    print(f"Wall time {time.perf_counter() - t0:.0f} s (training {trained:.0f} s; training time summed over "
          f"the {len(todo)} runs {train_s:.0f} s). One seed per learner, so each [CI] is a single value; the full "
          f"comparison below has three.\n")
    for f in paths + (["summary.md", "summary.json"] if main_runs else []) + (["switch.json"] if switch_runs else []):
        print(f"  {out / f}")
    print()
    if main_runs:
        from metarim.config import TrainConfig

        rim = {k: EXTRA["rim"].get(k, getattr(TrainConfig(), k)) for k in ("num_units", "k")}
        print(f"curves.png: training success (mean of the last 100 episodes) against frames, a line per learner; "
              f"'frames to 0.8' in the table is where a line first crosses the dotted 0.8.\n"
              f"modules.png: per RIM learner, the fraction of steps each of its {rim['num_units']} modules is active "
              f"({rim['k']} per step) by "
              f"mission object, colour and episode step; {gif.name}: the trained Meta-RIM agent, held-out episodes.")
    if switch_runs:
        print("switch.png: training success across the switch (vertical line) to the larger, more cluttered room; "
              "the window of episodes restarts there, so the dip is the new level's own success, and the table's "
              "'frames to 0.8' is how long each learner takes to recover.")
    print(f"Full comparison (5 learners, 3 seeds, 500k frames each, 80-90 min): {FULL}")
    return 0


def _rows(folder: pathlib.Path) -> list[dict[str, str]]:
    import csv

    with open(folder / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


if __name__ == "__main__":
    raise SystemExit(main())
