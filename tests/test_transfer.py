"""Easy → hard transfer (:mod:`metarim.evaluation.transfer`), ``metarim transfer`` and
``examples/transfer_meta.py --quick``.

References: the zero-shot numbers against a loop written here on plain minigrid envs
(episode seeds, mission ids and action draws by hand); each adaptation step against
:math:`\\theta - \\alpha \\nabla_\\theta L` computed by hand in float64 on the rollout it was
given; the tensor backend against the minigrid one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import io
import json
import math
import pathlib
import re
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from load_script import load_script

from metarim.algorithms import build_policy, prepare_config
from metarim.algorithms.objectives import rollout_loss
from metarim.cli import main
from metarim.config import TrainConfig
from metarim.envs.minigrid import check_level
from metarim.envs.tensor import SUPPORTED_LEVELS
from metarim.evaluation.transfer import (
    TRANSFER_FAMILIES,
    family_of,
    resolve_backend,
    transfer,
    transfer_report,
)
from metarim.tasks.seeding import env_seeds
from metarim.tasks.task import MAX_SEED
from metarim.tasks.vocab import Vocab

adaptation = importlib.import_module("metarim.evaluation.adaptation")
evaluate = importlib.import_module("metarim.evaluation.evaluate")  # the module: the package exports a function of that name
EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "transfer_meta.py"
OUT_OF_DATE = pytest.mark.filterwarnings("ignore:.*is out of date:DeprecationWarning")  # MultiRoom-N4-S5-v0
TINY = {"hidden_size": 12, "num_units": 3, "k": 2, "num_envs": 3, "num_steps": 8, "chunk_length": 4,
        "batch_size": 24, "meta_batch": 2, "num_tasks": 4, "lr": 1e-3, "inner_lr": 0.5}


def tiny(algo: str = "ppo", memory: str = "lstm", **kw) -> TrainConfig:
    return prepare_config(TrainConfig.from_dict({"algo": algo, "memory": memory, **TINY, **kw}))


def policy_for(config: TrainConfig, vocab: Vocab, seed: int = 0):
    torch.manual_seed(seed)
    return build_policy(config, 7, vocab).eval()


# ---------------------------------------------------------------------------- families


def test_every_family_names_registered_tensor_levels():
    assert set(TRANSFER_FAMILIES) == {"gotolocal", "doorkey", "multiroom", "empty"}
    assert TRANSFER_FAMILIES["gotolocal"].targets == ("BabyAI-GoToLocalS8N7-v0", "BabyAI-GoToLocal-v0")
    assert TRANSFER_FAMILIES["doorkey"].targets == ("MiniGrid-DoorKey-8x8-v0", "MiniGrid-DoorKey-16x16-v0")
    assert TRANSFER_FAMILIES["multiroom"].targets == ("MiniGrid-MultiRoom-N4-S5-v0",)
    assert TRANSFER_FAMILIES["empty"].targets == ("MiniGrid-Empty-16x16-v0",)
    for name, fam in TRANSFER_FAMILIES.items():
        assert family_of(fam.source) == name
        for level in (fam.source, *fam.targets):
            check_level(level)  # registered with gymnasium
            assert level in SUPPORTED_LEVELS and resolve_backend(level) == "tensor"
    assert family_of("MiniGrid-DoorKey-8x8-v0") is None


@OUT_OF_DATE
def test_targets_are_larger_than_their_source():
    """Each target has a larger grid, more objects or longer episodes than its source."""

    def size(level):
        with contextlib.redirect_stdout(io.StringIO()):
            env = gym.make(level)
            env.reset(seed=0)
        u = env.unwrapped
        objects = sum(c is not None and c.type not in ("wall",) for c in u.grid.grid)
        env.close()
        return u.width * u.height, objects, u.max_steps

    for fam in TRANSFER_FAMILIES.values():
        src = size(fam.source)
        for level in fam.targets:
            tgt = size(level)
            assert all(t >= s for t, s in zip(tgt, src)) and tgt != src, (level, tgt, src)


def test_resolve_backend():
    assert resolve_backend("BabyAI-BossLevel-v0") == "minigrid"
    assert resolve_backend("MiniGrid-Empty-5x5-v0", "minigrid") == "minigrid"
    with pytest.raises(ValueError, match="not supported by the tensor env"):
        resolve_backend("BabyAI-BossLevel-v0", "tensor")
    with pytest.raises(ValueError, match="must be one of auto, minigrid, tensor"):
        resolve_backend("MiniGrid-Empty-5x5-v0", "jax")


# ----------------------------------------------------------------- zero-shot reference


def hand_evaluation(policy, level, vocab_words, *, episodes, num_envs, seed, unknown=1):
    """Success and return over ``episodes`` episodes of ``level``, on plain minigrid envs.

    As :func:`~metarim.evaluation.evaluate.evaluate` documents it: env ``b`` draws its
    episode seeds uniformly from ``[0, MAX_SEED)`` with ``default_rng(env_seeds(seed)[b])``;
    the quota of episodes is split evenly over the envs in advance; the envs step in lockstep
    with actions drawn from the softmax with torch's generator seeded with ``seed``; memory
    is zeroed at each episode start; success is a positive reward on termination. Missions
    are encoded here: the id of each word, ``unknown`` (1, ``<unk>``) for a word not in
    ``vocab_words``.
    """
    torch.manual_seed(seed)
    quota = [episodes // num_envs + (b < episodes % num_envs) for b in range(num_envs)]
    envs = [gym.make(level) for _ in range(num_envs)]
    rngs = [np.random.default_rng(s) for s in env_seeds(seed, num_envs)]
    ids = {w: i for i, w in enumerate(vocab_words)}

    def encode(mission):
        out = np.zeros(32, dtype=np.int64)
        words = re.findall(r"[a-z]+", mission.lower())
        out[: len(words)] = [ids.get(w, unknown) for w in words]
        return out

    def reset(b):
        with contextlib.redirect_stdout(io.StringIO()):
            o, _ = envs[b].reset(seed=int(rngs[b].integers(0, MAX_SEED)))
        return o

    obs = [reset(b) for b in range(num_envs)]
    memory = policy.initial_state(num_envs)
    start = torch.ones(1, num_envs, dtype=torch.bool)
    ret, done, results = [0.0] * num_envs, [0] * num_envs, []
    with torch.no_grad():
        while any(d < q for d, q in zip(done, quota)):
            batch = {"image": torch.from_numpy(np.stack([o["image"] for o in obs]))[None],
                     "direction": torch.tensor([[int(o["direction"]) for o in obs]]),
                     "mission": torch.from_numpy(np.stack([encode(o["mission"]) for o in obs]))[None]}
            logits, _, memory, _ = policy(batch, memory, start)
            actions = torch.multinomial(torch.softmax(logits[0], -1), 1)[:, 0]
            start = torch.zeros(1, num_envs, dtype=torch.bool)
            for b in range(num_envs):
                o, r, term, trunc, _ = envs[b].step(int(actions[b]))
                ret[b] += float(r)
                if term or trunc:
                    if done[b] < quota[b]:
                        results.append((float(term and r > 0), ret[b]))
                    done[b] += 1
                    ret[b] = 0.0
                    o = reset(b)
                    start[0, b] = True
                obs[b] = o
    for e in envs:
        e.close()
    return float(np.mean([s for s, _ in results])), float(np.mean([r for _, r in results])), len(results)


EMPTY_WORDS = "get to the green goal square".split()  # the mission of MiniGrid-Empty-*


@pytest.mark.parametrize("memory", ["lstm", "rim"])
def test_zero_shot_with_unseen_words_equals_a_hand_loop_on_minigrid(memory):
    """k = 0 on a target whose missions have words the run never saw (a run whose
    vocabulary holds only Empty's mission, measured on GoTo missions): they are encoded
    as ``<unk>``, the caller's vocabulary is left as it was, and the numbers equal a hand
    loop on minigrid that encodes unseen words as 1 (and differ from one that encodes them
    as 0, so that the encoding is what is tested)."""
    config = tiny(memory=memory, env="MiniGrid-Empty-5x5-v0")
    vocab = Vocab(words=EMPTY_WORDS)
    words = list(vocab.words)
    policy = policy_for(config, vocab)
    target = "BabyAI-GoToLocalS8N7-v0"
    res = transfer(policy, config, vocab, target, steps=(0,), episodes=9, seed=70)[0]
    assert res["backend"] == "tensor" and res["env"] == target and res["episodes"] == 9
    assert math.isnan(res["adapt_loss"])
    assert list(vocab.words) == words and not vocab.frozen  # no word added, the caller's vocab untouched
    success, ret, n = hand_evaluation(policy, target, words, episodes=9, num_envs=9, seed=71)  # eval_envs=128
    assert n == 9 and ret > 0  # some episodes succeed: the returns say which
    assert res["success_rate"] == success
    assert res["return_mean"] == pytest.approx(ret, abs=1e-12)
    assert hand_evaluation(policy, target, words, episodes=9, num_envs=9, seed=71, unknown=0)[1] != ret
    again = transfer(policy, config, vocab, target, steps=(0,), episodes=9, seed=70, backend="minigrid")[0]
    assert {k: v for k, v in again.items() if k not in ("backend", "adapt_loss")} == \
        {k: v for k, v in res.items() if k not in ("backend", "adapt_loss")}


def test_zero_shot_on_a_babyai_target_equals_the_hand_loop():
    config = tiny(memory="rim", env="BabyAI-GoToLocalS6N2-v0")
    vocab = Vocab()
    policy = policy_for(config, vocab, seed=3)
    res = transfer(policy, config, vocab, "BabyAI-GoToLocal-v0", steps=(0,), episodes=12, seed=10, eval_envs=5)[0]
    success, ret, n = hand_evaluation(policy, "BabyAI-GoToLocal-v0", list(vocab.words), episodes=12,
                                      num_envs=5, seed=11)
    assert n == 12 and ret > 0
    assert res["success_rate"] == success
    assert res["return_mean"] == pytest.approx(ret, abs=1e-12)


# ------------------------------------------------------------------- k adaptation steps


def as_double(rollout):
    conv = lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return dataclasses.replace(
        rollout, obs=dict(rollout.obs), values=conv(rollout.values), rewards=conv(rollout.rewards),
        logprobs=conv(rollout.logprobs), last_value=conv(rollout.last_value),
        memory=tuple(conv(m) for m in rollout.memory))


@pytest.fixture
def spies(monkeypatch):
    """Records each adaptation update (parameters before and after, the rollout) and, at
    each evaluation, how many updates came before it and the parameters evaluated."""
    log = {"updates": [], "evals": []}
    update, evaluate_fn = adaptation.Adapter.update, evaluate.evaluate

    def spy_update(self, rollout):
        before = copy.deepcopy(self.policy)
        loss = update(self, rollout)
        log["updates"].append((before, rollout, {n: p.detach().clone() for n, p in self.policy.named_parameters()},
                               self))
        return loss

    def spy_evaluate(policy, *args, **kwargs):
        log["evals"].append((len(log["updates"]), {n: p.detach().clone() for n, p in policy.named_parameters()}))
        return evaluate_fn(policy, *args, **kwargs)

    monkeypatch.setattr(adaptation.Adapter, "update", spy_update)
    monkeypatch.setattr(evaluate, "evaluate", spy_evaluate)
    return log


def test_k_steps_are_exactly_k_sgd_steps_by_hand(spies):
    """MAML's rule: step ``i`` is θ ← θ − α ∇θ L(rollout i) (float64 by hand, on the
    rollout it got), and the result for ``k`` evaluates the parameters after exactly
    ``k`` steps."""
    config = tiny(algo="maml", memory="rim", env="MiniGrid-DoorKey-5x5-v0", inner_lr=0.5)
    vocab = Vocab()
    policy = policy_for(config, vocab)
    original = {n: p.detach().clone() for n, p in policy.named_parameters()}
    res = transfer(policy, config, vocab, "BabyAI-GoToLocalS8N7-v0", steps=(5, 0, 2, 1), episodes=3, seed=5)
    assert sorted(res) == [0, 1, 2, 5]
    assert len(spies["updates"]) == 5
    assert [k for k, _ in spies["evals"]] == [0, 1, 2, 5]
    for k, params in spies["evals"]:
        want = original if k == 0 else spies["updates"][k - 1][2]
        for n in params:
            assert torch.equal(params[n], want[n]), (k, n)
    prev = original
    for i, (before, rollout, after, adapter) in enumerate(spies["updates"]):
        assert adapter.rule == "sgd"
        assert rollout.rewards.shape == (config.num_steps, config.num_envs)
        for n, p in before.named_parameters():
            assert torch.equal(p.detach(), prev[n]), (i, n)  # steps are cumulative
        ref = before.double()
        loss, _, _ = rollout_loss(ref, as_double(rollout), config, reset_memory=config.reset_memory)
        names, params = zip(*ref.named_parameters())
        grads = torch.autograd.grad(loss, params)
        moved = 0.0
        for n, p, g in zip(names, params, grads):
            want = p.detach() - config.inner_lr * g
            torch.testing.assert_close(after[n].double(), want, rtol=1e-4, atol=1e-6, msg=f"step {i} {n}")
            moved = max(moved, float((after[n].double() - p.detach()).abs().max()))
        assert moved > 1e-4  # the step is not a no-op: the comparison above can fail
        prev = after
    for n, p in policy.named_parameters():
        assert torch.equal(p.detach(), original[n])  # the policy itself is left unchanged
    assert math.isnan(res[0]["adapt_loss"]) and all(math.isfinite(res[k]["adapt_loss"]) for k in (1, 2, 5))


@pytest.mark.parametrize(("algo", "memory", "rule"), [("metarim", "rim", "masked_sgd"), ("ppo", "lstm", "adam"),
                                                      ("reptile", "rim", "adam")])
def test_each_learner_adapts_with_its_own_rule_k_times(spies, algo, memory, rule):
    config = tiny(algo=algo, memory=memory, env="MiniGrid-Empty-5x5-v0")
    vocab = Vocab()
    policy = policy_for(config, vocab)
    transfer(policy, config, vocab, "BabyAI-GoToLocalS8N7-v0", steps=(0, 2), episodes=3, seed=9)
    assert len(spies["updates"]) == 2 and [k for k, _ in spies["evals"]] == [0, 2]
    length = config.chunk_length if rule == "masked_sgd" else config.num_steps
    for before, rollout, after, adapter in spies["updates"]:
        assert adapter.rule == rule and rollout.rewards.shape == (length, config.num_envs)
        changed = {n for n, p in before.named_parameters() if not torch.equal(p.detach(), after[n])}
        if rule == "masked_sgd":  # only fast (module) weights move
            assert changed and changed <= set(adapter.partition.fast)
        else:
            assert changed


def test_tensor_and_minigrid_backends_give_the_same_adaptation():
    config = tiny(algo="ppo", memory="lstm", env="MiniGrid-DoorKey-5x5-v0")
    vocab = Vocab()
    policy = policy_for(config, vocab)
    runs = [transfer(policy, config, vocab, "BabyAI-GoToLocal-v0", steps=(0, 1), episodes=4, seed=2, backend=b)
            for b in ("tensor", "minigrid")]
    for k in (0, 1):
        a, b = ({n: v for n, v in r[k].items() if n != "backend"} for r in runs)
        if k == 0:
            assert math.isnan(a.pop("adapt_loss")) and math.isnan(b.pop("adapt_loss"))
        assert a == b, k


def test_eval_envs_none_is_the_runs_num_envs():
    config = tiny(env="MiniGrid-Empty-5x5-v0")
    vocab = Vocab()
    policy = policy_for(config, vocab, seed=1)
    res = transfer(policy, config, vocab, "MiniGrid-Empty-6x6-v0", steps=(0,), episodes=4, seed=3, eval_envs=None)[0]
    success, ret, n = hand_evaluation(policy, "MiniGrid-Empty-6x6-v0", list(vocab.words), episodes=4,
                                      num_envs=config.num_envs, seed=4)
    assert (res["success_rate"], n) == (success, 4) and res["return_mean"] == pytest.approx(ret, abs=1e-12)


def test_transfer_rejects_bad_input():
    config = tiny()
    vocab = Vocab()
    policy = policy_for(config, vocab)
    with pytest.raises(ValueError, match="unknown env 'MiniGrid-DoorKey-9x9-v0'"):
        transfer(policy, config, vocab, "MiniGrid-DoorKey-9x9-v0")
    with pytest.raises(ValueError, match="must be non-negative"):
        transfer(policy, config, vocab, "MiniGrid-Empty-8x8-v0", steps=(-1,))
    with pytest.raises(ValueError, match="episodes=0"):
        transfer(policy, config, vocab, "MiniGrid-Empty-8x8-v0", episodes=0)
    with pytest.raises(ValueError, match="eval_envs=0"):
        transfer(policy, config, vocab, "MiniGrid-Empty-8x8-v0", eval_envs=0)


# ---------------------------------------------------------------------- command line

SMALL = ["--num-envs", "4", "--num-steps", "16", "--batch-size", "32", "--hidden-size", "16", "--epochs", "1",
         "--quiet", "--env-backend", "tensor", "--frames", "128"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer") / "run"
    assert main(["train", "--out", str(out), "--algo", "ppo", "--memory", "lstm",
                 "--env", "MiniGrid-MultiRoom-N2-S4-v0", *SMALL]) == 0
    return out


@OUT_OF_DATE
def test_cli_transfer_prints_the_library_report(run, capsys):
    assert main(["transfer", "--run", str(run), "--episodes", "3", "--adapt-steps", "0", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["family"], res["source"], res["algo"], res["adaptation_rule"]) == \
        ("multiroom", "MiniGrid-MultiRoom-N2-S4-v0", "ppo", "adam")
    assert list(res["transfer"]) == ["MiniGrid-MultiRoom-N4-S5-v0"]  # the family's target by default
    by_k = res["transfer"]["MiniGrid-MultiRoom-N4-S5-v0"]
    assert set(by_k) == {"0", "1"} and all(r["episodes"] == 3 and r["backend"] == "tensor" for r in by_k.values())
    lib = transfer_report(run, ["MiniGrid-MultiRoom-N4-S5-v0"], steps=(0, 1), episodes=3)
    assert json.loads(json.dumps(lib)) == res


@OUT_OF_DATE
def test_cli_transfer_to_a_named_level_and_backend(run, capsys):
    argv = ["transfer", "--run", str(run), "--level", "MiniGrid-Empty-6x6-v0", "--episodes", "2",
            "--adapt-steps", "0", "--env-backend", "minigrid"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["transfer"]) == ["MiniGrid-Empty-6x6-v0"]
    assert res["transfer"]["MiniGrid-Empty-6x6-v0"]["0"]["backend"] == "minigrid"


@pytest.mark.parametrize(("argv", "message"), [
    (["--level", "MiniGrid-DoorKey-9x9-v0"], "unknown env 'MiniGrid-DoorKey-9x9-v0'"),
    (["--level", "BabyAI-BossLevel-v0", "--env-backend", "tensor"], "not supported by the tensor env"),
    (["--env-backend", "jax"], "invalid choice: 'jax'"),
    (["--adapt-steps", "0", "-1"], "--adapt-steps -1 must be >= 0"),
    (["--episodes", "0"], "--episodes 0 must be >= 1"),
    (["--num-envs", "0"], "--num-envs 0 must be >= 1"),
])
def test_cli_transfer_bad_input(run, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["transfer", "--run", str(run), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("metarim: error: ") and err.count("\n") == 1 and message in err, err


def test_cli_transfer_missing_run_and_no_family(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["transfer", "--run", str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a metarim run (no config.json)" in err
    out = tmp_path / "other"
    assert main(["train", "--out", str(out), "--env", "MiniGrid-Empty-6x6-v0", *SMALL]) == 0
    with pytest.raises(SystemExit) as e:
        main(["transfer", "--run", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "source of no transfer family" in err and "name the target levels" in err


# ------------------------------------------------------------------- the quick example


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer_quick")
    mod = load_script(EXAMPLE)
    with pytest.warns(DeprecationWarning, match="out of date"):  # MultiRoom-N4-S5-v0
        assert mod.main(["--quick", "--out", str(out)]) == 0
    return mod, out


def test_quick_writes_the_transfer_table(quick):
    mod, out = quick
    png = (out / "transfer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    with open(out / "summary.json") as f:
        data = json.load(f, parse_constant=lambda c: 1 / 0)  # strict JSON: no NaN
    assert list(data["families"]) == ["gotolocal", "multiroom"] and data["adapt_steps"] == [0, 1, 2, 5]
    assert data["command"].startswith("python examples/transfer_meta.py --quick")
    for family, fam in data["families"].items():
        assert list(fam["summary"]) == ["metarim", "lstm"]
        assert fam["targets"] == list(TRANSFER_FAMILIES[family].targets)
        for learner, metrics in fam["summary"].items():
            want = {mod.metric(fam["source"], None), mod.metric(fam["source"], None, "return")}
            want |= {mod.metric(lv, k, w) for lv in fam["targets"] for k in (0, 1, 2, 5, "gain")
                     for w in ("success", "return")}
            assert set(metrics) == want, (family, learner)
            for name, entry in metrics.items():
                assert len(entry["values"]) == 1 and entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
                if not name.startswith("return"):
                    lo = -1.0 if name.endswith("gain") else 0.0  # a gain is a difference of two rates
                    assert lo <= entry["mean"] <= 1.0
                if learner != "metarim":
                    assert entry["welch_p"] is None  # one seed: no test (NaN -> null)
        for r in fam["runs"]:
            assert r["config"]["frames"] == 512 and r["config"]["env"] == fam["source"]
            assert r["config"]["env_backend"] == "tensor"
            for lv, by_k in r["transfer"].items():
                assert by_k["0"]["adapt_loss"] is None and by_k["5"]["adapt_loss"] is not None
                # the table's cell is this run's number
                assert fam["summary"][r["learner"]][mod.metric(lv, 2)]["values"] == [by_k["2"]["success_rate"]]
                # the gain is k = 5 minus k = 0 of the same run, by hand
                for key, what in (("success_rate", "success"), ("return_mean", "return")):
                    got = fam["summary"][r["learner"]][mod.metric(lv, "gain", what)]["values"]
                    assert got == [by_k["5"][key] - by_k["0"][key]]
    runs = {r["learner"]: r for r in data["families"]["gotolocal"]["runs"]}
    assert runs["metarim"]["config"]["algo"] == "metarim" and runs["lstm"]["config"]["memory"] == "lstm"


def test_quick_markdown_tables(quick):
    _, out = quick
    md = (out / "summary.md").read_text()
    heads = [ln for ln in md.splitlines() if ln.startswith("| learner")]
    assert len(heads) == 4  # success and return, two families
    assert heads[0] == ("| learner | GoToLocalS6N2 (source) | " + " | ".join(
        f"{lv} {c}" for lv in ("GoToLocalS8N7", "GoToLocal") for c in ("k=0", "k=1", "k=2", "k=5", "gain 5−0"))
        + " |")
    rows = [ln for ln in md.splitlines() if ln.startswith("| metarim") or ln.startswith("| lstm")]
    assert len(rows) == 8 and all("[" in c for ln in rows for c in ln.strip("|").split("|")[1:])
    assert "bootstrap" in md and "Welch" in md and "Command: `python examples/transfer_meta.py --quick" in md


def test_report_only_summarises_what_is_measured(quick, capsys, tmp_path):
    mod, out = quick
    before = json.loads((out / "summary.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "multiroom" / "runs" / "lstm-s0.json").unlink()  # as if this run were still training
    assert mod.main(["--quick", "--out", str(copy), "--report-only"]) == 0
    err = capsys.readouterr().err
    assert "measuring" not in err and "missing (not in the summary): multiroom/lstm-s0" in err
    data = json.loads((copy / "summary.json").read_text())
    assert data["missing"] == ["multiroom/lstm-s0"]
    assert list(data["families"]["multiroom"]["summary"]) == ["metarim"]
    assert data["families"]["gotolocal"]["summary"] == before["families"]["gotolocal"]["summary"]
    assert "Missing (not yet trained or measured" in (copy / "summary.md").read_text()
    assert not (copy / "multiroom" / "runs" / "lstm-s0.json").exists()  # nothing measured


def test_source_min_keeps_the_runs_that_learned_the_source(quick, capsys, tmp_path):
    mod, out = quick
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    learned = copy / "gotolocal" / "runs" / "lstm-s0.json"
    run = json.loads(learned.read_text())
    run["source"]["success_rate"] = 0.95  # as if it had learned the source; the others did not at 512 frames
    learned.write_text(json.dumps(run))
    others = [r for f in ("gotolocal", "multiroom") for r in sorted((copy / f / "runs").glob("*.json"))
              if r != learned]
    assert all(json.loads(r.read_text())["source"]["success_rate"] < 0.9 for r in others)
    assert mod.main(["--quick", "--out", str(copy), "--report-only", "--source-min", "0.9"]) == 0
    data = json.loads((copy / "summary.json").read_text())
    assert list(data["families"]) == ["gotolocal"] and list(data["families"]["gotolocal"]["summary"]) == ["lstm"]
    cell = data["families"]["gotolocal"]["summary"]["lstm"][mod.metric("BabyAI-GoToLocal-v0", 0)]
    assert cell["values"] == [run["transfer"]["BabyAI-GoToLocal-v0"]["0"]["success_rate"]]
    assert len(data["excluded"]) == len(others) == 3 and "gotolocal/metarim-s0 (" in data["excluded"][0]
    assert "Left out by --source-min 0.9" in (copy / "summary.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        mod.main(["--quick", "--out", str(copy), "--report-only", "--source-min", "1.5"])
    assert e.value.code == 2 and "--source-min 1.5 must be a success rate in [0, 1]" in capsys.readouterr().err


def test_report_only_without_measurements_is_a_one_line_error(quick, capsys, tmp_path):
    mod, _ = quick
    assert mod.main(["--quick", "--out", str(tmp_path), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no measurement" in err and "without --report-only" in err


def test_quick_resumes_finished_runs(quick, capsys):
    mod, out = quick
    path = out / "gotolocal" / "runs" / "lstm-s0.json"
    before = path.stat().st_mtime_ns
    assert mod.main(["--quick", "--out", str(out), "--families", "gotolocal"]) == 0
    err = capsys.readouterr().err
    assert err.count("done earlier") == 2 and "measuring" not in err
    assert path.stat().st_mtime_ns == before
