"""Meta-RIM against MAML, Reptile, a plain RIM and an LSTM on BabyAI GoToLocal.

Every learner is trained for the same frame budget on the same training level with each
seed; then each is measured the same way:

* learning curve: training success rate (last 100 episodes) against frames;
* frames to reach 0.8 success (or "not reached"), and final success;
* frames to reach a return of 0.5, 0.8 and 0.9 (the paper's headline is in return), first
  touched and held to the end of the run (a noisy curve may touch a level and fall back);
* fast adaptation: success on a held-out task (a held-out seed range of the training
  level) after 0, 1, 2 and 5 inner updates, each learner with its own rule
  (:mod:`metarim.evaluation.adaptation`);
* zero-shot success on harder levels, without any update;
* module activity of the RIM-based learners per mission word and over time.

The learners and their variants (name → ``TrainConfig`` overrides, with a note on each)
are the sweep file ``examples/sweeps/gotolocal.json``; its ``base`` and ``seeds`` are
this script's defaults for the training level, the frame budget and the seeds.

Outputs in ``--out`` (default ``results/gotolocal/``): ``curves.png`` (success) and
``returns.png`` against frames, ``summary.json``,
``summary.md`` (mean with 95 % bootstrap CI over seeds, Welch p-value against
Meta-RIM), ``modules.png``, the run folders ``runs/<learner>-s<seed>/`` (trained by
``metarim sweep``'s runner, :func:`metarim.sweep.run_sweep`: ``--jobs`` at once, finished runs
skipped, interrupted ones resumed from their checkpoints) and their measurements
``runs/<learner>-s<seed>.json``; a run whose JSON exists is not measured again.

Usage::

    python examples/gotolocal_meta.py --quick                 # all learners, < 3 min
    python examples/gotolocal_meta.py --frames 150000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
from typing import Any

from metarim.sweep.report import training_seconds  # noqa: F401  (re-exported to the other examples)

SWEEP = pathlib.Path(__file__).resolve().parent / "sweeps" / "gotolocal.json"
SPEC: dict[str, Any] = json.loads(SWEEP.read_text())
LEARNERS: dict[str, dict[str, Any]] = SPEC["learners"]  # name: TrainConfig overrides, notes in the file
DEFAULT_LEARNERS = ["metarim", "maml", "reptile", "rim", "lstm"]
QUICK: dict[str, Any] = {"num_envs": 8, "num_steps": 32, "chunk_length": 16, "batch_size": 64, "meta_batch": 2,
                         "hidden_size": 64}
ADAPT_STEPS = (0, 1, 2, 5)
RETURN_LEVELS = (0.5, 0.8, 0.9)  # frames to these returns: the paper states its headline in return


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budget, 1 seed, few episodes (< 3 min)")
    p.add_argument("--frames", type=int, default=SPEC["base"]["frames"], help="frames per run")
    p.add_argument("--seeds", type=int, nargs="+", default=SPEC["seeds"])
    p.add_argument("--learners", nargs="+", default=DEFAULT_LEARNERS, choices=list(LEARNERS),
                   help=f"learners of {SWEEP.name} (its notes say what each is)")
    p.add_argument("--train-level", default=SPEC["base"]["env"])
    p.add_argument("--zero-shot", nargs="+", default=["BabyAI-GoToLocalS8N7-v0", "BabyAI-GoToLocal-v0"])
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per measurement")
    p.add_argument("--out", default="results/gotolocal")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once (metarim sweep --max-parallel)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="metarim sweep backend")
    p.add_argument("--env-backend", choices=("minigrid", "tensor"), default="minigrid",
                   help="training envs: minigrid, or the batched torch GoTo levels (same episodes, "
                        "~16x faster; evaluation always uses minigrid)")
    args = p.parse_args(argv)
    if args.quick:
        args.frames = min(args.frames, 1024)
        args.seeds = args.seeds[:1] if "--seeds" in (argv or sys.argv) else [0]
        args.episodes = min(args.episodes, 8)
    return args


def learner_overrides(names: list[str], quick: bool, table: dict[str, dict[str, Any]] | None = None
                      ) -> dict[str, dict[str, Any]]:
    """``names``' overrides from ``table`` (default: this sweep file's learners), with the
    ``--quick`` sizes when ``quick`` (also used by transfer_meta.py and adaptation_meta.py)."""
    learners = {}
    for name in names:
        over = dict((LEARNERS if table is None else table)[name])
        if quick:
            over.update(QUICK)
            if name == "reptile":
                over["inner_steps"] = 2
        learners[name] = over
    return learners


def sweep_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep file narrowed to ``args``: its learners (with the ``--quick`` sizes), the
    training level, budget, seeds and env backend of this invocation."""
    learners = learner_overrides(args.learners, args.quick)
    return {"base": {**SPEC["base"], "frames": args.frames, "env_backend": args.env_backend},
            "levels": [args.train_level], "seeds": list(args.seeds), "learners": learners}


def train_sweep(spec: dict[str, Any], out: pathlib.Path, args: argparse.Namespace, *, label: str = "") -> int:
    """Trains the runs of the sweep ``spec`` into ``out`` (``--jobs`` at once on
    ``--backend``; finished runs skipped, interrupted ones resumed). Returns 0, or the exit
    code: 2 for a refused spec (a one-line error), 1 for a run that did not finish."""
    from metarim.sweep import expand_sweep, run_sweep

    try:
        todo = expand_sweep(spec)  # runs <learner>-s<seed>, seeds outermost
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = run_sweep(todo, out, backend=args.backend, max_parallel=args.jobs)
    failed = {n: r["error"] for n, r in results.items() if r["status"] not in ("done", "skipped")}
    if failed:
        print(f"{label}runs not finished (rerun to retry): {failed}", file=sys.stderr)
        return 1
    return 0


def measure(name: str, seed: int, args: argparse.Namespace, folder: pathlib.Path) -> dict[str, Any]:
    """Measures one trained run folder (its last checkpoint); returns plain data."""
    import csv

    import torch

    from metarim.algorithms import learner_class
    from metarim.algorithms.common import make_task_samplers
    from metarim.evaluation.adaptation import fast_adaptation, module_activity, zero_shot
    from metarim.evaluation.evaluate import load_run

    config, policy, vocab, state = load_run(folder)
    torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    with open(folder / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    curve = [[float(r[k]) for k in ("frames", "success_rate", "return_mean", "episodes")] for r in rows]
    train_s = training_seconds(rows)
    say = lambda s: print(f"[{name} s{seed}]{s}", file=sys.stderr, flush=True)  # noqa: E731
    held = make_task_samplers(config)[1].tasks[0]
    adapt = fast_adaptation(policy, config, held, vocab, steps=ADAPT_STEPS, episodes=args.episodes,
                            seed=10_000 + seed, log=say, rates=learner_class(config.algo).adaptation_rates(state))
    shots = zero_shot(policy, args.zero_shot, vocab, episodes=args.episodes, seed=20_000 + seed)
    for lv, r in shots.items():
        say(f"  zero-shot {lv}: success {r['success_rate']:.2f}")
    activity = None
    if config.memory == "rim":
        activity = module_activity(policy, held.__class__(config.env), vocab, episodes=max(args.episodes, 16),
                                   seed=30_000 + seed)
        activity.pop("raw")
    return {
        "learner": name, "seed": seed, "config": config.to_dict(), "train_seconds": train_s,
        "total_seconds": train_s + time.perf_counter() - t0, "curve": curve, "held_out_task": held.to_dict(),
        "adaptation": {str(k): v for k, v in adapt.items()}, "zero_shot": shots, "activity": activity,
    }


def measure_all(args: argparse.Namespace, out: pathlib.Path) -> list[dict[str, Any]]:
    """Measures every trained run of ``args`` (:func:`measure`) into
    ``runs/<learner>-s<seed>.json`` (strict JSON: non-finite numbers are ``null``); a run
    whose JSON exists for the same frame budget is read back instead."""
    from metarim.reporting.report import finite_or_none

    runs = []
    for seed in args.seeds:
        for name in args.learners:
            path = out / "runs" / f"{name}-s{seed}.json"
            if path.is_file():
                saved = json.loads(path.read_text())
                if saved.get("config", {}).get("frames") == args.frames:
                    print(f"[{name} s{seed}] done earlier, reusing {path}", file=sys.stderr)
                    runs.append(saved)
                    continue
            print(f"[{name} s{seed}] measuring", file=sys.stderr, flush=True)
            run = measure(name, seed, args, out / "runs" / f"{name}-s{seed}")
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(finite_or_none(run), default=float, allow_nan=False))
            os.replace(tmp, path)
            runs.append(run)
    return runs


def aggregate(runs: list[dict[str, Any]], args: argparse.Namespace, out: pathlib.Path) -> dict[str, Any]:
    """Writes ``summary.json`` (strict JSON: non-finite numbers are ``null``), ``summary.md``,
    ``curves.png``, ``returns.png`` and ``modules.png``."""
    from metarim.reporting.plotting import plot_curves, plot_modules
    from metarim.reporting.report import (
        finite_or_none,
        frames_held_at,
        frames_to_threshold,
        summarize,
        summary_markdown,
    )
    from metarim.sweep.report import curve_metrics

    per: dict[str, dict[str, list[Any]]] = {}
    curves: dict[str, list[tuple[list[float], list[float]]]] = {}
    returns: dict[str, list[tuple[list[float], list[float]]]] = {}
    window = 20 if args.quick else 100  # a point counts once this many episodes were seen
    for r in runs:
        frames, success, rets, episodes = (list(col) for col in zip(*r["curve"]))
        c = curve_metrics(frames, success, rets, episodes, window=window, threshold=0.8)
        m = per.setdefault(r["learner"], {})
        m.setdefault("frames_to_0.8", []).append(c["frames_to_0.8"])
        m.setdefault("final_success", []).append(c["final_success"])
        for t in RETURN_LEVELS:
            m.setdefault(f"frames_to_return_{t:g}", []).append(frames_to_threshold(c["frames"], c["returns"], t))
            m.setdefault(f"frames_held_return_{t:g}", []).append(frames_held_at(c["frames"], c["returns"], t))
        m.setdefault("final_return", []).append(c["final_return"])
        for k, res in r["adaptation"].items():
            m.setdefault(f"adapt_{k}", []).append(res["success_rate"])
        for lv, res in r["zero_shot"].items():
            m.setdefault(f"zero_shot:{lv}", []).append(res["success_rate"])
        curves.setdefault(r["learner"], []).append((c["frames"], c["success"]))
        returns.setdefault(r["learner"], []).append((c["frames"], c["returns"]))
    order = [n for n in args.learners if n in per]
    per = {n: per[n] for n in order}
    summary = summarize(per, reference="metarim")
    cols = [("frames_to_0.8", "frames to 0.8"), ("final_success", "final success")]
    cols += [(f"frames_to_return_{t:g}", f"frames to return {t:g}") for t in RETURN_LEVELS]
    cols += [(f"frames_held_return_{t:g}", f"return held ≥ {t:g} from") for t in RETURN_LEVELS]
    cols += [("final_return", "final return")]
    cols += [(f"adapt_{k}", f"adapt k={k}") for k in ADAPT_STEPS]
    cols += [(f"zero_shot:{lv}", f"zero-shot {lv.replace('BabyAI-', '')}") for lv in args.zero_shot]
    run_time = sum(r["total_seconds"] for r in runs)  # summed over runs: not wall-clock with --jobs > 1
    md = summary_markdown(summary, cols, title=f"GoToLocal comparison ({args.train_level})")
    md += (f"\n{len(runs)} runs, {args.frames:,} frames each, seeds {sorted({r['seed'] for r in runs})}; "
           f"{args.episodes} evaluation episodes per measurement; run time summed over the runs (training and measuring) "
           f"{run_time / 60:.1f} min.\n"
           "Cells: mean over seeds [95 % bootstrap CI], p = Welch t-test against metarim.\n"
           "Success (training curve) is the mean over the last 100 training episodes; adaptation "
           "is on a held-out seed range of the training level.\n")
    (out / "summary.md").write_text(md)
    data = {"args": {k: v for k, v in vars(args).items()}, "summary": summary,
            "runs": [{k: v for k, v in r.items() if k not in ("curve", "activity")} for r in runs],
            "run_seconds_summed": run_time}
    # strict JSON: a NaN (no Welch test with one seed, no loss before any update) is null
    (out / "summary.json").write_text(json.dumps(finite_or_none(data), indent=1, default=float, allow_nan=False))
    plot_curves({n: curves[n] for n in order}, out / "curves.png",
                title=f"{args.train_level}, {args.frames:,} frames/run")
    plot_curves({n: returns[n] for n in order}, out / "returns.png", ylabel="return (last 100 episodes)",
                title=f"{args.train_level}, {args.frames:,} frames/run", threshold=None)
    # one seed per learner (the lowest): module identities are not aligned across seeds,
    # so an average over seeds would blur exactly the specialisation the figure is for
    acts = {}
    for n in order:
        rs = sorted((r for r in runs if r["learner"] == n and r["activity"]), key=lambda r: r["seed"])
        if rs:
            acts[f"{n} (seed {rs[0]['seed']})"] = rs[0]["activity"]
    if acts:
        plot_modules(acts, out / "modules.png")
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    code = train_sweep(sweep_spec(args), out, args)
    if code:
        return code
    runs = measure_all(args, out)
    aggregate(runs, args, out)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
