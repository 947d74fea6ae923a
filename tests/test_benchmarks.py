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


def test_mission_split_partitions_the_same_episodes(tmp_path):
    """benchmarks/mission_split.py on a real tiny PickupLoc run: every episode lands in
    exactly one group, and a pattern that matches everything and one that matches nothing
    see the same episodes (same seeds), so the two groups' successes agree."""
    from metarim.config import TrainConfig
    from metarim.train import Trainer

    config = TrainConfig(algo="ppo", memory="lstm", env="BabyAI-PickupLoc-v0", env_backend="tensor",
                         num_envs=4, num_steps=16, batch_size=32, frames=64, seed=2)
    Trainer(config, tmp_path, progress=False).run()
    mod = _load("mission_split")
    split = mod.split_success(tmp_path, 6, mod.LOCATION, seed=7)
    assert split["match"]["episodes"] + split["other"]["episodes"] == 6
    everything = mod.split_success(tmp_path, 6, ".", seed=7)
    nothing = mod.split_success(tmp_path, 6, "(?!)", seed=7)
    assert everything["other"]["episodes"] == nothing["match"]["episodes"] == 0
    assert everything["match"]["success"] == nothing["other"]["success"]
    wins = sum(round(g["success"] * g["episodes"]) for g in split.values() if g["episodes"])
    assert wins == round(everything["match"]["success"] * 6)
