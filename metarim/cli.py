"""The ``metarim`` command line: ``train``, ``eval``, ``render``, ``sweep`` and ``sweep-report``.

Every :class:`~metarim.config.TrainConfig` field is a ``train`` flag (``num_envs`` →
``--num-envs``); ``--config FILE`` reads a JSON object of the same keys and explicit
flags override it. Bad input of any kind prints one line ``metarim: error: ...`` on
stderr and exits with status 2, before anything is written (set ``METARIM_DEBUG=1`` for
the traceback). A run folder is never overwritten without ``--overwrite``.

Example:
    >>> main(["train", "--algo", "nope", "--out", "/tmp/x"])
    Traceback (most recent call last):
    ...
    SystemExit: 2
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import os
import pathlib
import shutil
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = ["main"]


class UsageError(Exception):
    """Bad user input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string after each field)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = str(b.value.value)  # type: ignore[union-attr]
    return docs


def _parser() -> argparse.ArgumentParser:
    from metarim.config import TrainConfig

    p = _Parser(prog="metarim", description="Meta-RIM toolkit: train, evaluate, render.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a learner on a MiniGrid/BabyAI level")
    docs = _field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "algo_options":
            continue
        flag, kw = "--" + f.name.replace("_", "-"), {"default": None, "help": docs.get(f.name)}
        if f.type == "bool":
            t.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            t.add_argument(flag, type={"int": int, "float": float, "float | None": float}.get(str(f.type), str), **kw)
    t.add_argument("--out", required=True, help="run folder")
    t.add_argument("--config", help="JSON file of config keys (flags override it)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    for name in ("eval", "render"):
        e = sub.add_parser(name, help=f"{name} a trained run")
        e.add_argument("--run", required=True, help="run folder")
        e.add_argument("--env", help="level id (default: the training level)")
        e.add_argument("--episodes", type=int, default=100 if name == "eval" else 1)
        e.add_argument("--seed", type=int, default=1_000_003, help="env and action seed")
        e.add_argument("--greedy", action="store_true", help="argmax actions")
        if name == "eval":
            e.add_argument("--num-envs", type=int, default=16)
            e.add_argument("--adapt-steps", type=int, nargs="+", metavar="K",
                           help="also: success on the run's held-out task after K inner updates, "
                                "with the learner's own rule (e.g. 0 1 2 5)")
            e.add_argument("--zero-shot", nargs="+", metavar="LEVEL",
                           help="also: success on these levels without any update")
        else:
            e.add_argument("--out", required=True, help="GIF file to write")
            e.add_argument("--fps", type=int, default=6)
    from metarim.sweep.cli import add_sweep_parsers

    add_sweep_parsers(sub)
    return p


def _build_config(args: argparse.Namespace) -> Any:
    from metarim.algorithms import LEARNERS
    from metarim.config import TrainConfig
    from metarim.envs.minigrid import check_level
    from metarim.rl.memory import MEMORY_CORES

    out = pathlib.Path(args.out)
    if args.resume:
        cfg_file = out / "config.json"
        if not cfg_file.is_file():
            raise UsageError(f"--resume: {out} is not a metarim run (no config.json)")
        data = json.loads(cfg_file.read_text())["config"]
        changed = {k: v for k, v in vars(args).items() if k in data and v is not None and v != data[k]}
        if set(changed) - {"frames"}:
            raise UsageError(f"--resume keeps the run's config; drop {sorted(changed)} (only --frames may change)")
        data.update(changed)
    else:
        data = {}
        if args.config:
            try:
                data = json.loads(pathlib.Path(args.config).read_text())
            except OSError as e:
                raise UsageError(f"cannot read --config {args.config}: {e.strerror}") from None
            except json.JSONDecodeError as e:
                raise UsageError(f"--config {args.config} is not valid JSON ({e.msg}, line {e.lineno})") from None
            if not isinstance(data, dict):
                raise UsageError(f"--config {args.config} must hold a JSON object")
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        data.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    config = TrainConfig.from_dict(data)
    if config.algo not in LEARNERS:
        raise UsageError(f"unknown --algo {config.algo!r}; choose one of {sorted(LEARNERS)}")
    if config.memory not in MEMORY_CORES:
        raise UsageError(f"unknown --memory {config.memory!r}; choose one of {sorted(MEMORY_CORES)}")
    check_level(config.env)
    return config


def _prepare_out(args: argparse.Namespace) -> pathlib.Path:
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    if not args.resume and out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise UsageError(f"--out {out} exists; pass --resume to continue it or --overwrite to replace it")
        if not (out / "config.json").is_file():
            raise UsageError(f"--overwrite refuses to delete {out}: it is not a metarim run")
        shutil.rmtree(out)
    parent = out if out.is_dir() else out.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out} is not writable")
    return out


def _cmd_train(args: argparse.Namespace) -> Any:
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    config = _build_config(args)
    out = _prepare_out(args)
    writer = None
    if args.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("--tensorboard needs the optional extra: pip install 'metarim[tensorboard]'") from None
        writer = SummaryWriter  # constructed once the folder exists
    from metarim.train import Trainer

    return Trainer(config, out, resume=args.resume, progress=not args.quiet, tensorboard=writer)


def _cmd_eval_or_render(args: argparse.Namespace) -> int:
    from metarim.envs.minigrid import check_level
    from metarim.evaluation.evaluate import evaluate, load_run, render
    from metarim.tasks.task import Task

    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes} must be >= 1")
    config, policy, vocab, state = load_run(args.run)
    env = args.env or config.env
    check_level(env)
    task = Task(env)
    if args.command == "eval":
        if args.num_envs < 1:
            raise UsageError(f"--num-envs {args.num_envs} must be >= 1")
        if args.adapt_steps and min(args.adapt_steps) < 0:
            raise UsageError(f"--adapt-steps {min(args.adapt_steps)} must be >= 0 (inner updates)")
        for level in args.zero_shot or ():
            check_level(level)
        res = evaluate(policy, task, vocab, episodes=args.episodes, num_envs=args.num_envs,
                       seed=args.seed, greedy=args.greedy)
        res.update(run=str(args.run), frames=int(state["frames"]))
        if args.adapt_steps or args.zero_shot:
            from metarim.evaluation.adaptation import adaptation_report

            res.update(adaptation_report(config, policy, vocab, adapt_steps=args.adapt_steps or (),
                                         zero_shot_levels=args.zero_shot or (), episodes=args.episodes,
                                         seed=args.seed, rates=state.get("inner_lrs")))
        print(json.dumps(res))
        return 0
    target = pathlib.Path(args.out)
    if target.suffix.lower() != ".gif":
        raise UsageError(f"--out {target} must end in .gif")
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
        raise UsageError(f"--out {target}: folder {target.parent} does not exist or is not writable")
    n = render(policy, task, vocab, target, episodes=args.episodes, seed=args.seed, fps=args.fps,
               greedy=args.greedy)
    print(json.dumps({"out": str(target), "frames": n, "episodes": args.episodes}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metarim`` console script; returns (or exits with) a status."""
    try:
        args = _parser().parse_args(argv)
        if args.command == "train":
            trainer = _cmd_train(args)
        elif args.command in ("sweep", "sweep-report"):
            from metarim.sweep.cli import sweep_command

            code = sweep_command(args)
        else:
            code = _cmd_eval_or_render(args)
    except (UsageError, ValueError) as e:
        if os.environ.get("METARIM_DEBUG"):
            raise
        msg = " ".join(str(e).split())
        print(f"metarim: error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "train":
        code = trainer.run()
    if code:
        raise SystemExit(code)
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
