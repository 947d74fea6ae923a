"""Eager vs compiled memory core, and MKL-DNN vs native convolutions for small batches.

The shapes are those of PPO with the default config and the env worker: the memory
core (input 64, hidden 64; RIM with 4 modules, k=2) forward + backward over a minibatch
of 64 windows × 4 steps with episode starts, and one step with no gradient for the
worker's half of 8 envs; then ``ActorCritic.image_code`` with no gradient for 8 and 16
frames, with MKL-DNN on and off. Eager and compiled runs alternate, ``--repeats`` times,
and the medians are reported. Compilation, on the first call, is timed separately.

    python benchmarks/compile_memory.py [--memory rim] [--repeats 5]

Prints one JSON object (milliseconds per call), with the load average before the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from metarim.rl.memory import make_memory
from metarim.rl.policy import ActorCritic


def per_call_ms(fn, calls: int) -> float:
    for _ in range(max(3, calls // 10)):
        fn()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t) / calls * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--memory", default="rim", choices=["rim", "lstm"])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out: dict = {"memory": a.memory, "load_before": os.getloadavg()[0]}
    kw = {"num_units": 4, "k": 2} if a.memory == "rim" else {}
    eager = make_memory(a.memory, 64, 64, **kw)
    compiled = make_memory(a.memory, 64, 64, **kw)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile(dynamic=False)

    x = torch.randn(4, 64, 64, requires_grad=True)
    done = torch.rand(4, 64) < 0.1
    state = eager.initial_state(64)
    x1, done1, state1 = torch.randn(1, 8, 64), torch.zeros(1, 8, dtype=torch.bool), eager.initial_state(8)

    def train(core):
        return lambda: core(x, state, done)[0].sum().backward()

    def act(core):
        def call():
            with torch.no_grad():
                core(x1, state1, done1)
        return call

    t = time.perf_counter()
    train(compiled)()
    act(compiled)()
    out["compile_s"] = time.perf_counter() - t
    times: dict[str, list[float]] = {}
    for _ in range(a.repeats):
        for name, core in (("eager", eager), ("compiled", compiled)):
            times.setdefault(f"train_64x4_{name}_ms", []).append(per_call_ms(train(core), 100))
            times.setdefault(f"act_8_{name}_ms", []).append(per_call_ms(act(core), 500))

    # the model these numbers were first measured on (before issue 18 changed the defaults)
    policy = ActorCritic(7, 64, hidden_size=64, combine="film", image_encoding="onehot", mission_dim=64, init="torch")

    def convs(image: torch.Tensor) -> torch.Tensor:  # image_code's work, whatever the flag says
        ids = torch.minimum(image.long(), policy.maxima) + policy.offsets
        planes = torch.zeros(*image.shape[:3], 20).scatter_(-1, ids, 1.0).permute(0, 3, 1, 2)
        return policy.conv_last(policy.conv(planes))

    for rows in (8, 16):
        image = torch.randint(0, 6, (rows, 7, 7, 3), dtype=torch.uint8)
        with torch.no_grad():
            for _ in range(a.repeats):
                # image_code itself picks native kernels for <= 8 frames (NATIVE_CONV_ROWS)
                times.setdefault(f"image_code_{rows}_auto_ms", []).append(
                    per_call_ms(lambda im=image: policy.image_code(im), 500))
                times.setdefault(f"image_code_{rows}_mkldnn_ms", []).append(
                    per_call_ms(lambda im=image: convs(im), 500))
                torch.backends.mkldnn.enabled = False
                try:
                    times.setdefault(f"image_code_{rows}_native_ms", []).append(
                        per_call_ms(lambda im=image: convs(im), 500))
                finally:
                    torch.backends.mkldnn.enabled = True
    out.update({k: statistics.median(v) for k, v in times.items()})
    out["train_speedup"] = out["train_64x4_eager_ms"] / out["train_64x4_compiled_ms"]
    out["act_speedup"] = out["act_8_eager_ms"] / out["act_8_compiled_ms"]
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
