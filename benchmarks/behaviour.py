"""Behaviour fingerprint: does a refactor change what any learner computes?

Trains every learner for a few thousand frames from a fixed seed on the tensor env (each
run in its own process, through ``metarim train``) and hashes what it wrote:
``metrics.csv`` without its time columns, and every tensor and number of the last
checkpoint (the policy, the optimiser state, the RNG states, the env states). Two trees
with the same fingerprint compute the same thing, bit for bit.

    python benchmarks/behaviour.py --out /tmp/fp.json               # fingerprint now
    python benchmarks/behaviour.py --check benchmarks/data/behaviour.json

``--legacy`` trains with the defaults of before they changed (``metarim.config.DEFAULT_CHANGES``,
issue 18), so ``--check tests/data/f898eb9/behaviour.json --legacy`` shows that those
changes are the only difference in behaviour since commit f898eb9.

``--check`` exits 1 and names the runs whose hashes differ. ``--keep DIR`` also keeps the
run folders, half-trained (``--half``), so that a later tree can show it resumes them
(``tests/test_behaviour.py``).

Hashes are exact on one machine only: the same code and seed on another CPU of the same kind
differs in the last bits of the losses from the first update on (rounding in the CPU
kernels), and so every hash differs. ``--values`` writes the numbers instead (every learning
column of ``metrics.csv``; for each checkpoint tensor its shape and float64 sum and absolute
sum, integer tensors and RNG states exactly), and ``--check`` of a values file compares them
within :data:`RTOL`: that check holds across machines.

    python benchmarks/behaviour.py --values --out /tmp/v.json
    python benchmarks/behaviour.py --check tests/data/f898eb9/behaviour_values.json --legacy
    python benchmarks/behaviour.py --resume-half tests/data/f898eb9/half --values --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import torch

TIME_COLUMNS = {"fps", "collect_s", "update_s"}
COMMON = ["--env", "BabyAI-GoToLocalS6N2-v0", "--env-backend", "tensor", "--seed", "7",
          "--threads", "1", "--quiet", "--checkpoint-every", "1000"]
# learner -> extra flags; sized so that the six runs take about two minutes on one core.
RUNS: dict[str, list[str]] = {
    "ppo-lstm": ["--algo", "ppo", "--memory", "lstm", "--frames", "8192"],
    "ppo-rim": ["--algo", "ppo", "--memory", "rim", "--frames", "8192"],
    "a2c-lstm": ["--algo", "a2c", "--memory", "lstm", "--frames", "8192", "--num-steps", "8",
                 "--batch-size", "128"],
    "metarim": ["--algo", "metarim", "--memory", "rim", "--frames", "4096"],
    "maml": ["--algo", "maml", "--memory", "rim", "--frames", "16384", "--num-steps", "32"],
    "reptile": ["--algo", "reptile", "--memory", "lstm", "--frames", "8192", "--num-steps", "32"],
}


def frames_of(name: str) -> int:
    flags = RUNS[name]
    return int(flags[flags.index("--frames") + 1])


def legacy_flags() -> list[str]:
    """``metarim train`` flags that set every changed default back to its old value."""
    from metarim.config import DEFAULT_CHANGES

    return [x for name, (old, _, _) in DEFAULT_CHANGES.items() for x in (f"--{name.replace('_', '-')}", str(old))]


def train(name: str, out: pathlib.Path, *, frames: int | None = None, resume: bool = False,
          legacy: bool = False) -> None:
    """Runs ``metarim train`` for ``name`` in a fresh process (``legacy``: the old defaults)."""
    out = out.resolve()
    flags = [*COMMON, *RUNS[name], *(legacy_flags() if legacy else [])]
    if frames is not None:
        flags[flags.index("--frames") + 1] = str(frames)
    cmd = [sys.executable, "-m", "metarim.cli", "train", "--out", str(out), *flags]
    if resume:
        cmd = [sys.executable, "-m", "metarim.cli", "train", "--out", str(out), "--resume", "--quiet",
               "--frames", str(frames)]
    # not from the repository root: ``python -m`` puts the working directory first on the path,
    # which would shadow a PYTHONPATH that points at another tree's package
    subprocess.run(cmd, check=True, cwd=tempfile.gettempdir())


def package() -> str:
    """Where the ``metarim`` that :func:`train` runs comes from (PYTHONPATH honoured)."""
    out = subprocess.run([sys.executable, "-c", "import metarim; print(metarim.__file__)"], check=True,
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    return str(pathlib.Path(out.stdout.strip()).parent)


def _digest(value: Any, h: Any) -> None:
    if isinstance(value, torch.Tensor):
        h.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        h.update(value.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy().tobytes()
                 if value.numel() else b"")
    elif isinstance(value, dict):
        h.update(b"D")
        for k in sorted(value, key=str):
            h.update(repr(k).encode())
            _digest(value[k], h)
    elif isinstance(value, (list, tuple)):
        h.update(b"L")
        for v in value:
            _digest(v, h)
    else:
        h.update(repr(value).encode())


def _read(run: pathlib.Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """A run folder's ``metrics.csv`` rows without the time columns, and its last checkpoint."""
    with open(run / "metrics.csv") as f:
        rows = [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(f)]
    ckpt = sorted((run / "checkpoints").glob("ckpt-*.pt"))[-1]
    return rows, torch.load(ckpt, map_location="cpu", weights_only=True)


def fingerprint(run: pathlib.Path) -> dict[str, str]:
    """Hashes of a run folder's learning columns and of its last checkpoint's contents."""
    rows, state = _read(run)
    buf = io.StringIO()
    json.dump(rows, buf, sort_keys=True)
    out = {"metrics": hashlib.sha256(buf.getvalue().encode()).hexdigest(), "rows": str(len(rows))}
    for key in sorted(state):
        h = hashlib.sha256()
        _digest(state[key], h)
        out[f"ckpt/{key}"] = h.hexdigest()
    return out


RTOL = 1e-3
"""Relative tolerance of a values comparison. The same code on two machines differs by about
3e-6 (relative) in the losses of a 2,048-frame run, and by at most 1e-5 in anything a
run folder half-trained on one machine and resumed on another holds, against the same run
trained on the second without a stop; episodes not at all. A change of behaviour differs by
far more: MAML's and Reptile's resumed runs, whose envs start afresh, by over 0.1."""


def _summary(value: Any) -> Any:
    """A checkpoint leaf as JSON: a float tensor by shape, sum and absolute sum (float64),
    any other tensor by a hash of its bytes, containers leaf by leaf."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            v = value.detach().double()
            return {"shape": list(v.shape), "sum": v.sum().item(), "abs": v.abs().sum().item()}
        h = hashlib.sha256()
        _digest(value, h)
        return {"shape": list(value.shape), "sha256": h.hexdigest()}
    if isinstance(value, dict):
        return {repr(k): _summary(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        if len(value) > 8 and all(isinstance(v, int) for v in value):  # Python's RNG state: exact, by hash
            return {"len": len(value), "sha256": hashlib.sha256(repr(list(value)).encode()).hexdigest()}
        return [_summary(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def values(run: pathlib.Path) -> dict[str, Any]:
    """The numbers behind :func:`fingerprint`: the learning columns of ``metrics.csv`` and a
    :func:`_summary` of every entry of the last checkpoint, for a comparison within a tolerance."""
    text_rows, state = _read(run)
    rows = [{k: _number(v) for k, v in r.items()} for r in text_rows]
    return {"metrics": rows, "rows": str(len(rows)), **{f"ckpt/{k}": _summary(state[k]) for k in sorted(state)}}


def _close(want: Any, got: Any, rtol: float) -> bool:
    if isinstance(want, dict) and isinstance(got, dict):
        if set(want) != set(got):
            return False
        if {"sum", "abs"} <= set(want):  # a float tensor: its sum within rtol of its size
            scale = max(abs(want["abs"]), abs(got["abs"]))
            return (want["shape"] == got["shape"] and abs(want["sum"] - got["sum"]) <= rtol * scale + 1e-12
                    and abs(want["abs"] - got["abs"]) <= rtol * scale + 1e-12)
        return all(_close(want[k], got[k], rtol) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_close(w, g, rtol) for w, g in zip(want, got))
    if isinstance(want, float) and isinstance(got, float):
        if math.isnan(want) or math.isnan(got):  # a mean over no episodes
            return math.isnan(want) and math.isnan(got)
        return abs(want - got) <= rtol * max(abs(want), abs(got)) + 1e-12
    return want == got


def compare_values(want: dict[str, Any], got: dict[str, Any], rtol: float = RTOL) -> list[str]:
    """Names ``run:key`` of every :func:`values` entry that differs by more than ``rtol``
    (relative; a tensor's sums relative to its absolute sum). :data:`ADDED_STATE` as in :func:`compare`."""
    return [f"{run}:{k}" for run in want for k in sorted(set(want[run]) | set(got.get(run, {})))
            if not (k in ADDED_STATE and k not in want[run])
            and not (k in want[run] and k in got.get(run, {}) and _close(want[run][k], got[run][k], rtol))]


def is_values(data: dict[str, Any]) -> bool:
    """Whether a fingerprint file holds :func:`values` (else hashes)."""
    return any(isinstance(v.get("metrics"), list) for v in data.values())


def resume_all(names: list[str], half: pathlib.Path, as_values: bool = False) -> dict[str, Any]:
    """Resumes copies of the half-trained run folders ``half/<name>`` to the end and fingerprints them."""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = pathlib.Path(tmp) / name
            shutil.copytree(half / name, out)
            train(name, out, frames=frames_of(name), resume=True)
            result[name] = values(out) if as_values else fingerprint(out)
            print(f"behaviour: {name} resumed", file=sys.stderr)
    return result


def run_all(names: list[str], keep: pathlib.Path | None = None, half: bool = False,
            legacy: bool = False, as_values: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = pathlib.Path(tmp) / name
            train(name, out, legacy=legacy)
            result[name] = values(out) if as_values else fingerprint(out)
            if keep is not None:
                dest = keep / name
                shutil.rmtree(dest, ignore_errors=True)
                if half:  # a run stopped half way, for resume tests
                    shutil.rmtree(out)
                    train(name, out, frames=frames_of(name) // 2, legacy=legacy)
                shutil.copytree(out, dest)
                for stale in sorted((dest / "checkpoints").glob("ckpt-*.pt"))[:-1]:
                    stale.unlink()
            print(f"behaviour: {name} done", file=sys.stderr)
    return result


ADDED_STATE = {"ckpt/collectors": "MAML's and Reptile's task envs, checkpointed since the commit after 8f45e37"}
"""Checkpoint entries added after f898eb9: state a run saves so that it can resume exactly,
not behaviour. A reference without one is not a difference; :func:`added` names them."""


def compare(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Names ``run:key`` of every hash that differs (an :data:`ADDED_STATE` key that the
    reference lacks does not count)."""
    return [f"{run}:{k}" for run in want for k in sorted(set(want[run]) | set(got.get(run, {})))
            if want[run].get(k) != got.get(run, {}).get(k) and not (k in ADDED_STATE and k not in want[run])]


def added(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Names ``run:key`` of the :data:`ADDED_STATE` entries that ``got`` has and ``want`` lacks."""
    return [f"{run}:{k}" for run in want for k in sorted(got.get(run, {})) if k in ADDED_STATE and k not in want[run]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the fingerprint JSON here")
    ap.add_argument("--check", help="compare with this fingerprint JSON; exit 1 on a difference")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--keep", help="also keep the run folders here")
    ap.add_argument("--half", action="store_true", help="with --keep: keep runs stopped half way")
    ap.add_argument("--legacy", action="store_true",
                    help="train with the defaults of before issue 18 (config.DEFAULT_CHANGES' old values)")
    ap.add_argument("--values", action="store_true",
                    help="fingerprint by the numbers (compared within a tolerance; holds across machines), not hashes")
    ap.add_argument("--resume-half", metavar="DIR",
                    help="instead of training: resume copies of DIR/<run> (folders of --keep --half) to the end")
    args = ap.parse_args(argv)
    want: dict[str, Any] = {}
    if args.check:
        want = json.loads(pathlib.Path(args.check).read_text())
        want = {k: v for k, v in want.items() if k in args.runs}
    as_values = args.values or (bool(want) and is_values(want))
    if args.resume_half:
        got = resume_all(args.runs, pathlib.Path(args.resume_half), as_values)
    else:
        got = run_all(args.runs, pathlib.Path(args.keep) if args.keep else None, args.half, args.legacy, as_values)
    if args.out:  # hashes one per line; values one run per line
        text = (json.dumps(got, indent=1, sort_keys=True) if not as_values else
                "{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in got.items()) + "\n}")
        pathlib.Path(args.out).write_text(text + "\n")
    diff: list[str] = []
    new_state: list[str] = []
    if args.check:
        if is_values(want) != as_values:
            print(f"behaviour.py: {args.check} holds {'values' if is_values(want) else 'hashes'}; "
                  f"{'drop' if as_values else 'add'} --values", file=sys.stderr)
            return 2
        diff = compare_values(want, got) if as_values else compare(want, got)
        new_state = added(want, got)
    print(json.dumps({"runs": args.runs, "differ": diff, "equal": not diff, "added_state": new_state,
                      **({"rtol": RTOL} if as_values else {}), "metarim": package()}))
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
