"""Easy → hard transfer: Meta-RIM against PPO+RIM, PPO+LSTM, MAML and Reptile.

For each family of :data:`metarim.evaluation.transfer.TRANSFER_FAMILIES` (GoToLocalS6N2 →
S8N7 / GoToLocal, DoorKey 5×5 → 8×8 / 16×16, MultiRoom N2-S4 → N4-S5, Empty 5×5 → 16×16)
every learner is trained on the small level (the source) for the same frame budget with
each seed, on the tensor env; then each trained policy is measured on every larger level
of its family (the targets) with :func:`metarim.evaluation.transfer.transfer`:

* success and mean return zero-shot (``k = 0``) and after ``k = 1, 2, 5`` adaptation
  steps on the target, each learner with its own rule (Meta-RIM: masked SGD on the active
  modules; MAML: SGD; Reptile and PPO: Adam), each step on a fresh on-policy rollout;
* success on the source level itself (the baseline the transfer is read against).

The learners (name → ``TrainConfig`` overrides, with a note on each) are those of
``examples/sweeps/gotolocal.json``.

Outputs in ``--out`` (default ``results/transfer/``): ``summary.json`` (strict JSON:
non-finite numbers are ``null``), ``summary.md`` (per family, success and return tables:
mean over seeds with a 95 % bootstrap CI, Welch p-value against Meta-RIM; per target also the
adaptation gain, success at ``k = 5`` minus zero-shot, of each run), ``transfer.png``
(success against adaptation steps, one panel per target), the run folders
``<family>/runs/<learner>-s<seed>/`` (trained by :func:`metarim.sweep.run_sweep`: ``--jobs``
at once, finished runs skipped, interrupted ones resumed from their checkpoints) and their
measurements ``<family>/runs/<learner>-s<seed>.json``; a run whose JSON exists (same
frames, episodes, evaluation backend and envs) is not measured again.

Usage::

    python examples/transfer_meta.py --quick      # 2 families, 2 learners, 1 seed, < 60 s
    python examples/transfer_meta.py --frames 300000 --seeds 0 1 2 3 4 --jobs 2
    python examples/transfer_meta.py --report-only   # the summary of what is measured so far
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

from metarim.sweep.report import training_seconds as report_seconds

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gotolocal_meta import learner_overrides, train_sweep  # noqa: E402  (the same overrides and quick sizes)

SWEEP = pathlib.Path(__file__).resolve().parent / "sweeps" / "gotolocal.json"
SPEC: dict[str, Any] = json.loads(SWEEP.read_text())
LEARNERS: dict[str, dict[str, Any]] = SPEC["learners"]  # name: TrainConfig overrides, notes in the file
DEFAULT_LEARNERS = ["metarim", "rim", "lstm", "maml", "reptile"]
QUICK_LEARNERS = ["metarim", "lstm"]
QUICK_FAMILIES = ["gotolocal", "multiroom"]  # short target episodes (64 and 120 steps): the quick mode's budget
ADAPT_STEPS = (0, 1, 2, 5)
MEASURE_KEYS = ("episodes", "eval_backend", "eval_envs")  # a saved measurement with other values is redone
DEFAULT_FRAMES = 300_000


def _families() -> dict[str, Any]:
    from metarim.evaluation.transfer import TRANSFER_FAMILIES

    return TRANSFER_FAMILIES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    families = list(_families())
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"tiny budget: families {QUICK_FAMILIES}, learners {QUICK_LEARNERS}, 1 seed (< 60 s)")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="training frames per run (on the source)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--learners", nargs="+", default=DEFAULT_LEARNERS, choices=list(LEARNERS),
                   help=f"learners of {SWEEP.name} (its notes say what each is)")
    p.add_argument("--families", nargs="+", default=families, choices=families)
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per level and k")
    p.add_argument("--eval-envs", type=int, default=128, help="envs each evaluation steps at once (at most --episodes)")
    p.add_argument("--out", default="results/transfer")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once (metarim sweep --max-parallel; --quick: 2 unless given)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="metarim sweep backend")
    p.add_argument("--env-backend", choices=("minigrid", "tensor"), default="tensor",
                   help="training envs (tensor: the same episodes as minigrid, batched in torch)")
    p.add_argument("--eval-backend", choices=("auto", "minigrid", "tensor"), default="auto",
                   help="envs of the measurements (auto: tensor on its levels, else minigrid)")
    p.add_argument("--report-only", action="store_true",
                   help="train and measure nothing: write the summary from the measurements already in --out "
                        "(the runs still missing are listed)")
    p.add_argument("--source-min", type=float, default=0.0,
                   help="tables of the runs whose success on the source is at least this (e.g. 0.9: transfer of "
                        "what was learned); the runs left out are listed. Measurements are unchanged")
    args = p.parse_args(argv)
    if args.quick:
        args.frames = min(args.frames, 512)
        args.seeds = args.seeds[:1] if "--seeds" in argv else [0]
        args.episodes = min(args.episodes, 4)
        if "--learners" not in argv:
            args.learners = QUICK_LEARNERS
        if "--families" not in argv:
            args.families = QUICK_FAMILIES
        if "--jobs" not in argv:
            args.jobs = 2
    if not 0.0 <= args.source_min <= 1.0:
        p.error(f"--source-min {args.source_min} must be a success rate in [0, 1]")
    for flag in ("episodes", "eval_envs"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be >= 1")
    return args


def sweep_spec(args: argparse.Namespace, family: str) -> dict[str, Any]:
    """The sweep of one family: the learners (with the ``--quick`` sizes) on its source."""
    learners = learner_overrides(args.learners, args.quick)
    return {"base": {**SPEC["base"], "frames": args.frames, "env_backend": args.env_backend},
            "levels": [_families()[family].source], "seeds": list(args.seeds), "learners": learners}


def training_seconds(folder: pathlib.Path) -> float:
    """Seconds spent training, from ``metrics.csv``: ``collect_s + update_s`` where the
    learner logs them, else each row's new frames over its ``fps``."""
    import csv

    with open(folder / "metrics.csv") as f:
        return report_seconds(list(csv.DictReader(f))) or 0.0


def measure(name: str, seed: int, family: str, args: argparse.Namespace, folder: pathlib.Path) -> dict[str, Any]:
    """Transfer of one trained run (its newest checkpoint) to its family's targets."""
    import torch

    from metarim.algorithms import learner_class
    from metarim.evaluation.evaluate import load_run
    from metarim.evaluation.transfer import transfer

    config, policy, vocab, state = load_run(folder)
    torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    fam = _families()[family]
    say = lambda s: print(f"[{family} {name} s{seed}]{s}", file=sys.stderr, flush=True)  # noqa: E731
    rates = learner_class(config.algo).adaptation_rates(state)
    common = {"episodes": args.episodes, "backend": args.eval_backend, "eval_envs": args.eval_envs, "rates": rates}
    source = transfer(policy, config, vocab, fam.source, steps=(0,), seed=20_000 + seed, **common)[0]
    say(f"  source {fam.source}: success {source['success_rate']:.2f}")
    targets = {}
    for lv in fam.targets:
        say(f"  target {lv}")
        res = transfer(policy, config, vocab, lv, steps=ADAPT_STEPS, seed=10_000 + seed, log=say, **common)
        targets[lv] = {str(k): r for k, r in res.items()}
    train_s = training_seconds(folder)
    return {"learner": name, "seed": seed, "family": family, "config": config.to_dict(),
            "episodes": args.episodes, "eval_backend": args.eval_backend, "eval_envs": args.eval_envs,
            "source": source, "transfer": targets,
            "train_seconds": train_s, "measure_seconds": time.perf_counter() - t0}


def load_measurement(path: pathlib.Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """The measurement saved at ``path`` if it was made with this invocation's frames and
    :data:`MEASURE_KEYS`, else None (absent, or to be redone)."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    measured = [saved.get("config", {}).get("frames")] + [saved.get(k) for k in MEASURE_KEYS]
    return saved if measured == [args.frames] + [getattr(args, k) for k in MEASURE_KEYS] else None


def _short(level: str) -> str:
    return level.replace("BabyAI-", "").replace("MiniGrid-", "").removesuffix("-v0")


def metric(level: str, k: int | str | None, what: str = "success") -> str:
    """Metric name in ``summary.json``: ``"<level> k=<k>"`` (success), ``"return <level> k=<k>"``;
    ``k=None`` is the source level, ``k="gain"`` the adaptation gain (:data:`GAIN`)."""
    base = f"{level} source" if k is None else f"{level} gain" if k == "gain" else f"{level} k={k}"
    return base if what == "success" else f"return {base}"


GAIN = (ADAPT_STEPS[-1], ADAPT_STEPS[0])
"""The adaptation gain of a run on a target is its number at ``k = 5`` minus its number at
``k = 0`` (zero-shot), paired: both are measured on the same evaluation episodes."""


def gain(by_k: dict[str, dict[str, float]], what: str) -> float | None:
    """``by_k[5] - by_k[0]`` of ``success_rate`` or ``return_mean`` (``what``); None when
    either is missing.

    >>> gain({"0": {"success_rate": 0.25}, "5": {"success_rate": 0.75}}, "success_rate")
    0.5
    """
    hi, lo = (by_k.get(str(k), {}).get(what) for k in GAIN)
    return None if hi is None or lo is None else hi - lo


def aggregate(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, out: pathlib.Path, *,
              wall_s: float, command: str, missing: list[str] | None = None) -> dict[str, Any]:
    """Writes ``summary.json``, ``summary.md`` and ``transfer.png``; returns the JSON data.
    ``command`` and ``wall_s`` (this invocation's) are written beside the tables, and
    ``missing`` (``<family>/<learner>-s<seed>`` not measured yet) below them. With
    ``--source-min`` the tables hold only the runs that reached it on the source; the others
    are listed as left out (the run time still counts them)."""
    missing = missing or []
    from metarim.reporting.report import finite_or_none, summarize, summary_markdown

    families, run_s, excluded = {}, 0.0, []
    md = ["# Easy → hard transfer", ""]
    for family, rs in runs.items():
        fam = _families()[family]
        run_s += sum(r["train_seconds"] + r["measure_seconds"] for r in rs)
        excluded += [f"{family}/{r['learner']}-s{r['seed']} ({r['source']['success_rate']:.2f})"
                     for r in rs if r["source"]["success_rate"] < args.source_min]
        rs = [r for r in rs if r["source"]["success_rate"] >= args.source_min]
        if not rs:
            continue
        per: dict[str, dict[str, list[Any]]] = {}
        for r in rs:
            m = per.setdefault(r["learner"], {})
            m.setdefault(metric(fam.source, None), []).append(r["source"]["success_rate"])
            m.setdefault(metric(fam.source, None, "return"), []).append(r["source"]["return_mean"])
            for lv, by_k in r["transfer"].items():
                for k, res in by_k.items():
                    m.setdefault(metric(lv, int(k)), []).append(res["success_rate"])
                    m.setdefault(metric(lv, int(k), "return"), []).append(res["return_mean"])
                m.setdefault(metric(lv, "gain"), []).append(gain(by_k, "success_rate"))
                m.setdefault(metric(lv, "gain", "return"), []).append(gain(by_k, "return_mean"))
        per = {n: per[n] for n in args.learners if n in per}
        summary = summarize(per, reference="metarim")
        families[family] = {"source": fam.source, "targets": list(fam.targets), "summary": summary,
                            "runs": sorted(rs, key=lambda r: (r["seed"], args.learners.index(r["learner"])))}
        for what in ("success", "return"):
            cols = [(metric(fam.source, None, what), f"{_short(fam.source)} (source)")]
            for lv in fam.targets:
                cols += [(metric(lv, k, what), f"{_short(lv)} k={k}") for k in ADAPT_STEPS]
                cols.append((metric(lv, "gain", what), f"{_short(lv)} gain {GAIN[0]}−{GAIN[1]}"))
            md.append(summary_markdown(summary, cols, title=f"{family}: {what} ({_short(fam.source)} → "
                                                            f"{' / '.join(_short(t) for t in fam.targets)})"))
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    md.append(f"Command: `{command}`; "
              f"wall time of this invocation {wall_s / 60:.1f} min; run time summed over the runs "
              f"(training and measuring) {run_s / 60:.1f} min.\n"
              f"{sum(len(rs) for rs in runs.values())} runs, {args.frames:,} training frames each on the source "
              f"({args.env_backend} env), seeds {seeds}; {args.episodes} evaluation episodes per level and k "
              f"({args.eval_backend} env backend).\n"
              "Cells: mean over seeds [95 % bootstrap CI], p = Welch t-test against metarim. k = adaptation "
              "steps on the target with the learner's own rule (0: zero-shot), each on a fresh on-policy rollout "
              f"of the target; source = success on the training level; gain = k={GAIN[0]} minus k={GAIN[1]} of "
              "each run (the same evaluation episodes), then averaged.\n"
              + (f"Missing (not yet trained or measured; rerun without --report-only): {', '.join(missing)}.\n"
                 if missing else "")
              + (f"Left out by --source-min {args.source_min} (success on the source in brackets): "
                 f"{', '.join(excluded)}.\n" if excluded else ""))
    (out / "summary.md").write_text("\n".join(md))
    data = {"args": vars(args), "command": command, "adapt_steps": list(ADAPT_STEPS), "gain": list(GAIN),
            "missing": missing, "excluded": excluded, "families": families,
            "run_seconds_summed": run_s, "wall_seconds": wall_s}
    (out / "summary.json").write_text(json.dumps(finite_or_none(data), indent=1, default=float, allow_nan=False))
    plot_transfer(families, args.learners, out / "transfer.png")
    return data


def plot_transfer(families: dict[str, Any], learners: list[str], path: pathlib.Path) -> None:
    """Success against adaptation steps, one panel per (family, target), one line per
    learner (mean over seeds, 95 % bootstrap CI as error bars); the dotted line is the
    learner's success on the source level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f, lv) for f, d in families.items() for lv in d["targets"]]
    if not panels:  # every run left out by --source-min
        return
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (family, lv) in zip(axes.flat, panels):
        d = families[family]
        for i, name in enumerate(n for n in learners if n in d["summary"]):
            s = d["summary"][name]
            entries = [s[metric(lv, k)] for k in ADAPT_STEPS]
            mean = [e["mean"] for e in entries]
            err = [[e["mean"] - e["ci95"][0] for e in entries], [e["ci95"][1] - e["mean"] for e in entries]]
            x = [j + (i - len(learners) / 2) * 0.06 for j in range(len(ADAPT_STEPS))]
            line = ax.errorbar(x, mean, yerr=err, marker="o", capsize=2, label=name)
            ax.axhline(s[metric(d["source"], None)]["mean"], ls=":", color=line[0].get_color(), lw=0.8)
        ax.set_xticks(range(len(ADAPT_STEPS)), [str(k) for k in ADAPT_STEPS])
        ax.set_xlabel("adaptation steps on the target")
        ax.set_ylabel("success")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{_short(d['source'])} → {_short(lv)}", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    args = parse_args(argv)
    command = shlex.join(["python", "examples/transfer_meta.py", *(sys.argv[1:] if argv is None else argv)])
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    missing: list[str] = []
    for family in args.families:
        folder = out / family
        if not args.report_only:
            code = train_sweep(sweep_spec(args, family), folder, args, label=f"{family}: ")
            if code:
                return code
        found = []
        for seed in args.seeds:
            for name in args.learners:
                path = folder / "runs" / f"{name}-s{seed}.json"
                saved = load_measurement(path, args)
                if saved is not None:
                    print(f"[{family} {name} s{seed}] done earlier, reusing {path}", file=sys.stderr)
                    found.append(saved)
                    continue
                if args.report_only:
                    missing.append(f"{family}/{name}-s{seed}")
                    continue
                print(f"[{family} {name} s{seed}] measuring", file=sys.stderr, flush=True)
                run = measure(name, seed, family, args, folder / "runs" / f"{name}-s{seed}")
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(run, default=float))
                os.replace(tmp, path)
                found.append(run)
        if found:
            runs[family] = found
    if not runs:
        print(f"error: no measurement in {out} for these families, learners and seeds: "
              "run without --report-only first", file=sys.stderr)
        return 2
    if missing:
        print(f"missing (not in the summary): {', '.join(missing)}", file=sys.stderr)
    aggregate(runs, args, out, wall_s=time.perf_counter() - t0, command=command, missing=missing)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
