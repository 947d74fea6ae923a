"""Can torch.compile make Meta-RIM's second-order meta-gradient cheap? One masked inner step
of a RIM's module weights on one chunk, the loss of the next chunk under the adapted
weights, and the gradient of both into every parameter.

``torch.compile`` cannot run autograd's double backward through a compiled graph, so the
compiled form writes the whole meta-gradient as a function, ``torch.func.grad`` of an
outer loss that itself calls ``torch.func.grad`` for the inner step, and compiles that:
inductor then sees the double backward as a forward graph. Three rows, same numbers
(``max_abs_diff`` against the first):

* ``eager autograd``: ``torch.autograd.grad(create_graph=True)`` and a backward, what
  ``MaskedMAML`` with the learn2learn backend does;
* ``eager func.grad``: the nested ``torch.func.grad`` function, run eagerly;
* ``compiled func.grad``: the same function under ``torch.compile(dynamic=False)``,
  with its compile time (the first call).

The RIM is ``meta_throughput.py``'s (6 modules, k=3, hidden 192; 128 input values) with a
linear head and a cross-entropy loss on random data: the core the meta-step spends its
time in, without the env. The module weights are masked by the modules active at any step
of the first chunk, as in Meta-RIM.

Usage::

    python benchmarks/meta_grad_compile.py                     # 2 chunks of 32 steps, batch 4
    python benchmarks/meta_grad_compile.py --steps 8 --backend aot_eager
    python benchmarks/meta_grad_compile.py --eager-only --batch 16    # cost against batch size
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import torch
from torch.func import functional_call, grad


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[repeats // 2] * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=32, help="steps per chunk (two chunks)")
    p.add_argument("--batch", type=int, default=4, help="env columns (the training default's minibatch)")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--hidden-size", type=int, default=192)
    p.add_argument("--num-units", type=int, default=6)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--inner-lr", type=float, default=10.0)
    p.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--eager-only", action="store_true", help="skip the compiled row (minutes to compile)")
    p.add_argument("--float64", action="store_true", help="double precision (to check the routes agree)")
    args = p.parse_args(argv)
    if min(args.steps, args.batch, args.repeats) < 1:
        print("error: --steps, --batch and --repeats must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    if args.float64:
        torch.set_default_dtype(torch.float64)
    try:
        return _run(args)
    finally:
        torch.set_default_dtype(dtype)


def _run(args: argparse.Namespace) -> int:
    from metarim.rim import RIM

    T, B = args.steps, args.batch
    rim = RIM(args.input_size, args.hidden_size, args.num_units, args.k)
    head = torch.nn.Linear(args.hidden_size, 7)
    model = torch.nn.ModuleDict({"rim": rim, "head": head})
    params = dict(model.named_parameters())
    fast = [n for n in params if ".mechanisms." in n]
    xs = torch.randn(2, T, B, args.input_size)
    ys = torch.randint(0, 7, (2, T, B))
    done = torch.rand(2, T, B) < 0.05

    def chunk_loss(p: dict[str, torch.Tensor], i: int) -> tuple[torch.Tensor, torch.Tensor]:
        out, _, masks = functional_call(rim, {n[4:]: v for n, v in p.items() if n.startswith("rim.")},
                                        (xs[i], None, done[i]))
        logits = functional_call(head, {n[5:]: v for n, v in p.items() if n.startswith("head.")}, (out,))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), ys[i].flatten()), masks

    def adapted(p: dict[str, torch.Tensor], grads: list[torch.Tensor], masks: torch.Tensor) -> dict:
        active = masks.amax(dim=(0, 1))  # (N,): active at any step of the chunk
        return {**p, **{n: p[n] - args.inner_lr * g * active.view(-1, *[1] * (g.dim() - 1))
                        for n, g in zip(fast, grads)}}

    def eager_autograd(first_order: bool = False) -> list[torch.Tensor]:
        l0, masks = chunk_loss(params, 0)
        grads = torch.autograd.grad(l0, [params[n] for n in fast], create_graph=not first_order,
                                    retain_graph=True)
        l1, _ = chunk_loss(adapted(params, list(grads), masks), 1)
        return list(torch.autograd.grad((l0 + l1) / 2, list(params.values())))

    def meta_loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        slow = {n: v for n, v in p.items() if n not in fast}

        def inner(f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            loss, masks = chunk_loss({**slow, **f}, 0)
            return loss, (loss, masks)

        grads, (l0, masks) = grad(inner, has_aux=True)({n: p[n] for n in fast})
        l1, _ = chunk_loss(adapted(p, [grads[n] for n in fast], masks), 1)
        return (l0 + l1) / 2

    meta_grad = grad(meta_loss)
    reference = eager_autograd()

    def diff(got: dict[str, torch.Tensor]) -> float:
        return max(float((got[n] - r).detach().abs().max()) for n, r in zip(params, reference))

    # how far the first-order gradient is from the second-order one: the scale at which
    # the rows' max_abs_diff would show a lost second-order term
    first_order_diff = max(float((f - r).abs().max()) for f, r in zip(eager_autograd(True), reference))
    rows = {"eager autograd": {"ms": median_ms(eager_autograd, args.repeats), "first_order_diff": first_order_diff},
            "eager func.grad": {"ms": median_ms(lambda: meta_grad(params), args.repeats),
                                "max_abs_diff": diff(meta_grad(params))}}
    compile_s = None
    if not args.eager_only:
        print(f"eager: {rows['eager autograd']['ms']:.1f} ms; compiling ...", file=sys.stderr, flush=True)
        compiled = torch.compile(meta_grad, backend=args.backend, dynamic=False)
        t0 = time.perf_counter()
        first = compiled(params)
        compile_s = time.perf_counter() - t0
        rows["compiled func.grad"] = {"ms": median_ms(lambda: compiled(params), args.repeats),
                                      "max_abs_diff": diff(first), "compile_s": compile_s}
    base = rows["eager autograd"]["ms"]
    for name, r in rows.items():
        extra = f", compile {r['compile_s']:.0f} s" if "compile_s" in r else ""
        print(f"{name:>20}: {r['ms']:7.1f} ms ({base / r['ms']:.2f}x){extra}", file=sys.stderr)
    result = {"benchmark": "meta_grad_compile", "args": vars(args), "rows": rows}
    if compile_s is not None:  # meta-steps after which the compile time is paid back
        saved = base - rows["compiled func.grad"]["ms"]
        result["break_even_meta_steps"] = compile_s * 1000 / saved if saved > 0 else None
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
