"""The ``metarim sweep`` and ``metarim sweep-report`` subcommands (registered by :mod:`metarim.cli`).

``metarim sweep`` exits with 0 when every run is finished, 1 when a run failed or was
busy in another sweep (each is listed with its error; the others still ran), 130 when
interrupted, and 2 on bad input, before anything runs.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

__all__ = ["add_sweep_parsers", "sweep_command"]


def add_sweep_parsers(sub: Any) -> None:
    """Adds ``sweep`` and ``sweep-report`` to the ``metarim`` subparsers ``sub``."""
    s = sub.add_parser("sweep", help="train every run of a sweep file, locally or on Ray")
    s.add_argument("--config", required=True, help="sweep file (JSON; YAML with PyYAML), see docs/sweeps.md")
    s.add_argument("--out", required=True, help="sweep folder; runs go to OUT/runs/<name>/")
    s.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: a process per run on this machine; ray: Ray tasks (pip install 'metarim[ray]')")
    s.add_argument("--address", help="Ray cluster address (e.g. ray://head:10001 or auto); "
                                     "default: start a local Ray for the sweep")
    s.add_argument("--max-parallel", type=int, help="runs at once (default: CPU count; on a cluster: all)")
    s.add_argument("--report", action="store_true", help="write the sweep-report files at the end")
    r = sub.add_parser("sweep-report", help="summarise a sweep folder: summary.md, summary.json, curves.png")
    r.add_argument("dir", help="sweep folder")
    r.add_argument("--window", type=int, default=100, help="episodes before a run's success rate counts")
    r.add_argument("--threshold", type=float, default=0.8, help="success rate for 'frames to'")
    r.add_argument("--reference", help="group for the Welch tests (default: metarim's, else the first)")
    r.add_argument("--max-frames", type=float, help="cut every curve at this many frames (compare runs "
                                                    "of different budgets at the same one)")


def sweep_command(args: argparse.Namespace) -> int:
    """Runs ``sweep`` or ``sweep-report``; raises ``ValueError`` on bad input."""
    import json

    if args.command == "sweep-report":
        if not pathlib.Path(args.dir).is_dir():
            raise ValueError(f"{args.dir} is not a folder")
        if args.window < 1 or not 0 <= args.threshold <= 1:
            raise ValueError("--window must be >= 1 and --threshold in [0, 1]")
        if args.max_frames is not None and not args.max_frames > 0:
            raise ValueError(f"--max-frames {args.max_frames:g} must be > 0 (frames to cut the curves at)")
        data = _report(args.dir, args)
        print(json.dumps({"out": str(args.dir), "groups": list(data["summary"]), "runs": len(data["runs"])}))
        return 0
    from metarim.sweep import check_runs, expand_sweep, load_sweep, run_sweep

    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--backend ray needs the optional extra: pip install 'metarim[ray]'") from None
    runs = expand_sweep(load_sweep(args.config))
    check_runs(runs)
    results = run_sweep(runs, out, backend=args.backend, address=args.address, max_parallel=args.max_parallel)
    counts: dict[str, int] = {}
    for res in results.values():
        counts[res["status"]] = counts.get(res["status"], 0) + 1
    print(json.dumps({"out": str(out), "runs": len(results), **counts}))
    if args.report:
        _report(out, argparse.Namespace(window=100, threshold=0.8, reference=None, max_frames=None))
    if counts.get("interrupted") or counts.get("not started"):
        return 130
    return 1 if set(counts) - {"done", "skipped"} else 0


def _report(folder: str | pathlib.Path, args: argparse.Namespace) -> dict[str, Any]:
    from metarim.sweep.report import sweep_report

    return sweep_report(folder, window=args.window, threshold=args.threshold, reference=args.reference,
                        max_frames=args.max_frames)
