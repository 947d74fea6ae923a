"""Time of one masked meta-step (inner step + outer backward) of a RIM policy, per backend.

A policy ``Linear(obs, 128) -> ReLU -> RIM(N=6, k=4, 64 per module) -> Linear(actions)``
(reference RIM attention sizes) runs on chunk 1 of a batch (16 sequences x 32 steps), takes
one masked inner step on its fast parameters (the mechanisms) with the chunk's RIM masks
reduced to ``(N,)``, then runs on chunk 2 (16 x 32) and backpropagates the outer loss into
all meta-parameters. Timed, best of ``--repeats`` after a warm-up:

* ``second_order_s``: the full second-order meta-step;
* ``first_order_s``: the same with ``first_order=True``;
* ``plain_s``: the same forward work (both chunks) and one backward, no adaptation.

Cases are interleaved round by round (best wall time and best process CPU time are kept)
so that load from other processes affects them alike.

    python benchmarks/adapt.py                    # all backends, CPU, 1 thread
    python benchmarks/adapt.py --device cuda --backends learn2learn func

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from metarim.meta import MaskedMAML, available_backends
from metarim.rim import RIM


class Policy(nn.Module):
    """Encoder -> RIM -> action logits; returns ``(logits (T, B, A), masks (T, B, N))``."""

    def __init__(self, obs: int, actions: int, num_units: int, k: int, unit_size: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(obs, 128), nn.ReLU())
        self.rim = RIM(128, num_units * unit_size, num_units, k)
        self.head = nn.Linear(num_units * unit_size, actions)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, _, masks = self.rim(self.encoder(x))
        return self.head(out), masks


def nll(logits: Tensor, actions: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), actions.flatten())


def best_times(cases: dict[str, Callable[[], None]], repeats: int,
               sync: Callable[[], None]) -> dict[str, tuple[float, float]]:
    """Best (wall, process CPU) seconds per case; cases are interleaved round by round so
    that load from other processes on a shared host hits them all alike."""
    for fn in cases.values():  # warm-up
        fn()
        sync()
    best = {name: (float("inf"), float("inf")) for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(available_backends()))
    parser.add_argument("--num-units", type=int, default=6)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--unit-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--obs", type=int, default=147)
    parser.add_argument("--actions", type=int, default=7)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (1: stable timings on a shared host)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    policy = Policy(args.obs, args.actions, args.num_units, args.k, args.unit_size).to(device)
    x1, x2 = (torch.randn(args.steps, args.batch, args.obs, device=device) for _ in range(2))
    a1, a2 = (torch.randint(args.actions, (args.steps, args.batch), device=device) for _ in range(2))

    def plain() -> None:
        policy.zero_grad(set_to_none=True)
        (nll(policy(x1)[0], a1) + nll(policy(x2)[0], a2)).backward()

    def meta_step(meta: MaskedMAML, first_order: bool) -> Callable[[], None]:
        def step() -> None:
            meta.zero_grad(set_to_none=True)
            learner = meta.clone(first_order=first_order)
            logits, masks = learner(x1)
            learner.adapt(nll(logits, a1), active=masks)
            nll(learner(x2)[0], a2).backward()

        return step

    cases = {"plain": plain}
    for backend in args.backends:
        meta = MaskedMAML(policy, args.lr, backend=backend)
        cases[f"{backend}/second"] = meta_step(meta, False)
        cases[f"{backend}/first"] = meta_step(meta, True)
    best = best_times(cases, args.repeats, sync)
    (plain_s, plain_cpu) = best["plain"]
    results = {}
    for backend in args.backends:
        (second, second_cpu), (first, first_cpu) = best[f"{backend}/second"], best[f"{backend}/first"]
        results[backend] = {
            "second_order_s": round(second, 4),
            "first_order_s": round(first, 4),
            "plain_s": round(plain_s, 4),
            "second_over_first": round(second / first, 2),
            "first_over_plain": round(first / plain_s, 2),
            "cpu_second_over_first": round(second_cpu / first_cpu, 2),
            "cpu_first_over_plain": round(first_cpu / plain_cpu, 2),
        }
    print(json.dumps({
        "benchmark": "masked_adapt_meta_step",
        "num_units": args.num_units, "k": args.k, "unit_size": args.unit_size,
        "batch": args.batch, "steps": args.steps, "device": str(device),
        "threads": args.threads, "torch": torch.__version__,
        "fast_tensors": len(MaskedMAML(policy, args.lr).partition.fast),
        "results": results,
    }))


if __name__ == "__main__":
    main()
