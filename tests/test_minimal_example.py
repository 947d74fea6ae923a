"""``examples/metarim_minimal.py``: its updates equal ``MetaRIM.step()``, and it trains.

Both run in float64 from the same config and seed, so they draw the same policy
initialisation, env episodes, sampled actions and minibatch permutations; the policy
parameters after each update must then be equal bit for bit. The example is written
independently of the learner's helpers (its losses, GAE split, online step and carry
are inline), so this checks one against the other.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import math
import pathlib
import sys

import pytest
import torch

from metarim.algorithms import make_learner
from metarim.config import TrainConfig

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "metarim_minimal.py"
SMALL = {"num_envs": 4, "num_steps": 16, "chunk_length": 8, "batch_size": 32, "epochs": 2,
         "hidden_size": 16, "num_units": 4, "k": 2, "num_tasks": 5, "seed": 3}


@pytest.fixture(scope="module")
def ex():
    # as tests/load_script.py, but registered in sys.modules: a dataclass (the example's
    # Args) looks its module up there to resolve string annotations
    spec = importlib.util.spec_from_file_location("metarim_minimal", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules[spec.name]


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("env_backend,first_order", [("minigrid", False), ("tensor", False), ("tensor", True)])
def test_updates_equal_metarim_step_in_float64(ex, env_backend, first_order):
    kw = {**SMALL, "env_backend": env_backend, "first_order": first_order}
    args = ex.Args(**kw)
    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)}
    # one global torch generator, two consumers: each runs on its own saved RNG state
    # the example runs each chunk's chain whole: the learner's meta_window=0
    learner = make_learner(TrainConfig.from_dict({"algo": "metarim", "memory": "rim", "meta_window": 0, **shared}))
    learner.policy.double()
    rng_ref = torch.get_rng_state()
    run = ex.setup(args)
    run.policy.double()
    rng_ex = torch.get_rng_state()
    assert torch.equal(rng_ex, rng_ref)  # the same draws so far (the policy initialisation)
    init = _params(run.policy)
    torch.testing.assert_close(init, _params(learner.policy), rtol=0, atol=0)
    try:
        for update in (1, 2):
            torch.set_rng_state(rng_ref)
            want = learner.step()
            rng_ref = torch.get_rng_state()
            torch.set_rng_state(rng_ex)
            got = ex.update(run, args)
            rng_ex = torch.get_rng_state()
            assert torch.equal(rng_ex, rng_ref)  # same actions sampled, same permutations
            ref, out = _params(learner.policy), _params(run.policy)
            assert next(iter(out.values())).dtype == torch.float64
            for name in ref:  # bitwise, not merely close
                assert torch.equal(out[name], ref[name]), (update, name)
            assert got["frames"] == want["frames"] == update * 64
            assert got["losses/outer"] == want["losses/outer"]
            assert got["losses/inner"] == want["losses/inner"]
        # the update is not trivial: every tensor moved, the fast ones also by the carry
        assert all(not torch.equal(out[n], init[n]) for n in out)
        assert run.frames == learner.frames
    finally:
        learner.close()
        run.envs.close()


def test_equality_check_can_fail(ex):
    # the same comparison tells a different inner rate apart (it is not vacuous)
    args = ex.Args(**SMALL)
    other = dataclasses.replace(args, inner_lr=args.inner_lr * 0.5)
    runs = []
    for a in (args, other):
        run = ex.setup(a)
        run.policy.double()
        ex.update(run, a)
        runs.append(_params(run.policy))
        run.envs.close()
    fast = [n for n in runs[0] if "mechanisms" in n]
    assert fast and all(not torch.equal(runs[0][n], runs[1][n]) for n in fast)


def test_example_uses_only_public_names():
    # every metarim name it imports is in its module's __all__ (no private helpers,
    # nothing of metarim.algorithms: the learner is what it is compared against)
    tree = ast.parse(EXAMPLE.read_text())
    found = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "metarim":
            assert not node.module.startswith("metarim.algorithms"), node.module
            public = importlib.import_module(node.module).__all__
            for alias in node.names:
                assert alias.name in public, (node.module, alias.name)
                found += 1
        elif isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] != "metarim" for a in node.names)
    assert found >= 5


def test_main_trains_for_a_few_frames(ex, capsys):
    assert ex.main(["--frames", "64", "--num-envs", "4", "--num-steps", "16", "--chunk-length", "8",
                    "--batch-size", "32", "--epochs", "1", "--hidden-size", "16", "--num-tasks", "5",
                    "--env-backend", "tensor", "--no-reset-memory"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frames=64 ")
    fields = dict(kv.split("=") for kv in lines[0].split())
    assert math.isfinite(float(fields["outer"])) and math.isfinite(float(fields["inner"]))


def test_main_refuses_a_chunk_length_that_does_not_split(ex, capsys):
    with pytest.raises(SystemExit) as e:
        ex.main(["--num-steps", "16", "--chunk-length", "16"])
    assert e.value.code == 2
    assert "at least 2 chunks" in capsys.readouterr().err
