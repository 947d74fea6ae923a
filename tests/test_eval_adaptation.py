"""The evaluation adapter takes training's masked step and follows ``reset_memory``.

The reference is written by hand in float64: the A2C loss of the chunk re-run with the
config's ``reset_memory``, its gradient, and :math:`\\theta - \\alpha (M \\odot g)` with the
block mask of the modules that were active (the last module never is, here).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from rim_reference import never_select_last

from metarim.algorithms import make_learner
from metarim.algorithms.objectives import rollout_loss
from metarim.config import TrainConfig
from metarim.evaluation.adaptation import Adapter, fast_adaptation
from metarim.meta import quiet_nonleaf_grad
from metarim.rl.rollout import RolloutCollector

TINY = {"env": "BabyAI-GoToLocalS6N2-v0", "hidden_size": 12, "num_units": 3, "k": 2, "num_envs": 2,
        "num_steps": 8, "chunk_length": 4, "batch_size": 16, "num_tasks": 5, "meta_batch": 2,
        "max_grad_norm": 1e9}


def tiny(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"algo": "metarim", "memory": "rim", **TINY, **kw})




def as_double(rollout):
    conv = lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return dataclasses.replace(
        rollout, obs=dict(rollout.obs), values=conv(rollout.values), rewards=conv(rollout.rewards),
        logprobs=conv(rollout.logprobs), last_value=conv(rollout.last_value),
        memory=tuple(conv(m) for m in rollout.memory),
    )


def reference_step(policy, chunk, config, rates, fast, reset_memory):
    """θ − α (M ⊙ ∇θ L) on a copy of ``policy``, by hand; the last module's blocks masked."""
    policy = copy.deepcopy(policy)
    loss, _, _ = rollout_loss(policy, chunk, config, reset_memory=reset_memory)
    params = dict(policy.named_parameters())
    grads = torch.autograd.grad(loss, [params[n] for n in fast])
    out = {}
    for name, g in zip(fast, grads):
        mask = torch.ones_like(g)
        mask[-1] = 0.0  # every fast tensor is stacked module first: (N, ...)
        rate = rates[name] if isinstance(rates, dict) else rates
        out[name] = (params[name] - rate * (mask * g)).detach()
    return out


@pytest.mark.parametrize("learnable_lr", [False, True])
@pytest.mark.parametrize("reset_memory", [True, False])
def test_evaluation_adaptation_step_equals_the_online_step(monkeypatch, reset_memory, learnable_lr):
    never_select_last(monkeypatch)
    learner = make_learner(tiny(inner_lr=0.5, learnable_lr=learnable_lr, reset_memory=reset_memory))
    learner.meta.double()
    if learnable_lr:
        with torch.no_grad():
            for r in learner.meta.lrs:
                r.mul_(1 + torch.rand_like(r))
    learner._sync_actor()
    learner.collector.memory = tuple(m.double() for m in learner.collector.memory)
    chunk = as_double(learner.collector.collect())
    starts = chunk.starts.clone()
    starts[2, 0] = True  # an episode starts mid-chunk: reset_memory changes the loss
    chunk = dataclasses.replace(chunk, starts=starts)
    fast = list(learner.meta.partition.fast)
    rates = learner.inner_rates()
    want = reference_step(learner.policy, chunk, learner.config, rates, fast, reset_memory)
    other = reference_step(learner.policy, chunk, learner.config, rates, fast, not reset_memory)
    assert any(not torch.allclose(want[n], other[n]) for n in fast)  # the switch matters here

    adapter = Adapter(learner.policy, learner.config, "masked_sgd", rates if learnable_lr else None)
    before = {n: p.detach().clone() for n, p in adapter.policy.named_parameters()}
    adapter.update(chunk)
    with quiet_nonleaf_grad():
        learner._online_step(chunk)
    evaluated = dict(adapter.policy.named_parameters())
    trained = dict(learner.actor.named_parameters())
    for name, value in evaluated.items():
        torch.testing.assert_close(value.detach(), trained[name].detach(), rtol=1e-12, atol=1e-12, msg=name)
        if name in want:
            torch.testing.assert_close(value.detach(), want[name], rtol=1e-12, atol=1e-12, msg=name)
            assert not torch.equal(value.detach(), before[name]), name
            assert torch.equal(value.detach()[-1], before[name][-1]), name  # inactive module kept
        else:
            assert torch.equal(value.detach(), before[name]), name  # slow: not adapted
    learner.close()


@pytest.mark.parametrize("reset_memory", [True, False])
def test_fast_adaptation_collects_with_the_configs_reset_memory(monkeypatch, reset_memory):
    collectors: list[RolloutCollector] = []
    init = RolloutCollector.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        collectors.append(self)

    learner = make_learner(tiny(reset_memory=reset_memory))
    monkeypatch.setattr(RolloutCollector, "__init__", spy)
    configs: list[TrainConfig] = []
    update = Adapter.update

    def spy_update(self, rollout):
        configs.append(self.config)
        return update(self, rollout)

    monkeypatch.setattr(Adapter, "update", spy_update)
    task = learner.held_out_tasks.tasks[0]
    out = fast_adaptation(learner.policy, learner.config, task, learner.vocab, steps=(1,), episodes=2)
    assert set(out) == {1} and math.isfinite(out[1]["adapt_loss"])
    assert [c.reset_memory for c in collectors] == [reset_memory]
    assert [c.reset_memory for c in configs] == [reset_memory]
    learner.close()
