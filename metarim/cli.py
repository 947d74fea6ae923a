"""The ``metarim`` command line: ``train``, ``eval``, ``render``, ``transfer``, ``sweep`` and ``sweep-report``.

Every :class:`~metarim.config.TrainConfig` field is a ``train`` flag (``num_envs`` →
``--num-envs``); ``--config FILE`` reads a JSON object of the same keys and explicit
flags override it. Bad input of any kind prints one line ``metarim: error: ...`` on
stderr and exits with status 2, before anything is written (set ``METARIM_DEBUG=1`` for
the traceback); that ``--out`` can be written is found by writing there, not from
permission bits. A run folder is never overwritten without ``--overwrite``, which
deletes the old run only once the new one is set up; ``render`` replaces its GIF only
once it is complete. The help shows the config field docstrings as plain text.

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
import re
import shutil
import sys
import tempfile
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


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`")


def _plain(text: str) -> str:
    r"""RST inline markup of a docstring as plain one-line text for ``--help``.

    A literal (two backquotes around ``x``) becomes ``x``; ``:role:`~a.b.C``` becomes
    ``C``; ``:role:`a.b.C``` stays ``a.b.C``; ``:role:`title <target>``` becomes
    ``title``; runs of whitespace become one space; ``%`` is escaped for argparse.

    Example:
        >>> _plain("Core: ``lstm`` or\n   :class:`~metarim.envs.worker.WorkerVecEnv`, 5 %")
        'Core: lstm or WorkerVecEnv, 5 %%'
    """

    def role(m: re.Match[str]) -> str:
        short, body = m.group(1), m.group(2).strip()
        if body.endswith(">") and "<" in body:
            return body[: body.index("<")].strip()
        return body.rsplit(".", 1)[-1] if short else body

    text = _ROLE.sub(role, text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    return " ".join(text.split()).replace("%", "%%")


def _parser() -> argparse.ArgumentParser:
    from metarim.config import TrainConfig

    p = _Parser(prog="metarim", description="Meta-RIM toolkit: train, evaluate, render.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a learner on a MiniGrid/BabyAI level")
    docs = _field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        doc = docs.get(f.name)
        flag, kw = "--" + f.name.replace("_", "-"), {"default": None, "help": _plain(doc) if doc else None}
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
            e.add_argument("--trials", type=int, metavar="K",
                           help="also: the within-trial curve, success per episode of hidden-task trials of "
                                "K episodes on the run's held-out targets (docs/trials.md)")
            e.add_argument("--trial-count", type=int, default=64, metavar="N", help="--trials: trials played")
            e.add_argument("--trial-adapt", type=int, nargs="+", default=[0], metavar="S",
                           help="--trials: adaptation steps between a trial's episodes, with the learner's "
                                "own rule (0: memory only), one curve each")
        else:
            e.add_argument("--out", required=True, help="GIF file to write")
            e.add_argument("--fps", type=int, default=6)
    x = sub.add_parser("transfer", help="easy -> hard transfer of a trained run: success on other levels "
                                        "zero-shot and after K adaptation steps")
    x.add_argument("--run", required=True, help="run folder")
    x.add_argument("--level", nargs="+", metavar="LEVEL",
                   help="target levels (default: the larger levels of the run's transfer family)")
    x.add_argument("--adapt-steps", type=int, nargs="+", default=[0, 1, 2, 5], metavar="K",
                   help="adaptation steps on the target, with the learner's own rule (0: zero-shot)")
    x.add_argument("--episodes", type=int, default=64, help="evaluation episodes per target and K")
    x.add_argument("--seed", type=int, default=5_000_011, help="env and action seed")
    x.add_argument("--num-envs", type=int, default=128, help="envs each evaluation steps at once (at most --episodes)")
    x.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    x.add_argument("--env-backend", choices=("auto", "minigrid", "tensor"), default="auto",
                   help="auto: the tensor env on its levels (same episodes, faster), else minigrid")
    from metarim.sweep.cli import add_sweep_parsers

    add_sweep_parsers(sub)
    return p


def _build_config(args: argparse.Namespace) -> Any:
    from metarim.algorithms import LEARNERS, prepare_config
    from metarim.checkpoint import read_run_config
    from metarim.config import TrainConfig
    from metarim.envs.minigrid import check_level
    from metarim.rl.memory import MEMORY_CORES

    out = pathlib.Path(args.out)
    if args.resume:
        cfg_file = out / "config.json"
        if not cfg_file.is_file():
            raise UsageError(f"--resume: {out} is not a metarim run (no config.json)")
        try:  # keys the run predates take their legacy values (config.LEGACY)
            data = TrainConfig.from_dict(read_run_config(out)["config"], legacy=True).to_dict()
        except (TypeError, ValueError) as e:
            raise UsageError(f"--resume: {cfg_file}: {e}") from None
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
    prepare_config(config)  # the learner's checks, and its default inner_lr
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
    _check_writable(out, "--out")
    return out


def _check_writable(folder: pathlib.Path, flag: str) -> None:
    """Creates ``folder`` (and its missing parents) and a file in it, then removes what it made.

    A real write, not ``os.access``: root passes every permission check, yet cannot
    create anything in ``/proc`` or on a read-only mount.
    """
    made: list[pathlib.Path] = []
    try:
        missing = [d for d in (folder, *folder.parents) if not d.exists()]
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".metarim-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(folder) else ""
        raise UsageError(f"{flag} {folder} cannot be written: {e.strerror}{where}; "
                         f"choose a folder you can write to") from None
    finally:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass


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

    # --overwrite: the old run is moved aside, not deleted, until the new one is set up
    old = None
    if args.overwrite and out.is_dir() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        try:
            out.rename(old)
        except OSError as e:
            raise UsageError(f"--overwrite cannot move the old run {out} aside: {e.strerror}") from None
    try:
        trainer = Trainer(config, out, resume=args.resume, progress=not args.quiet, tensorboard=writer)
    except BaseException as e:
        if old is not None:
            shutil.rmtree(out, ignore_errors=True)
            old.rename(out)
        if isinstance(e, OSError):
            raise UsageError(f"cannot write {e.filename or out}: {e.strerror}; "
                             f"choose an --out folder you can write to") from None
        raise
    if old is not None:
        try:
            shutil.rmtree(old)
        except OSError as e:
            print(f"metarim: could not delete the replaced run, now in {old}: {e.strerror}", file=sys.stderr)
    return trainer


def _cmd_eval_or_render(args: argparse.Namespace) -> int:
    from metarim.envs.minigrid import check_level
    from metarim.evaluation.evaluate import evaluate, load_run, render
    from metarim.tasks.task import Task

    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes} must be >= 1")
    if args.command == "render":
        target = pathlib.Path(args.out)
        if target.suffix.lower() != ".gif":
            raise UsageError(f"--out {target} must end in .gif")
        if args.fps < 1:
            raise UsageError(f"--fps {args.fps} must be >= 1")
        if target.is_dir():
            raise UsageError(f"--out {target} is a folder; name a .gif file in it")
        if not target.parent.is_dir():
            raise UsageError(f"--out {target}: folder {target.parent} does not exist; create it first")
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
        if args.trials is not None and (args.trials < 1 or args.trial_count < 1 or min(args.trial_adapt) < 0):
            raise UsageError(f"--trials {args.trials} and --trial-count {args.trial_count} must be >= 1, "
                             f"--trial-adapt {min(args.trial_adapt)} >= 0")
        res = evaluate(policy, task, vocab, episodes=args.episodes, num_envs=args.num_envs,
                       seed=args.seed, greedy=args.greedy)
        res.update(run=str(args.run), frames=int(state["frames"]))
        if args.adapt_steps or args.zero_shot:
            from metarim.algorithms import learner_class
            from metarim.evaluation.adaptation import adaptation_report

            rates = learner_class(config.algo).adaptation_rates(state)
            res.update(adaptation_report(config, policy, vocab, adapt_steps=args.adapt_steps or (),
                                         zero_shot_levels=args.zero_shot or (), episodes=args.episodes,
                                         seed=args.seed, rates=rates))
        if args.trials is not None:
            from metarim.algorithms import learner_class
            from metarim.evaluation.trials import trials_report

            res["trials"] = trials_report(config, policy, vocab, trial_episodes=args.trials,
                                          trials=args.trial_count, adapt_steps=args.trial_adapt, seed=args.seed,
                                          num_envs=args.num_envs,
                                          rates=learner_class(config.algo).adaptation_rates(state))
        print(json.dumps(res))
        return 0
    # rendered into a temp file next to the target, then renamed over it: the folder is
    # known to be writable before rendering, and an existing GIF survives any failure
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".gif")
    except OSError as e:
        raise UsageError(f"--out {target} cannot be written: {e.strerror}; "
                         f"choose a folder you can write to") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would make it, not mkstemp's 0600
    try:
        n = render(policy, task, vocab, tmp, episodes=args.episodes, seed=args.seed, fps=args.fps,
                   greedy=args.greedy)
        os.replace(tmp, target)
    except OSError as e:
        raise UsageError(f"--out {target} cannot be written: {e.strerror}") from None
    finally:
        pathlib.Path(tmp).unlink(missing_ok=True)
    print(json.dumps({"out": str(target), "frames": n, "episodes": args.episodes}))
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    from metarim.evaluation.transfer import transfer_report

    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes} must be >= 1")
    if min(args.adapt_steps) < 0:
        raise UsageError(f"--adapt-steps {min(args.adapt_steps)} must be >= 0 (adaptation steps)")
    for flag in ("num_envs", "threads"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be >= 1")
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps(transfer_report(args.run, args.level, steps=args.adapt_steps, episodes=args.episodes,
                                     seed=args.seed, backend=args.env_backend, eval_envs=args.num_envs)))
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
        elif args.command == "transfer":
            code = _cmd_transfer(args)
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
