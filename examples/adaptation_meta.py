"""Where fast adaptation should pay: Meta-RIM against its baselines on task switches,
the periodic mode and hidden-task trials (issue 20's comparison).

Three settings, each trained for the same frame budget per learner and seed on the tensor
env (docs/adaptation_benchmarks.md gives the full commands):

* ``schedule``: the four-phase schedule that comes back to its first phase
  (``examples/schedules/four_phase.json``: GoToLocalS6N2 → PickupLoc → PutNextLocal →
  GoToLocalS6N2, ``--phase-frames`` each), plus, for forward transfer, one run per learner,
  seed and level trained on that level alone for one phase length (not for the first
  level: the run's own first phase is that run, :func:`scratch_levels`). Per switch:
  success just before it, over the first ``--window`` frames after it, frames to get back
  to ``--threshold`` and to the pre-switch level; per phase the area under the success
  curve and the forward transfer; forgetting on the returning phase
  (:func:`metarim.evaluation.continual.continual_report`, docs/schedules.md).
* ``periodic``: ``examples/schedules/periodic.json`` (every env column switches among the
  three levels every 4 episodes). The training metrics do not separate the episodes just
  after a column's switch, so the table holds the area under the whole success curve,
  the final success and the frames to ``--threshold``.
* ``trials``: hidden-task trials (docs/trials.md) of ``K = --trials`` episodes on
  ``--trial-level``; each trained policy plays ``--trial-count`` trials of its held-out
  targets (:func:`metarim.evaluation.trials.trials_report`), with memory only (adapt 0)
  and, for the learners trained with an inner loop (Meta-RIM, MAML, Reptile), with one
  step of their own adaptation rule after each episode (adapt 1). Every curve plays one
  env column with the same seed, so all learners of a seed meet the same trials.

The learners (name → ``TrainConfig`` overrides, with a note on each) are the sweep file
``examples/sweeps/adaptation.json``. Runs are trained by :func:`metarim.sweep.run_sweep`
(``--jobs`` at once, finished runs skipped, interrupted ones resumed from their
checkpoints) into ``<out>/<setting>/runs/``; a trials measurement is saved beside its run
(``<learner>-s<seed>.json``) and reused while its budget and trial settings match.

Outputs per setting in ``<out>/<setting>/`` (``--out`` default ``results/adaptation``):
``summary.json`` (strict JSON: non-finite numbers are ``null``), ``summary.md`` (mean over
seeds with a 95 % bootstrap CI, Welch p-value against Meta-RIM, the command and the
training time summed over the runs) and the figure (``curves.png`` with the switch points
marked, or ``trials.png``, the within-trial curve).

Usage::

    python examples/adaptation_meta.py --setting all --quick       # < 90 s per setting
    python examples/adaptation_meta.py --setting schedule --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import sys
import time
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gotolocal_meta  # noqa: E402  (the quick sizes of its learners)
from gotolocal_meta import training_seconds  # noqa: E402  (time from metrics.csv)

SWEEP = HERE / "sweeps" / "adaptation.json"
SPEC: dict[str, Any] = json.loads(SWEEP.read_text())
LEARNERS: dict[str, dict[str, Any]] = SPEC["learners"]  # name: TrainConfig overrides, notes in the file
SETTINGS = ("schedule", "periodic", "trials")
FOUR_PHASE = HERE / "schedules" / "four_phase.json"
PERIODIC = HERE / "schedules" / "periodic.json"
QUICK_LEARNERS = ["metarim", "lstm"]
INNER_LOOP = ("metarim", "maml", "reptile")  # algos trained through an inner loop: adapt 1 in the trials
DEFAULT_FRAMES = {"periodic": 400_000, "trials": 500_000}
QUICK_FRAMES = {"schedule": 1024, "periodic": 2048, "trials": 2048}  # schedule: per phase
SWITCH_METRICS = {"success_before": "before", "success_after": "after", "frames_to_threshold": "frames_to_thr",
                  "frames_to_before": "frames_to_before"}  # continual_report's key: the summary's
TRIAL_KEYS = ("trials", "trial_count", "trial_level")  # a saved trials measurement with others is redone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", choices=(*SETTINGS, "all"), default="all")
    p.add_argument("--quick", action="store_true",
                   help=f"tiny budgets, learners {QUICK_LEARNERS}, 1 seed (< 90 s per setting)")
    p.add_argument("--phase-frames", type=int, default=json.loads(FOUR_PHASE.read_text())["phases"][0]["frames"],
                   help="schedule: frames per phase (and of each scratch run)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"periodic, trials: frames per run (default {DEFAULT_FRAMES})")
    p.add_argument("--seeds", type=int, nargs="+", default=SPEC["seeds"])
    p.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS),
                   help=f"learners of {SWEEP.name} (its notes say what each is)")
    p.add_argument("--window", type=int, default=10_000, help="schedule: frames after a switch for 'success after'")
    p.add_argument("--threshold", type=float, default=0.8, help="success level of 'frames to threshold'")
    p.add_argument("--trial-level", default="BabyAI-GoToLocal-v0", help="trials: the hidden-task level")
    p.add_argument("--trials", type=int, default=4, help="trials: episodes per trial K (training and evaluation)")
    p.add_argument("--trial-count", type=int, default=64, help="trials: trials played per run and curve")
    p.add_argument("--out", default="results/adaptation", help="each setting writes into OUT/<setting>/")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (metarim sweep --max-parallel)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="metarim sweep backend")
    args = p.parse_args(argv)
    if args.quick:
        args.phase_frames = min(args.phase_frames, QUICK_FRAMES["schedule"])
        args.seeds = args.seeds[:1] if "--seeds" in argv else [1]
        args.window = min(args.window, args.phase_frames // 2)
        args.trial_count = min(args.trial_count, 8)
        if "--learners" not in argv:
            args.learners = QUICK_LEARNERS
    for flag in ("phase_frames", "window", "trials", "trial_count", "jobs"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be >= 1")
    if args.frames is not None and args.frames < 1:
        p.error(f"--frames {args.frames} must be >= 1")
    args.argv = argv
    return args


def frames_of(args: argparse.Namespace, setting: str) -> int:
    """Training frames per run of ``setting`` (the schedule's: all of its phases)."""
    if setting == "schedule":
        return len(json.loads(FOUR_PHASE.read_text())["phases"]) * args.phase_frames
    frames = args.frames if args.frames is not None else DEFAULT_FRAMES[setting]
    return min(frames, QUICK_FRAMES[setting]) if args.quick else frames


def command(args: argparse.Namespace, setting: str) -> str:
    """The command line that reproduces ``setting``'s table (this invocation's flags)."""
    argv, skip = [], False
    for a in args.argv:
        if skip or a.startswith("--setting"):
            skip = a == "--setting"
            continue
        argv.append(a)
    return shlex.join(["python", "examples/adaptation_meta.py", "--setting", setting, *argv])


def learner_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``args.learners``' overrides from the sweep file, with the ``--quick`` sizes."""
    return gotolocal_meta.learner_overrides(args.learners, args.quick, LEARNERS)


def four_phase(args: argparse.Namespace) -> dict[str, Any]:
    """``four_phase.json``'s levels and seed with ``--phase-frames`` per phase."""
    from metarim.tasks import sequential_schedule

    spec = json.loads(FOUR_PHASE.read_text())
    return sequential_schedule([ph["level"] for ph in spec["phases"]], args.phase_frames, seed=spec.get("seed", 0))


def scratch_levels(schedule: dict[str, Any]) -> list[str]:
    """The levels that need a scratch run: those of the schedule but its first phase's.
    The first phase *is* its level trained alone from scratch: a run on that level without
    a schedule is the same run bit for bit (every logged number, checked for the six
    learners; ``tests/test_adaptation_example.py`` checks it for one), so its curve up to
    the first switch is the reference of every phase with that level."""
    levels = [ph["level"] for ph in schedule["phases"]]
    return [lv for lv in dict.fromkeys(levels) if lv != levels[0]]


def sweep_specs(args: argparse.Namespace, setting: str) -> list[dict[str, Any]]:
    """The sweep specs of ``setting``: the learners under the setting's keys, and for
    ``schedule`` also the scratch runs (``scratch-<learner>-<level>-s<seed>``), one per
    level of :func:`scratch_levels`."""
    learners, seeds = learner_overrides(args), list(args.seeds)
    base = {**SPEC["base"], "frames": frames_of(args, setting)}
    if setting == "schedule":
        sched = four_phase(args)
        levels = [ph["level"] for ph in sched["phases"]]
        return [{"base": {**base, "schedule": sched}, "levels": levels[:1], "seeds": seeds, "learners": learners},
                {"base": {**SPEC["base"], "frames": args.phase_frames}, "levels": scratch_levels(sched),
                 "seeds": seeds, "learners": {f"scratch-{n}": o for n, o in learners.items()}}]
    if setting == "periodic":
        sched = json.loads(PERIODIC.read_text())
        level = next(iter(sched["phases"][0]["levels"]))
        return [{"base": {**base, "schedule": sched}, "levels": [level], "seeds": seeds, "learners": learners}]
    hidden = {"hidden_task": True, "trial_episodes": args.trials, "task_sampler": "missions"}
    return [{"base": {**base, **hidden}, "levels": [args.trial_level], "seeds": seeds, "learners": learners}]


def _rows(folder: pathlib.Path) -> list[dict[str, str]]:
    import csv

    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


def measure_schedule(name: str, seed: int, args: argparse.Namespace, runs: pathlib.Path) -> dict[str, Any]:
    """Continual-learning metrics of one schedule run against its learner's scratch runs."""
    from metarim.evaluation.continual import continual_report, phase_rows, success_curve
    from metarim.sweep import expand_sweep
    from metarim.tasks import Schedule

    sched = four_phase(args)
    folders = {r.config["env"]: runs / r.name for r in expand_sweep(sweep_specs(args, "schedule")[1])
               if r.learner == f"scratch-{name}" and r.config["seed"] == seed}
    frames, success = success_curve(runs / f"{name}-s{seed}")
    first = phase_rows(frames, Schedule.from_dict(sched)) == 0  # the first level, trained alone (scratch_levels)
    scratch = {**folders, sched["phases"][0]["level"]: (frames[first], success[first])}
    report = continual_report(runs / f"{name}-s{seed}", scratch=scratch, window=args.window,
                              threshold=args.threshold)
    return {"learner": name, "seed": seed, "report": report, "curve": [frames.tolist(), success.tolist()],
            "train_seconds": training_seconds(_rows(runs / f"{name}-s{seed}")),
            "scratch_seconds": sum(training_seconds(_rows(f)) for f in folders.values())}


def measure_periodic(name: str, seed: int, args: argparse.Namespace, runs: pathlib.Path) -> dict[str, Any]:
    """Area under the success curve, final success and frames to the threshold of one run."""
    from metarim.evaluation.continual import continual_report
    from metarim.sweep.report import curve_metrics

    folder = runs / f"{name}-s{seed}"
    rows = _rows(folder)
    cols = [[float(r[k]) for r in rows] for k in ("frames", "success_rate", "return_mean", "episodes")]
    c = curve_metrics(*cols, window=20 if args.quick else 100, threshold=args.threshold)
    return {"learner": name, "seed": seed, "auc": continual_report(folder)["phases"][0]["auc"],
            "final_success": c["final_success"], "frames_to_threshold": c[f"frames_to_{args.threshold:g}"],
            "curve": [c["frames"], c["success"]], "train_seconds": training_seconds(rows)}


def measure_trials(name: str, seed: int, args: argparse.Namespace, runs: pathlib.Path) -> dict[str, Any]:
    """Within-trial curves of one trained run on its held-out targets (saved beside it)."""
    import torch

    from metarim.algorithms import learner_class
    from metarim.evaluation.evaluate import load_run
    from metarim.evaluation.trials import trials_report
    from metarim.reporting.report import finite_or_none

    folder, path = runs / f"{name}-s{seed}", runs / f"{name}-s{seed}.json"
    key = {"frames": frames_of(args, "trials"), **{k: getattr(args, k) for k in TRIAL_KEYS}}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            print(f"[trials {name} s{seed}] done earlier, reusing {path}", file=sys.stderr)
            return saved
    print(f"[trials {name} s{seed}] measuring", file=sys.stderr, flush=True)
    config, policy, vocab, state = load_run(folder)
    torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    steps = (0, 1) if config.algo in INNER_LOOP else (0,)
    rep = trials_report(config, policy, vocab, trial_episodes=args.trials, trials=args.trial_count,
                        adapt_steps=steps, seed=10_000 + seed, num_envs=1,
                        rates=learner_class(config.algo).adaptation_rates(state))
    rows = _rows(folder)
    run = finite_or_none({"learner": name, "seed": seed, "key": key, "report": rep,
                          "training_end": {k: float(rows[-1][k]) for k in ("success_first", "success_later")},
                          "train_seconds": training_seconds(rows), "measure_seconds": time.perf_counter() - t0})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run, allow_nan=False))
    os.replace(tmp, path)
    return run


def _short(level: str) -> str:
    return level.replace("BabyAI-", "").removesuffix("-v0")


def tables_schedule(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[dict, list[tuple[str, list]]]:
    """Per-seed values by learner and the tables' columns of the schedule setting."""
    per: dict[str, dict[str, list[Any]]] = {}
    rep0 = runs[0]["report"]
    for r in runs:
        m, rep = per.setdefault(r["learner"], {}), r["report"]
        for s in rep["switches"]:
            for key, short in SWITCH_METRICS.items():
                m.setdefault(f"{short}@{s['to']}", []).append(s[key])
        for ph in rep["phases"]:
            m.setdefault(f"auc@{ph['phase']}", []).append(ph["auc"])
            m.setdefault(f"ft@{ph['phase']}", []).append(ph["forward_transfer"])
        for fg in rep["forgetting"]:
            m.setdefault(f"forgetting@{fg['returns_in']}", []).append(fg["forgetting"])
    tables = []
    for s in rep0["switches"]:
        k, w = s["to"], f"{min(args.window, args.phase_frames):,}"
        tables.append((f"Switch {k}: {_short(rep0['phases'][k - 1]['name'])} → {_short(s['name'])}",
                       [(f"before@{k}", "success before"), (f"after@{k}", f"success, first {w} frames after"),
                        (f"frames_to_thr@{k}", f"frames to {args.threshold:g}"),
                        (f"frames_to_before@{k}", "frames to the level before")]))
    phase_cols = [(f"auc@{ph['phase']}", f"AUC {ph['phase']} {_short(ph['name'])}") for ph in rep0["phases"]]
    phase_cols += [(f"ft@{ph['phase']}", f"FT {ph['phase']}") for ph in rep0["phases"]]
    phase_cols += [(f"forgetting@{fg['returns_in']}", f"forgetting ({fg['phase']} → {fg['returns_in']})")
                   for fg in rep0["forgetting"]]
    tables.append(("Phases: area under the success curve (AUC), forward transfer (FT), forgetting", phase_cols))
    return per, tables


def tables_periodic(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[dict, list[tuple[str, list]]]:
    per: dict[str, dict[str, list[Any]]] = {}
    for r in runs:
        m = per.setdefault(r["learner"], {})
        for key in ("auc", "final_success", "frames_to_threshold"):
            m.setdefault(key, []).append(r[key])
    cols = [("auc", "AUC (whole run)"), ("final_success", "final success"),
            ("frames_to_threshold", f"frames to {args.threshold:g}")]
    return per, [("Periodic mode (each column switches level every 4 episodes)", cols)]


def tables_trials(runs: list[dict[str, Any]], args: argparse.Namespace) -> tuple[dict, list[tuple[str, list]]]:
    per: dict[str, dict[str, list[Any]]] = {}
    K = args.trials
    for r in runs:
        m = per.setdefault(r["learner"], {})
        for s, c in r["report"]["curves"].items():
            for i in range(K):
                m.setdefault(f"a{s} ep{i + 1}", []).append(c["success"][i])
                m.setdefault(f"a{s} return ep{i + 1}", []).append(c["return"][i])
            m.setdefault(f"a{s} gain", []).append(c["gain"])
            later = float(np.mean(c["return"][1:])) if K > 1 and None not in c["return"] else None
            m.setdefault(f"a{s} return gain", []).append(None if later is None else later - c["return"][0])
    tables = []
    adapted = (0, 1) if any("1" in r["report"]["curves"] for r in runs) else (0,)
    for what, pre in (("success", ""), ("return", "return ")):
        cols = [c for s in adapted for c in [(f"a{s} {pre}ep{i + 1}", f"a{s} ep {i + 1}") for i in range(K)]
                + [(f"a{s} {pre}gain", f"a{s} gain")]]
        tables.append((f"Within-trial {what} per episode of a trial, held-out targets of {_short(args.trial_level)}",
                       cols))
    return per, tables


def plot_schedule(runs: list[dict[str, Any]], order: list[str], args: argparse.Namespace, path: pathlib.Path) -> None:
    """Success against frames, mean over seeds with a 95 % Student-t band, the schedule's
    switch points as vertical lines. The curve is the step curve of the continual metrics
    (:mod:`metarim.evaluation.continual`: NaN, an empty window after a switch, counts as 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import t as student

    sched = four_phase(args)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    top = len(sched["phases"]) * args.phase_frames
    grid = np.linspace(0, top, 800)[1:]
    for name in order:
        ys = []
        for r in (r for r in runs if r["learner"] == name):
            f, s = np.asarray(r["curve"][0], float), np.nan_to_num(np.asarray(r["curve"][1], float))
            ys.append(s[np.minimum(np.searchsorted(f, grid, side="left"), len(s) - 1)])
        ys = np.stack(ys)
        mean = ys.mean(0)
        line = ax.plot(grid, mean, label=f"{name} (n={len(ys)})", lw=1.2)[0]
        if len(ys) > 1:
            half = student.ppf(0.975, len(ys) - 1) * ys.std(0, ddof=1) / np.sqrt(len(ys))
            ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.2)
    for k, ph in enumerate(sched["phases"]):
        if k:
            ax.axvline(k * args.phase_frames, color="black", ls="--", lw=0.8)
        ax.text((k + 0.5) * args.phase_frames, 1.04, _short(ph["level"]), ha="center", fontsize=8)
    ax.axhline(args.threshold, ls=":", color="grey")
    ax.set_xlim(0, top)
    ax.set_ylim(-0.02, 1.1)
    ax.set_xlabel("frames")
    ax.set_ylabel("success rate (last 100 episodes of the phase)")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trials(summary: dict[str, Any], order: list[str], args: argparse.Namespace, path: pathlib.Path) -> None:
    """The within-trial curve: success (left) and return (right) against the episode index,
    mean over seeds with 95 % bootstrap CIs; solid adapt 0, dashed adapt 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = args.trials
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (what, pre) in zip(axes, (("success", ""), ("return", "return "))):
        for j, name in enumerate(order):
            color = f"C{j}"
            for s, ls in ((0, "-"), (1, "--")):
                entries = [summary[name].get(f"a{s} {pre}ep{i + 1}") for i in range(K)]
                if any(e is None or not e["reached"] for e in entries):
                    continue
                mean = np.array([e["mean"] for e in entries])
                lo, hi = (np.array([e["ci95"][b] for e in entries]) for b in (0, 1))
                x = np.arange(1, K + 1) + (j - len(order) / 2) * 0.03
                ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], ls=ls, marker="o", ms=3, capsize=2, color=color,
                            label=f"{name}, adapt {s}")
        ax.set_xticks(range(1, K + 1))
        ax.set_xlabel("episode of the trial")
        ax.set_ylabel(f"{what} (held-out targets)")
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Hidden-task trials, {_short(args.trial_level)}, K={K}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def aggregate(setting: str, runs: list[dict[str, Any]], args: argparse.Namespace, out: pathlib.Path, *,
              wall_s: float, diverged: dict[str, float] | None = None) -> dict[str, Any]:
    """Writes ``summary.json``, ``summary.md`` and the figure of ``setting``; returns the JSON data.
    ``diverged``: runs that stopped on a non-finite loss or gradient (name: frames reached),
    listed and left out of ``runs``."""
    diverged = diverged or {}
    from metarim.reporting.plotting import plot_curves
    from metarim.reporting.report import finite_or_none, summarize, summary_markdown

    per, tables = {"schedule": tables_schedule, "periodic": tables_periodic, "trials": tables_trials}[setting](runs, args)
    order = [n for n in args.learners if n in per]
    summary = summarize({n: per[n] for n in order}, reference="metarim")
    train_s = sum(r["train_seconds"] + r.get("scratch_seconds", 0.0) for r in runs)
    seeds = sorted({r["seed"] for r in runs})
    cmd = command(args, setting)
    md = [f"# Adaptation comparison: {setting}", ""]
    md += [summary_markdown(summary, cols, title=title) for title, cols in tables]
    what = {"schedule": f"{frames_of(args, setting):,} frames per run ({args.phase_frames:,} per phase; "
                        f"plus one scratch run of {args.phase_frames:,} frames per learner, seed and level after the first)",
            "periodic": f"{frames_of(args, setting):,} frames per run",
            "trials": f"{frames_of(args, setting):,} frames per run; {args.trial_count} trials of K={args.trials} "
                      f"per run and curve"}[setting]
    md.append(f"Command: `{cmd}`; training time summed over the runs {train_s / 60:.1f} min "
              f"(this invocation's wall time {wall_s / 60:.1f} min).\n"
              f"{len(runs)} runs ({', '.join(order)}), seeds {seeds}; {what}; tensor env.\n"
              "Cells: mean over seeds [95 % bootstrap CI], p = Welch t-test against metarim; "
              "\"(m/n seeds)\": the others never got there.\n")
    if diverged:
        md.append("**Diverged** (stopped on a non-finite loss or gradient, left out of the cells): "
                  + ", ".join(f"{n} at {f:,.0f} frames" for n, f in sorted(diverged.items())) + ".\n")
    md.append({"schedule": "Success is the training curve (last 100 episodes, emptied at each switch); AUC and "
                           "success after a switch are means of it over frames; FT = (AUC - AUC_scratch) / "
                           "(1 - AUC_scratch) against the same learner and seed trained on the phase's level alone (for the first level: the "
                           "run's own first phase, which is that run); "
                           "forgetting = success at the end of phase 0 minus the success over the first window of "
                           "its return (docs/schedules.md).\n",
                "periodic": "The metrics.csv rows mix the columns' levels and positions since a switch, so the "
                            "success just after a column switches is not available; AUC is the mean of the "
                            "training success curve over the whole run.\n",
                "trials": "a0: memory only; a1: one step of the learner's own adaptation rule after each episode "
                          "(learners trained with an inner loop only). gain = mean over episodes 2..K minus "
                          "episode 1 (docs/trials.md).\n"}[setting])
    (out / "summary.md").write_text("\n".join(md))
    data = {"setting": setting, "command": cmd, "args": {k: v for k, v in vars(args).items() if k != "argv"},
            "frames_per_run": frames_of(args, setting), "summary": summary, "tables": tables,
            "runs": [{k: v for k, v in r.items() if k != "curve"} for r in runs],
            "train_seconds_summed": train_s, "wall_seconds": wall_s, "diverged": diverged}
    if setting == "schedule":
        data["schedule"] = four_phase(args)
        plot_schedule(runs, order, args, out / "curves.png")
    elif setting == "periodic":
        data["schedule"] = json.loads(PERIODIC.read_text())
        curves = {n: [tuple(r["curve"]) for r in runs if r["learner"] == n] for n in order}
        plot_curves(curves, out / "curves.png", threshold=args.threshold,
                    title=f"periodic mode, {frames_of(args, setting):,} frames/run")
    else:
        plot_trials(summary, order, args, out / "trials.png")
    (out / "summary.json").write_text(json.dumps(finite_or_none(data), indent=1, allow_nan=False))
    return data


def run_setting(setting: str, args: argparse.Namespace) -> int:
    """Trains, measures and reports one setting; returns the exit code."""
    from metarim.sweep import expand_sweep, run_sweep

    t0 = time.perf_counter()
    out = pathlib.Path(args.out) / setting
    try:
        todo = [run for spec in sweep_specs(args, setting) for run in expand_sweep(spec)]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = run_sweep(todo, out, backend=args.backend, max_parallel=args.jobs)
    failed = {n: r["error"] for n, r in results.items() if r["status"] not in ("done", "skipped")}
    learners = {f"{name}-s{seed}" for seed in args.seeds for name in args.learners}
    # a learner run that stopped on a non-finite loss or gradient is a result (it diverged):
    # reported with the frames it reached and left out of the cells; any other failure is not
    diverged = {n: _frames_reached(out / "runs" / n) for n, e in failed.items() if n in learners and "non-finite" in e}
    if failed:
        print(f"{setting}: runs not finished (rerun to retry): {failed}", file=sys.stderr)
        if len(diverged) < len(failed):
            return 1
    measure = {"schedule": measure_schedule, "periodic": measure_periodic, "trials": measure_trials}[setting]
    runs = [measure(name, seed, args, out / "runs") for seed in args.seeds for name in args.learners
            if f"{name}-s{seed}" not in diverged]
    aggregate(setting, runs, args, out, wall_s=time.perf_counter() - t0, diverged=diverged)
    print((out / "summary.md").read_text())
    return 1 if diverged else 0


def _frames_reached(folder: pathlib.Path) -> float:
    """The frames of the last ``metrics.csv`` row of a run folder (0 without one)."""
    rows = _rows(folder) if (folder / "metrics.csv").is_file() else []
    return float(rows[-1]["frames"]) if rows else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for setting in SETTINGS if args.setting == "all" else (args.setting,):
        code = run_setting(setting, args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
