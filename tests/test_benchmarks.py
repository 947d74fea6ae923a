"""The benchmark scripts whose numbers the docs quote compute what they say they do."""

from __future__ import annotations

import json
import pathlib

import torch
from load_script import load_script

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    return load_script(BENCH / f"{name}.py")


def test_meta_grad_compile_routes_agree_in_float64(capsys):
    """The nested ``torch.func.grad`` meta-gradient (the function the benchmark compiles)
    equals the autograd double-backward one in every parameter, to float64 rounding."""
    mod = _load("meta_grad_compile")
    threads = torch.get_num_threads()
    try:
        rc = mod.main(["--eager-only", "--float64", "--steps", "3", "--batch", "2", "--repeats", "1",
                       "--input-size", "5", "--hidden-size", "12", "--num-units", "3", "--k", "2"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    assert torch.get_default_dtype() == torch.float32
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = out["rows"]["eager func.grad"]
    assert 0.0 <= row["max_abs_diff"] < 1e-12
    # the second-order term is there to be lost: first order is far from it
    assert out["rows"]["eager autograd"]["first_order_diff"] > 1e-6
    assert set(out["rows"]) == {"eager autograd", "eager func.grad"}


def test_meta_grad_compile_rejects_bad_sizes(capsys):
    mod = _load("meta_grad_compile")
    assert mod.main(["--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "--steps" in err and "at least 1" in err
