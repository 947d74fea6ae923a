"""Runs written before the redesign (commit f898eb9) still resume, and resume to exactly
what that commit computed.

``tests/data/f898eb9/half/<learner>`` are run folders that f898eb9 trained half way
(``benchmarks/behaviour.py --keep DIR --half``: its ``config.json``, ``metrics.csv`` and
checkpoint). ``tests/data/f898eb9/resumed_values.json`` holds the numbers (the learning
columns of ``metrics.csv``, and the sums of every tensor of the final checkpoint) of those
runs resumed to the end by f898eb9's own code, ``behaviour_values.json`` those of the same
runs trained without a stop; both written with f898eb9's package first on the path:

    git worktree add /tmp/f898 f898eb9
    PYTHONPATH=/tmp/f898 python benchmarks/behaviour.py --values --resume-half tests/data/f898eb9/half \
        --out tests/data/f898eb9/resumed_values.json
    PYTHONPATH=/tmp/f898 python benchmarks/behaviour.py --values --out tests/data/f898eb9/behaviour_values.json

Resuming a half run with today's code must give f898eb9's numbers within
``behaviour.RTOL``. Not the same bits: two machines of the same kind differ in the last
bits of every loss (f898eb9's own code, resuming the same folders, hashes differently
here than where the folders were written), so a hash check only holds on one machine; on
the machine that wrote the values files, today's code resumes to f898eb9's hashes exactly
(``--resume-half ... --check`` of a hash file written there by f898eb9). The resumed run
reads its config from the old ``config.json``, so later changes of the defaults do not touch
this test. Two learners run by default, all six under ``slow``;
``python benchmarks/behaviour.py --check tests/data/f898eb9/behaviour_values.json --legacy``
compares fresh runs, with the old defaults, with f898eb9's.

PPO, A2C and Meta-RIM resume exactly (resumed = uninterrupted). MAML and Reptile
checkpoints of f898eb9 hold no per-task envs, so on resume their envs start afresh and the
episodes after it differ from an uninterrupted run's; for them the test pins f898eb9's
resumed numbers. (Checkpoints written since the task collectors were checkpointed resume
exactly: tests/test_cli.py::test_task_learners_resume_exactly.)
"""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
import torch
from load_script import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "f898eb9"
behaviour = load_script(ROOT / "benchmarks" / "behaviour.py")
WANT = json.loads((DATA / "resumed_values.json").read_text())
EXACT_RESUME = ["ppo-lstm", "ppo-rim", "a2c-lstm", "metarim"]


def _resumed(name: str, tmp_path: pathlib.Path) -> tuple[dict[str, str], dict[str, str]]:
    """Fingerprints of the half run as stored and after resuming it to the end here."""
    run = tmp_path / name
    shutil.copytree(DATA / "half" / name, run)
    before = behaviour.values(run)
    behaviour.train(name, run, frames=behaviour.frames_of(name), resume=True)
    return before, behaviour.values(run)


@pytest.mark.parametrize("name", ["ppo-rim", "metarim"])
def test_pre_redesign_run_resumes_to_the_same_numbers(name, tmp_path):
    before, after = _resumed(name, tmp_path)
    assert before["rows"] != WANT[name]["rows"]  # the stored run stopped half way
    assert behaviour.compare_values({name: WANT[name]}, {name: after}) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppo-lstm", "a2c-lstm", "maml", "reptile"])
def test_pre_redesign_run_resumes_to_the_same_numbers_slow(name, tmp_path):
    before, after = _resumed(name, tmp_path)
    assert before["rows"] != WANT[name]["rows"]  # the stored run stopped half way
    assert behaviour.compare_values({name: WANT[name]}, {name: after}) == []


def test_exact_resume_learners_resumed_to_the_uninterrupted_numbers():
    full = json.loads((DATA / "behaviour_values.json").read_text())
    # the half runs were written on another machine: resumed and uninterrupted agree within 1e-5
    assert behaviour.compare_values({n: full[n] for n in EXACT_RESUME}, WANT, rtol=1e-5) == []
    # MAML's and Reptile's envs start afresh on resume: the tolerance does not hide that
    assert behaviour.compare_values({n: full[n] for n in ("maml", "reptile")}, WANT) != []


def test_compare_values_tolerates_rounding_and_names_real_differences():
    row = {"frames": 2048.0, "return_mean": 0.1875, "loss_policy": -0.0009772981138667092}
    tensor = {"shape": [2, 3], "sum": 0.5, "abs": 4.0}
    want = {"a": {"metrics": [row], "rows": "1", "ckpt/policy": {"'w'": tensor}, "ckpt/rng": [1, 2]}}

    def got(**change):
        return {"a": {**want["a"], **change}}

    # the measured difference between two machines (losses ~3e-6 relative) is not a difference
    assert behaviour.compare_values(want, got(metrics=[{**row, "loss_policy": -0.000977300078375265}])) == []
    assert behaviour.compare_values(want, got(**{"ckpt/policy": {"'w'": {**tensor, "sum": 0.5 + 4e-6}}})) == []
    assert behaviour.compare_values(want, got(metrics=[{**row, "loss_policy": -0.00099}])) == ["a:metrics"]
    assert behaviour.compare_values(want, got(metrics=[{**row, "return_mean": float("nan")}])) == ["a:metrics"]
    nan = {**want["a"], "metrics": [{**row, "return_mean": float("nan")}]}
    assert behaviour.compare_values({"a": nan}, {"a": nan}) == []  # a mean over no episodes, on both
    assert behaviour.compare_values(want, got(metrics=[{**row, "return_mean": 0.19}])) == ["a:metrics"]
    assert behaviour.compare_values(want, got(metrics=[row, row], rows="2")) == ["a:metrics", "a:rows"]
    assert behaviour.compare_values(want, got(**{"ckpt/policy": {"'w'": {**tensor, "sum": 0.51}}})) == ["a:ckpt/policy"]
    assert behaviour.compare_values(want, got(**{"ckpt/policy": {"'w'": {**tensor, "shape": [3, 2]}}})) == [
        "a:ckpt/policy"]
    assert behaviour.compare_values(want, got(**{"ckpt/rng": [1, 3]})) == ["a:ckpt/rng"]
    assert behaviour.compare_values(want, {"a": {k: v for k, v in want["a"].items() if k != "ckpt/rng"}}) == [
        "a:ckpt/rng"]
    assert behaviour.compare_values(want, got(**{"ckpt/collectors": [0]})) == []  # added state, as compare()


def test_values_of_a_run_folder_summarise_its_tensors(tmp_path):
    """``values`` reads what ``fingerprint`` hashes: a float tensor by its float64 sums."""
    run = tmp_path / "run"
    shutil.copytree(DATA / "half" / "metarim", run)
    got = behaviour.values(run)
    state = torch.load(next((run / "checkpoints").glob("ckpt-*.pt")), map_location="cpu", weights_only=True)
    key, w = next((k, v) for k, v in state["policy"].items() if v.is_floating_point())
    leaf = got["ckpt/policy"][repr(key)]
    assert leaf["shape"] == list(w.shape)
    assert leaf["sum"] == pytest.approx(float(sum(float(x) for x in w.double().flatten())), rel=1e-12)
    assert leaf["abs"] == pytest.approx(float(sum(abs(float(x)) for x in w.double().flatten())), rel=1e-12)
    assert got["rows"] == str(len(got["metrics"])) and set(got) == {"metrics", "rows", *(f"ckpt/{k}" for k in state)}
    assert behaviour.is_values({"metarim": got}) and not behaviour.is_values(
        {"metarim": behaviour.fingerprint(run)})


def test_compare_names_every_difference():
    want = {"a": {"metrics": "1", "ckpt/policy": "2"}}
    assert behaviour.compare(want, {"a": {"metrics": "1", "ckpt/policy": "2"}}) == []
    assert behaviour.compare(want, {"a": {"metrics": "1", "ckpt/policy": "3"}}) == ["a:ckpt/policy"]
    assert behaviour.compare(want, {"a": {"metrics": "1", "ckpt/policy": "2", "ckpt/x": "4"}}) == ["a:ckpt/x"]
    # state added since f898eb9 (MAML's and Reptile's task envs) is named apart, not a difference
    got = {"a": {"metrics": "1", "ckpt/policy": "2", "ckpt/collectors": "5"}}
    assert behaviour.compare(want, got) == [] and behaviour.added(want, got) == ["a:ckpt/collectors"]
    assert behaviour.compare({"a": {**want["a"], "ckpt/collectors": "6"}}, got) == ["a:ckpt/collectors"]
