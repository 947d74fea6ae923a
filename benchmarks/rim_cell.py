"""Forward+backward time of a batched RIM against a per-module Python-loop reference.

Both compute the same function with the same weights: the reference
(``tests/rim_reference.py``) steps every module in a Python loop, one small matmul per
module and step; :class:`metarim.rim.RIM` applies stacked weights with batched matmuls
and does the input-only work for the whole sequence at once.

    python benchmarks/rim_cell.py            # N=6, k=4, 64 per module, batch 64, T=32
    python benchmarks/rim_cell.py --interleave   # alternate the two: fairer on a busy machine

Prints one JSON object, with the load average before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import torch

from metarim.rim import RIM

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from rim_reference import reference_step  # noqa: E402


def reference_forward(model: RIM, x: torch.Tensor) -> torch.Tensor:
    state = model.initial_state(x.shape[1])
    outputs = []
    for t in range(x.shape[0]):
        out, state, _ = reference_step(model.cell, x[t], state)
        outputs.append(out)
    return torch.stack(outputs)


def fwd_bwd_seconds(forward, model: RIM, x: torch.Tensor) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = forward(model, x)
    out.square().mean().backward()
    return time.perf_counter() - start


def time_fwd_bwd(forward, model: RIM, x: torch.Tensor, repeats: int) -> float:
    return min(fwd_bwd_seconds(forward, model, x) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-units", type=int, default=6)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--unit-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--interleave", action="store_true",
                        help="alternate batched and loop repeats (same machine state for both); "
                             "also reports the median of the per-pair speed-ups")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = RIM(args.input_size, args.unit_size * args.num_units, args.num_units, args.k)
    x = torch.randn(args.steps, args.batch, args.input_size)

    def batched_forward(model: RIM, x: torch.Tensor) -> torch.Tensor:
        return model(x)[0]

    extra = {}
    if args.interleave:
        fwd_bwd_seconds(batched_forward, model, x)  # warm-up
        fwd_bwd_seconds(reference_forward, model, x)
        pairs = [(fwd_bwd_seconds(batched_forward, model, x),
                  fwd_bwd_seconds(reference_forward, model, x)) for _ in range(args.repeats)]
        batched, loop = min(b for b, _ in pairs), min(r for _, r in pairs)
        extra["median_pair_speedup"] = round(statistics.median(r / b for b, r in pairs), 2)
    else:
        time_fwd_bwd(batched_forward, model, x, 1)  # warm-up
        batched = time_fwd_bwd(batched_forward, model, x, args.repeats)
        time_fwd_bwd(reference_forward, model, x, 1)
        loop = time_fwd_bwd(reference_forward, model, x, args.repeats)
    with torch.no_grad():  # same outputs, or the comparison means nothing
        max_diff = (batched_forward(model, x) - reference_forward(model, x)).abs().max().item()
    print(json.dumps({
        "benchmark": "rim_cell_forward_backward",
        "num_units": args.num_units, "k": args.k, "unit_size": args.unit_size,
        "batch": args.batch, "steps": args.steps, "threads": args.threads,
        "batched_s": round(batched, 4), "loop_s": round(loop, 4),
        "speedup": round(loop / batched, 2), **extra, "max_abs_output_diff": max_diff,
        "interleave": args.interleave, "load_avg_1min": load,
    }))


if __name__ == "__main__":
    main()
