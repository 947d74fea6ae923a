"""Runs written before the redesign (commit f898eb9) still resume, and resume to exactly
what that commit computed.

``tests/data/f898eb9/half/<learner>`` are run folders that f898eb9 trained half way
(``benchmarks/behaviour.py --keep DIR --half``: its ``config.json``, ``metrics.csv`` and
checkpoint). ``tests/data/f898eb9/resumed.json`` holds the fingerprints (the learning
columns of ``metrics.csv`` and every tensor of the final checkpoint) of those runs
resumed to the end by f898eb9 itself, ``behaviour.json`` those of the same runs trained
without a stop. Resuming a half run with today's code must give the same hashes as
f898eb9 did. The resumed run reads its config from the old ``config.json``, so later
changes of the defaults do not touch this test. Two learners run by default, all six
under ``slow``; ``python benchmarks/behaviour.py --check tests/data/f898eb9/behaviour.json``
compares fresh runs with the current defaults.

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
from load_script import load_script

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "f898eb9"
behaviour = load_script(ROOT / "benchmarks" / "behaviour.py")
WANT = json.loads((DATA / "resumed.json").read_text())
EXACT_RESUME = ["ppo-lstm", "ppo-rim", "a2c-lstm", "metarim"]


def _resumed(name: str, tmp_path: pathlib.Path) -> tuple[dict[str, str], dict[str, str]]:
    """Fingerprints of the half run as stored and after resuming it to the end here."""
    run = tmp_path / name
    shutil.copytree(DATA / "half" / name, run)
    before = behaviour.fingerprint(run)
    behaviour.train(name, run, frames=behaviour.frames_of(name), resume=True)
    return before, behaviour.fingerprint(run)


@pytest.mark.parametrize("name", ["ppo-rim", "metarim"])
def test_pre_redesign_run_resumes_to_the_same_numbers(name, tmp_path):
    before, after = _resumed(name, tmp_path)
    assert before["rows"] != WANT[name]["rows"]  # the stored run stopped half way
    assert behaviour.compare({name: WANT[name]}, {name: after}) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppo-lstm", "a2c-lstm", "maml", "reptile"])
def test_pre_redesign_run_resumes_to_the_same_numbers_slow(name, tmp_path):
    before, after = _resumed(name, tmp_path)
    assert before["rows"] != WANT[name]["rows"]  # the stored run stopped half way
    assert behaviour.compare({name: WANT[name]}, {name: after}) == []


def test_exact_resume_learners_resumed_to_the_uninterrupted_numbers():
    full = json.loads((DATA / "behaviour.json").read_text())
    assert behaviour.compare({n: full[n] for n in EXACT_RESUME}, WANT) == []
    assert behaviour.compare({n: full[n] for n in ("maml", "reptile")}, WANT) != []


def test_compare_names_every_difference():
    want = {"a": {"metrics": "1", "ckpt/policy": "2"}}
    assert behaviour.compare(want, {"a": {"metrics": "1", "ckpt/policy": "2"}}) == []
    assert behaviour.compare(want, {"a": {"metrics": "1", "ckpt/policy": "3"}}) == ["a:ckpt/policy"]
    assert behaviour.compare(want, {"a": {"metrics": "1", "ckpt/policy": "2", "ckpt/x": "4"}}) == ["a:ckpt/x"]
    # state added since f898eb9 (MAML's and Reptile's task envs) is named apart, not a difference
    got = {"a": {"metrics": "1", "ckpt/policy": "2", "ckpt/collectors": "5"}}
    assert behaviour.compare(want, got) == [] and behaviour.added(want, got) == ["a:ckpt/collectors"]
    assert behaviour.compare({"a": {**want["a"], "ckpt/collectors": "6"}}, got) == ["a:ckpt/collectors"]
