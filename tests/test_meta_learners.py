"""Meta-RIM, MAML and Reptile: each update against an independent reference.

* Reptile: the interpolation θ + ε(mean θ̃ − θ), by hand, exactly.
* MAML: the meta-gradient of a step on fixed rollouts against a hand-written
  ``torch.func.functional_call`` + ``autograd.grad(create_graph=True)`` reference.
* Meta-RIM: the outer gradient against the same kind of reference with explicit block
  masks; it reaches the input and communication attention, and it is exactly zero on the
  blocks of a module that is never selected.

Gradients are compared in float64 on seeded, pre-collected rollouts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import pytest
import torch
from rim_reference import never_select_last

from metarim.algorithms import LEARNERS, make_learner, prepare_config
from metarim.algorithms.objectives import rollout_loss
from metarim.algorithms.reptile import reptile_update
from metarim.config import TrainConfig
from metarim.meta.backends import quiet_nonleaf_grad
from metarim.meta.partition import reduce_activity

LEVEL = "BabyAI-GoToLocalS6N2-v0"
TINY = {"env": LEVEL, "hidden_size": 12, "num_units": 3, "k": 2, "num_envs": 2, "num_steps": 8,
        "chunk_length": 4, "batch_size": 16, "num_tasks": 5, "meta_batch": 2, "max_grad_norm": 1e9}


def tiny(**kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **kw})


def as_double(rollout):
    """A float64 copy of a rollout (float tensors only)."""
    conv = lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return dataclasses.replace(
        rollout, obs=dict(rollout.obs), values=conv(rollout.values), rewards=conv(rollout.rewards),
        logprobs=conv(rollout.logprobs), last_value=conv(rollout.last_value),
        memory=tuple(conv(m) for m in rollout.memory),
    )


def func_loss(policy, params, rollout, config, kind="a2c", targets=None):
    """A2C/PPO loss of ``rollout`` under ``params`` through ``functional_call`` (no clone)."""

    class Call(torch.nn.Module):
        def forward(self, *args):
            return torch.func.functional_call(policy, params, args)

    return rollout_loss(Call(), rollout, config, kind=kind, targets=targets)


def loop_sequence_gae(chunks, gamma, lam):
    """GAE over the chunks as one sequence, a plain Python loop over scalars, split per chunk."""
    rewards = torch.cat([c.rewards for c in chunks]).tolist()
    values = torch.cat([c.values for c in chunks]).tolist()
    ends = torch.cat([c.ends for c in chunks]).tolist()
    last = chunks[-1].last_value.tolist()
    steps, cols = len(rewards), len(last)
    adv = [[0.0] * cols for _ in range(steps)]
    for b in range(cols):
        running, next_value = 0.0, last[b]
        for t in reversed(range(steps)):
            keep = 0.0 if ends[t][b] else 1.0
            delta = rewards[t][b] + gamma * keep * next_value - values[t][b]
            running = delta + gamma * lam * keep * running
            adv[t][b], next_value = running, values[t][b]
    adv = torch.tensor(adv, dtype=torch.float64)
    ret = adv + torch.cat([c.values for c in chunks])
    sizes = [c.rewards.shape[0] for c in chunks]
    return list(zip(adv.split(sizes), ret.split(sizes)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# -- Reptile ---------------------------------------------------------------------------
def test_reptile_update_by_hand():
    theta = {"w": torch.tensor([1.0, -2.0], dtype=torch.float64), "b": torch.tensor(0.5, dtype=torch.float64)}
    adapted = [{"w": torch.tensor([3.0, 0.0], dtype=torch.float64), "b": torch.tensor(1.5, dtype=torch.float64)},
               {"w": torch.tensor([-1.0, 2.0], dtype=torch.float64), "b": torch.tensor(2.5, dtype=torch.float64)}]
    new = reptile_update(theta, adapted, 0.25)
    # mean w = [1, 1] -> 1 + .25 * 0 = 1, -2 + .25 * 3 = -1.25; mean b = 2 -> .5 + .25 * 1.5
    torch.testing.assert_close(new["w"], torch.tensor([1.0, -1.25], dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(new["b"], torch.tensor(0.875, dtype=torch.float64), rtol=0, atol=0)
    with pytest.raises(ValueError):
        reptile_update(theta, [], 0.5)


def test_reptile_step_interpolates_adapted_weights(monkeypatch):
    learner = make_learner(tiny(algo="reptile", memory="rim", inner_steps=2, meta_step=0.3))
    theta = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    adapted: list[dict[str, torch.Tensor]] = []
    original = learner.adapt_task

    def record(task, start):
        for n in start:  # every task starts from θ
            torch.testing.assert_close(start[n], theta[n], rtol=0, atol=0)
        out = original(task, start)
        adapted.append({n: v.clone() for n, v in out.items()})
        return out

    monkeypatch.setattr(learner, "adapt_task", record)
    m = learner.step()
    assert len(adapted) == 2 and m["frames"] == 2 * 2 * 8 * 2
    for n, p in learner.policy.named_parameters():
        mean = (adapted[0][n] + adapted[1][n]) / 2
        torch.testing.assert_close(p.detach(), theta[n] + 0.3 * (mean - theta[n]))
    moved = sum(float((adapted[0][n] - theta[n]).abs().sum()) for n in theta)
    assert moved > 0, "the inner Adam steps did not change the weights"
    learner.close()


# -- MAML ------------------------------------------------------------------------------
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_matches_functional_reference(monkeypatch, first_order):
    cfg = tiny(algo="maml", memory="lstm", inner_lr=0.3, first_order=first_order)
    learner = make_learner(cfg)
    learner.policy.double()
    tasks = learner.train_tasks.tasks[:2]
    data = {t: [as_double(learner.collectors.collect(t, learner.policy)) for _ in range(2)] for t in tasks}
    queue = {t: list(v) for t, v in data.items()}
    monkeypatch.setattr(learner.collectors, "collect", lambda task, policy: queue[task].pop(0))
    monkeypatch.setattr(learner.optimizer, "step", lambda: None)
    learner.step(tasks)
    got = {n: p.grad.clone() for n, p in learner.policy.named_parameters() if p.grad is not None}

    leaves = dict(learner.policy.named_parameters())
    total = 0.0
    for t in tasks:
        inner, _, _ = func_loss(learner.policy, leaves, data[t][0], cfg)
        grads = torch.autograd.grad(inner, list(leaves.values()), create_graph=not first_order, allow_unused=True)
        adapted = {n: p - 0.3 * (g.detach() if first_order else g) if g is not None else p
                   for (n, p), g in zip(leaves.items(), grads)}
        outer, _, _ = func_loss(learner.policy, adapted, data[t][1], cfg)
        total = total + outer / len(tasks)
    ref = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
    assert got, "no gradient reached the policy"
    for (n, _), r in zip(leaves.items(), ref):
        if r is None:
            assert n not in got or not got[n].any()
            continue
        torch.testing.assert_close(got[n], r, rtol=1e-9, atol=1e-12, msg=n)
    learner.close()


# -- Meta-RIM --------------------------------------------------------------------------


def _meta_rim_with_fixed_chunks(monkeypatch, **kw):
    cfg = tiny(algo="metarim", memory="rim", inner_lr=0.5, fast_weights="reset", **kw)
    learner = make_learner(cfg)
    learner.policy.double()
    chunks = [as_double(learner.collector.collect()) for _ in range(learner.num_chunks)]
    queue = list(chunks)
    monkeypatch.setattr(learner.collector, "collect", lambda: queue.pop(0))
    monkeypatch.setattr(learner.optimizer, "step", lambda: None)
    learner.step()
    got = {n: p.grad.clone() for n, p in learner.policy.named_parameters() if p.grad is not None}
    return learner, cfg, chunks, got


def _reference(learner, cfg, chunks, first_order, rates=None):
    """θ_{i+1} = θ_i − α M(a_i) ∇θ_i L_i; outer = mean_{i≥1} L_i(θ_i) (mean over i≥0 with
    ``outer_chunks="all"``; PPO surrogate, GAE over the whole sequence); its gradient.
    ``rates``: per-element α by fast name (Meta-SGD), whose gradients are returned too,
    under ``"rate:" + name``."""
    leaves = dict(learner.policy.named_parameters())
    if rates is not None:
        leaves.update({f"rate:{n}": r for n, r in rates.items()})
    fast = set(learner.meta.partition.fast)
    params = {n: p for n, p in leaves.items() if not n.startswith("rate:")}
    outer = []
    targets = loop_sequence_gae(chunks, cfg.gamma, cfg.gae_lambda)
    alone = loop_sequence_gae(chunks[:1], cfg.gamma, cfg.gae_lambda)[0][0]  # chunk 0 bootstrapped alone
    assert not torch.allclose(targets[0][0], alone), "sequence GAE = per-chunk GAE here: the test could not tell"
    for i, chunk in enumerate(chunks):
        loss, _, masks = func_loss(learner.policy, params, chunk, cfg, kind="ppo", targets=targets[i])
        if i > 0 or cfg.outer_chunks == "all":
            outer.append(loss)
        if i < len(chunks) - 1:
            block = learner.meta.partition.block_masks(reduce_activity(masks), dtype=torch.float64)
            names = [n for n in params if n in fast]
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order,
                                        retain_graph=True)
            params = dict(params)
            for n, g in zip(names, grads):
                alpha = cfg.inner_lr if rates is None else rates[n]
                params[n] = params[n] - alpha * block[n] * (g.detach() if first_order else g)
    ref = torch.autograd.grad(torch.stack(outer).mean(), list(leaves.values()), allow_unused=True)
    return dict(zip(leaves, ref))


@pytest.mark.parametrize("first_order,outer_chunks", [(False, "adapted"), (True, "adapted"), (False, "all")])
def test_meta_rim_outer_gradient_matches_reference(monkeypatch, first_order, outer_chunks):
    never_select_last(monkeypatch)
    learner, cfg, chunks, got = _meta_rim_with_fixed_chunks(monkeypatch, first_order=first_order,
                                                            outer_chunks=outer_chunks)
    assert learner.num_chunks == 2
    ref = _reference(learner, cfg, chunks, first_order)
    for n, r in ref.items():
        if r is None:
            assert n not in got or not got[n].any(), n
        else:
            torch.testing.assert_close(got[n], r, rtol=1e-9, atol=1e-12, msg=n)
    learner.close()


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_sgd_rates_get_the_reference_gradient(monkeypatch, first_order):
    # learnable_lr: per-element rates (perturbed, so that each element's own rate counts)
    # get the outer gradient of the functional chain; so do the policy's parameters
    never_select_last(monkeypatch)
    cfg = tiny(algo="metarim", memory="rim", inner_lr=0.5, fast_weights="reset", learnable_lr=True,
               first_order=first_order)
    learner = make_learner(cfg)
    learner.meta.double()
    with torch.no_grad():
        for r in learner.meta.lrs:
            r.mul_(1 + 0.5 * torch.rand_like(r))
    chunks = [as_double(learner.collector.collect()) for _ in range(learner.num_chunks)]
    queue = list(chunks)
    monkeypatch.setattr(learner.collector, "collect", lambda: queue.pop(0))
    monkeypatch.setattr(learner.optimizer, "step", lambda: None)
    metrics = learner.step()
    assert 0.5 <= metrics["meta/inner_lr_min"] <= metrics["meta/inner_lr_mean"] <= metrics["meta/inner_lr_max"] <= 0.75
    rates = dict(zip(learner.meta.partition.fast, learner.meta.lrs))
    ref = _reference(learner, cfg, chunks, first_order, rates={n: r.detach().requires_grad_() for n, r in rates.items()})
    for n, r in rates.items():
        assert r.grad is not None and r.grad.abs().sum() > 0, n
        torch.testing.assert_close(r.grad, ref[f"rate:{n}"], rtol=1e-9, atol=1e-12, msg=n)
    for n, p in learner.policy.named_parameters():
        if ref[n] is not None:
            torch.testing.assert_close(p.grad, ref[n], rtol=1e-9, atol=1e-12, msg=n)
    learner.close()


def test_meta_sgd_rates_are_checkpointed_and_used_by_eval():
    from metarim.evaluation.adaptation import Adapter

    a = make_learner(tiny(algo="metarim", memory="rim", learnable_lr=True, inner_lr_lr=0.5))
    a.step()
    state = a.state_dict()
    assert set(state["inner_lrs"]) == set(a.meta.partition.fast)
    assert any(not torch.all(r == a.config.inner_lr) for r in state["inner_lrs"].values())  # they moved
    b = make_learner(tiny(algo="metarim", memory="rim", learnable_lr=True, seed=1))
    b.load_state_dict(state)
    for name, rate in zip(b.meta.partition.fast, b.meta.lrs):
        assert torch.equal(rate, state["inner_lrs"][name]), name
    plain = make_learner(tiny(algo="metarim", memory="rim"))
    for target, source in ((b, plain), (plain, b)):
        with pytest.raises(ValueError, match="disagree on learnable inner rates"):
            target.load_state_dict(source.state_dict())
    plain.close()
    # evaluation's masked step with the learned rates: θ − α ⊙ (M ⊙ ∇θ L), per element
    rates = state["inner_lrs"]
    adapter = Adapter(a.policy, a.config, "masked_sgd", rates)
    rollout = a.collector.collect()
    loss, _, masks = rollout_loss(adapter.policy, rollout, a.config)
    params = dict(adapter.policy.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in rates])
    block = adapter.partition.block_masks(reduce_activity(masks), dtype=loss.dtype)
    want = {n: (params[n] - rates[n] * block[n] * g).detach() for n, g in zip(rates, grads)}
    adapter.update(rollout)
    for n in rates:
        torch.testing.assert_close(params[n].detach(), want[n], msg=n)
    with pytest.raises(ValueError, match="learnable_lr=True is Meta-RIM's"):
        prepare_config(tiny(algo="ppo", learnable_lr=True))
    a.close(), b.close()


def test_meta_rim_gradient_reaches_attention_not_inactive_blocks(monkeypatch):
    never_select_last(monkeypatch)
    learner, cfg, chunks, got = _meta_rim_with_fixed_chunks(monkeypatch)
    names = list(got)
    for part in ("input_attention", "comm_attention"):
        assert any(part in n and got[n].abs().sum() > 0 for n in names), f"no outer gradient in {part}"
    part = learner.meta.partition
    assert part.fast and all("mechanisms" in n for n in part.fast)
    for n in part.fast:  # module 2 is never selected: its blocks get exactly zero gradient
        g = got.get(n, torch.zeros(part.shapes[n], dtype=torch.float64))
        blocks = g.unbind(part.axes[n])
        assert torch.equal(blocks[2], torch.zeros_like(blocks[2])), n
        assert blocks[0].abs().sum() > 0 and blocks[1].abs().sum() > 0, n
    learner.close()


def test_meta_rim_inner_step_leaves_inactive_blocks_and_slow_weights(monkeypatch):
    never_select_last(monkeypatch)
    cfg = tiny(algo="metarim", memory="rim", inner_lr=0.5)
    learner = make_learner(cfg)
    with quiet_nonleaf_grad():
        clone = learner.meta.clone()
        rollout = learner.collector.collect()
        loss, _, masks = rollout_loss(clone, rollout, cfg)
        before = {n: t.detach().clone() for n, t in clone.parameter_dict().items()}
        clone.adapt(loss, active=reduce_activity(masks))
    after = clone.parameter_dict()
    part = learner.meta.partition
    for n, t in after.items():
        if n in part.fast:
            moved = (t.detach() - before[n]).unbind(part.axes[n])
            assert torch.equal(moved[2], torch.zeros_like(moved[2])), n
        else:
            assert torch.equal(t.detach(), before[n]), n
    learner.close()


@pytest.mark.parametrize("learnable_lr", [False, True])
def test_meta_rim_online_step_equals_the_masked_learner_step(monkeypatch, learnable_lr):
    # the collection pass steps a plain copy (the actor) in place; the same step as a
    # first-order MaskedMAML clone's adapt, in float64 (with Meta-SGD rates too)
    never_select_last(monkeypatch)
    learner = make_learner(tiny(algo="metarim", memory="rim", inner_lr=0.5, learnable_lr=learnable_lr))
    learner.meta.double()
    if learnable_lr:
        with torch.no_grad():
            for r in learner.meta.lrs:
                r.mul_(1 + torch.rand_like(r))
    learner._sync_actor()
    chunk = as_double(learner.collector.collect())
    with quiet_nonleaf_grad():
        clone = learner.meta.clone(first_order=True)
        loss, _, masks = rollout_loss(clone, chunk, learner.config)
        clone.adapt(loss, active=reduce_activity(masks))
    learner._online_step(chunk)
    actor = dict(learner.actor.named_parameters())
    moved = 0
    for name, value in clone.parameter_dict().items():
        torch.testing.assert_close(actor[name].detach(), value.detach(), rtol=1e-12, atol=1e-12, msg=name)
        moved += not torch.equal(value.detach(), dict(learner.policy.named_parameters())[name].detach())
    assert moved == len(learner.meta.partition.fast)  # every fast tensor took a step
    learner.close()


def test_meta_rim_compiled_collection_trains_like_eager():
    torch.set_num_threads(1)
    runs = []
    for compiled in (False, True):
        learner = make_learner(tiny(algo="metarim", memory="rim", compile=compiled))
        runs.append((learner.step(), learner.policy.state_dict()))
        learner.close()
    (m_eager, p_eager), (m_comp, p_comp) = runs
    for key in m_eager:
        if not key.startswith("time/"):
            assert m_comp[key] == pytest.approx(m_eager[key], rel=1e-3, abs=1e-5, nan_ok=True), key
    for key in p_eager:
        torch.testing.assert_close(p_comp[key], p_eager[key], atol=1e-5, rtol=1e-4)


def test_meta_rim_carry_mode_moves_fast_weights_by_inner_progress(monkeypatch):
    cfg = tiny(algo="metarim", memory="rim", fast_weights="carry", inner_lr=0.5)
    learner = make_learner(cfg)
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    seen = {}
    original = learner._carry

    def spy(start, adapted):
        seen.update(adapted={n: v.clone() for n, v in adapted.items()})
        seen["adam"] = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
        original(start, adapted)

    monkeypatch.setattr(learner, "_carry", spy)
    learner.step()
    for n, p in learner.policy.named_parameters():
        if n in seen["adapted"]:
            torch.testing.assert_close(p.detach(), seen["adam"][n] + seen["adapted"][n] - before[n])
        else:
            assert torch.equal(p.detach(), seen["adam"][n])
    learner.close()


def test_learners_resume_from_state_dict():
    for algo, mem in (("metarim", "rim"), ("maml", "lstm"), ("reptile", "lstm")):
        a = make_learner(tiny(algo=algo, memory=mem))
        a.step()
        b = make_learner(tiny(algo=algo, memory=mem, seed=1))
        b.load_state_dict(a.state_dict())
        assert b.frames == a.frames and b.updates == 1
        for (n, p), (_, q) in zip(a.policy.named_parameters(), b.policy.named_parameters()):
            assert torch.equal(p, q), n
        a.close(), b.close()


def test_metarim_reports_outer_loss_parts():
    """Entropy, approximate KL and clip fraction of the outer chunks. With no inner step
    and one minibatch (all 16 frames) in one epoch, the outer loss sees the collecting
    parameters, so the ratio is exactly 1: KL 0, nothing clipped. With 4 epochs, later
    epochs see moved parameters."""
    learner = make_learner(tiny(algo="metarim", memory="rim", epochs=1, inner_lr=0.0))
    m = learner.step()
    learner.close()
    assert 0 < m["losses/entropy"] <= math.log(7) + 1e-6
    assert abs(m["losses/approx_kl"]) < 1e-6 and m["losses/clip_frac"] == 0.0
    learner = make_learner(tiny(algo="metarim", memory="rim", epochs=4, lr=0.05, clip=0.01))
    m = learner.step()
    learner.close()
    assert m["losses/approx_kl"] > 1e-6 and m["losses/clip_frac"] > 0


def test_metarim_needs_rim_and_two_chunks():
    # the learner's own checks (MetaRIM.check_config), run by make_learner before anything is built
    with pytest.raises(ValueError, match="memory='rim'"):
        make_learner(tiny(algo="metarim", memory="lstm"))
    with pytest.raises(ValueError, match="at least 2 chunks"):
        make_learner(tiny(algo="metarim", memory="rim", chunk_length=8))
    tiny(algo="metarim", memory="lstm")  # a learner-independent config: TrainConfig accepts it
    with pytest.raises(ValueError, match="fast_weights"):
        tiny(fast_weights="sometimes")


@pytest.mark.parametrize("algo", ["ppo", "a2c", "metarim", "fastslow", "maml", "reptile"])
def test_learners_declare_their_facts(algo):
    """Each learner states its adaptation rule, default inner rate and the switches it
    supports; the switches it does not support are refused by its own check."""
    want = {"ppo": ("adam", 0.1, True), "a2c": ("adam", 0.1, True), "metarim": ("masked_sgd", 10.0, True),
            "fastslow": ("adam", 0.1, True), "maml": ("sgd", 0.1, False), "reptile": ("adam", 0.1, False)}[algo]
    cls = LEARNERS[algo]
    assert (cls.adaptation_rule, cls.default_inner_lr, cls.supports_env_worker) == want
    assert cls.supports_compile == cls.supports_env_worker  # one vector env and a plain acting module
    memory = "rim" if algo in ("metarim", "fastslow") else "lstm"
    for switch, needle in (("env_worker", "env_worker=True needs a learner with one vector env"),
                           ("compile", "compile=True supports a2c, fastslow, metarim, ppo, not"),
                           ("learnable_lr", "learnable_lr=True is Meta-RIM's")):
        supported = getattr(cls, f"supports_{switch}")
        cfg = TrainConfig(algo=algo, memory=memory, **{switch: True})
        if supported:
            cls.check_config(cfg)
        else:
            with pytest.raises(ValueError, match=needle):
                cls.check_config(cfg)
    state = {"inner_lrs": {"w": torch.ones(2)}}
    assert (cls.adaptation_rates(state) is state["inner_lrs"]) == (algo == "metarim")


@pytest.mark.parametrize("run", ["ppo-lstm", "a2c-lstm", "metarim", "maml", "reptile"])
def test_checkpoint_keys_are_those_of_old_runs(run):
    """``state_dict`` (base entries, then ``Learner.stateful``) writes the keys, in the order,
    of the checkpoints written before the learners shared their plumbing; MAML and Reptile
    add ``"collectors"`` (their task envs) at the end, and still load the old ones."""
    from metarim.checkpoint import latest_checkpoint, load_checkpoint

    folder = pathlib.Path(__file__).parent / "data" / "f898eb9" / "half" / run
    old = load_checkpoint(latest_checkpoint(folder))
    config = TrainConfig.from_dict(json.loads((folder / "config.json").read_text())["config"], legacy=True)
    learner = make_learner(config)
    new = learner.state_dict()
    added = ["collectors"] if run in ("maml", "reptile") else []
    assert list(new) == [k for k in old if k != "py_rng"] + added  # py_rng: the Trainer's
    assert list(new["recent"]) == [] and isinstance(old["recent"], list)
    learner.load_state_dict(old)
    assert learner.updates == old["updates"] and list(learner.recent.episodes) == old["recent"]
    learner.close()


def test_old_config_with_empty_algo_options_loads():
    """Configs saved before ``algo_options`` was removed hold ``"algo_options": {}``: dropped.
    A non-empty value (which no learner ever read) is refused rather than ignored."""
    saved = json.loads((pathlib.Path(__file__).parent / "data/f898eb9/half/metarim/config.json").read_text())["config"]
    assert saved["algo_options"] == {}
    cfg = TrainConfig.from_dict(saved)
    assert "algo_options" not in cfg.to_dict() and cfg.inner_lr == 10.0
    with pytest.raises(ValueError, match="'algo_options' is no longer supported"):
        TrainConfig.from_dict({**saved, "algo_options": {"x": 1}})


def test_cli_train_and_eval_metarim(tmp_path, capsys):
    from metarim.cli import main

    out = tmp_path / "run"
    args = ["train", "--algo", "metarim", "--memory", "rim", "--env", LEVEL, "--frames", "64",
            "--hidden-size", "12", "--num-units", "3", "--k", "2", "--num-envs", "2", "--num-steps", "16",
            "--chunk-length", "8", "--batch-size", "16", "--first-order", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("updates,frames")
    assert main(["eval", "--run", str(out), "--episodes", "2", "--num-envs", "2"]) == 0
    assert '"success_rate"' in capsys.readouterr().out

    assert main(["eval", "--run", str(out), "--adapt-steps", "0", "1", "--zero-shot", "BabyAI-GoToLocalS8N7-v0",
                 "--episodes", "2", "--num-envs", "2"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["adaptation"]) == {"0", "1"}
    assert res["adaptation"]["1"]["episodes"] == 2 and math.isfinite(res["adaptation"]["1"]["adapt_loss"])
    assert 0 <= res["zero_shot"]["BabyAI-GoToLocalS8N7-v0"]["success_rate"] <= 1


def test_inner_lr_default_depends_on_the_rule(tmp_path):
    """Meta-RIM's masked step gets 10, a step on every parameter 0.1 (docs/meta_learners.md);
    an explicit value wins, and the resolved value is what a saved config holds, whichever
    way the run was built (make_learner, the CLI, a sweep)."""
    from metarim.cli import main
    from metarim.sweep.spec import expand_sweep

    assert TrainConfig(algo="metarim", memory="rim").inner_lr is None  # the learner decides
    assert prepare_config(TrainConfig(algo="metarim", memory="rim")).inner_lr == 10.0
    for algo in ("maml", "ppo", "reptile"):
        assert prepare_config(TrainConfig(algo=algo)).inner_lr == 0.1
    assert prepare_config(TrainConfig(algo="metarim", memory="rim", inner_lr=0.5)).inner_lr == 0.5
    learner = make_learner(cfg := tiny(algo="metarim", memory="rim"))
    assert cfg.inner_lr == 10.0 and learner.meta.lr == 10.0  # filled in place: Trainer writes this object
    learner.close()
    saved = cfg.to_dict()
    assert saved["inner_lr"] == 10.0 and TrainConfig.from_dict(saved).inner_lr == 10.0
    runs = expand_sweep({"learners": {"m": {"algo": "metarim", "memory": "rim"}, "p": {}}, "seeds": [0]})
    assert [r.config["inner_lr"] for r in runs] == [10.0, 0.1]
    out = tmp_path / "run"
    assert main(["train", "--algo", "metarim", "--memory", "rim", "--env", LEVEL, "--frames", "16",
                 "--hidden-size", "12", "--num-units", "3", "--k", "2", "--num-envs", "2", "--num-steps", "8",
                 "--chunk-length", "4", "--batch-size", "16", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["inner_lr"] == 10.0
    with pytest.raises(ValueError, match="inner_lr"):
        TrainConfig(inner_lr="fast")
