"""The two-timescale learner (``--algo fastslow``) against a hand-written Adam, float64.

The fast parameters take an Adam step on their own clipped gradient at every minibatch;
the slow ones stay fixed for ``slow_every - 1`` minibatches and then take one Adam step
on the mean of their clipped gradients. Losses are linear in the parameters,
:math:`L_j = \\sum_p \\langle C_{j,p}, p \\rangle`, so each gradient is a known tensor.
"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from metarim.algorithms import make_learner, prepare_config
from metarim.algorithms.fastslow import FastSlow, GradientSum
from metarim.cli import main
from metarim.config import TrainConfig

LEVEL = "BabyAI-GoToLocalS6N2-v0"
TINY = {"algo": "fastslow", "memory": "rim", "env": LEVEL, "hidden_size": 12, "num_units": 3, "k": 2,
        "num_envs": 2, "num_steps": 8, "batch_size": 8, "recurrence": 4, "epochs": 2}
B1, B2 = 0.9, 0.999


def tiny(**kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **kw})


class HandAdam:
    """torch.optim.Adam's update (no weight decay, no amsgrad) written out."""

    def __init__(self, lr: float, eps: float):
        self.lr, self.eps, self.t, self.m, self.v = lr, eps, 0, None, None

    def step(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.m is None:
            self.m = [torch.zeros_like(g) for g in grads]
            self.v = [torch.zeros_like(g) for g in grads]
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            self.m[i] = B1 * self.m[i] + (1 - B1) * g
            self.v[i] = B2 * self.v[i] + (1 - B2) * g * g
            m_hat = self.m[i] / (1 - B1 ** self.t)
            denom = (self.v[i] / (1 - B2 ** self.t)).sqrt() + self.eps
            out.append(p - self.lr * m_hat / denom)
        return out


def clipped(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """torch's clip_grad_norm_ rule: g * min(1, c / (||g|| + 1e-6))."""
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    return [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads]


@pytest.mark.parametrize("fast_params", ["modules", "attention"])
def test_fast_every_minibatch_slow_every_k_by_hand(fast_params):
    k, steps, max_norm = 3, 7, 0.7
    learner = make_learner(tiny(slow_every=k, fast_params=fast_params, fast_lr=3e-3, slow_lr=2e-3,
                                max_grad_norm=max_norm, adam_eps=1e-6))
    try:
        assert isinstance(learner, FastSlow)
        learner.policy.double()
        names = dict(learner.policy.named_parameters())
        fast = [names[n] for n in learner.partition.fast]
        slow = [names[n] for n in learner.partition.slow]
        assert fast and slow and len(fast) + len(slow) == len(names)
        theta = [p.detach().clone() for p in fast]
        phi = [p.detach().clone() for p in slow]
        phi0 = phi
        fast_adam, slow_adam = HandAdam(3e-3, 1e-6), HandAdam(2e-3, 1e-6)
        gen = torch.Generator().manual_seed(1)
        pending: list[list[torch.Tensor]] = []
        for j in range(1, steps + 1):
            coef_f = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in fast]
            coef_s = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in slow]
            loss = sum((c * p).sum() for c, p in zip(coef_f + coef_s, fast + slow))
            norm = learner.optimizer_step(loss, None)
            whole = math.sqrt(sum(float(c.pow(2).sum()) for c in coef_f + coef_s))
            assert float(norm) == pytest.approx(whole, rel=1e-12)
            theta = fast_adam.step(theta, clipped(coef_f, max_norm))
            pending.append(clipped(coef_s, max_norm))
            if j % k == 0:
                mean = [sum(gs) / k for gs in zip(*pending)]
                phi = slow_adam.step(phi, mean)
                pending = []
            for p, ref in zip(fast, theta):
                torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-14)
            for p, ref in zip(slow, phi):
                torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-14)
            assert learner.slow_grads.count == j % k
            assert learner.slow_steps == j // k
        # both groups really moved (two slow steps, seven fast ones)
        assert slow_adam.t == steps // k == 2 and fast_adam.t == steps
        assert all(not torch.equal(p.detach(), q) for p, q in zip(slow, phi0))
    finally:
        learner.close()


def test_partition_follows_fast_params():
    for preset, fast_word in (("modules", ".mechanisms."), ("attention", "_attention.")):
        learner = make_learner(tiny(fast_params=preset))
        try:
            assert learner.partition.fast and all(fast_word in n for n in learner.partition.fast)
            assert {id(p) for g in learner.fast_optimizer.param_groups for p in g["params"]} == {
                id(p) for p in learner.fast_params}
            assert {id(p) for g in learner.slow_optimizer.param_groups for p in g["params"]} == {
                id(p) for p in learner.slow_params}
            assert "actor.0.weight" in learner.partition.slow
        finally:
            learner.close()


def test_step_runs_and_counts_slow_steps():
    learner = make_learner(tiny(slow_every=3))
    try:
        out = learner.step()
        out = learner.step()  # 2 updates x 2 epochs x 2 minibatches = 8 minibatches
        assert out["fastslow/slow_steps"] == 2.0 and learner.slow_grads.count == 2
        assert math.isfinite(out["losses/grad_norm"])
    finally:
        learner.close()


@pytest.mark.parametrize("group", ["fast_params", "slow_params"])
def test_nonfinite_gradient_steps_nothing(group):
    learner = make_learner(tiny(slow_every=1))
    try:
        before = [p.detach().clone() for p in learner.policy.parameters()]
        p0, other = getattr(learner, group)[0], learner.fast_params[-1]
        loss = (p0 - p0.detach()).abs().sum().sqrt() + other.sum()  # finite value, NaN gradient on p0
        with pytest.raises(FloatingPointError, match="non-finite gradient norm"):
            learner.optimizer_step(loss, None)
        assert all(torch.equal(a, b.detach()) for a, b in zip(before, learner.policy.parameters()))
        assert learner.slow_grads.count == 0 and learner.slow_steps == 0
    finally:
        learner.close()


def test_check_config():
    with pytest.raises(ValueError, match="algo='fastslow' needs memory='rim'"):
        make_learner(tiny(memory="lstm"))
    with pytest.raises(ValueError, match="slow_every=0 must be >= 1"):
        tiny(slow_every=0)
    with pytest.raises(ValueError, match="fast_lr=-1"):
        tiny(fast_lr=-1.0)
    # each learner refuses the switches of issue 19 it does not read
    cases = [({"algo": "ppo", "selection": "topk"}, r"selection='topk' is for a masked inner step \(metarim\), not 'ppo'"),
             ({"algo": "fastslow", "selection": "mean"}, "not 'fastslow'"),
             ({"algo": "ppo", "fast_params": "attention"}, "fast_params='attention' is for fastslow, metarim, not 'ppo'"),
             ({"algo": "metarim", "slow_every": 3}, "fast_lr/slow_lr/slow_every are for fastslow, not 'metarim'"),
             ({"algo": "maml", "memory": "lstm", "slow_lr": 1e-3}, "are for fastslow, not 'maml'")]
    for kw, needle in cases:
        with pytest.raises(ValueError, match=needle):
            prepare_config(tiny(**kw))
    prepare_config(tiny(algo="metarim", selection="topk", fast_params="attention", chunk_length=4))
    prepare_config(tiny(fast_params="attention", fast_lr=1e-3, slow_lr=1e-4, slow_every=2))


def test_gradient_sum_state_roundtrip():
    p = torch.nn.Parameter(torch.zeros(3))
    acc = GradientSum([p])
    assert acc.state_dict() == {"count": 0, "sums": []}
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    acc.add()
    other = GradientSum([p])
    other.load_state_dict(acc.state_dict())
    p.grad = torch.tensor([1.0, 0.0, 1.0])
    acc.add()
    other.add()
    assert other.count == 2 and torch.equal(other.mean()[0], acc.mean()[0])
    with pytest.raises(ValueError, match="do not match"):
        GradientSum([torch.nn.Parameter(torch.zeros(2))]).load_state_dict(acc.state_dict())


SMALL = ["--algo", "fastslow", "--memory", "rim", "--env", "MiniGrid-DoorKey-5x5-v0", "--num-envs", "4",
         "--num-steps", "32", "--batch-size", "64", "--hidden-size", "32", "--epochs", "2",
         "--slow-every", "5", "--quiet"]


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in {"fps", "collect_s", "update_s"}}
                for r in csv.DictReader(f)]


def test_resume_matches_uninterrupted_run(tmp_path):
    """4 minibatches per update and a slow step every 5: the checkpoint resumed from (update 3, 12 minibatches) holds a partial sum of 2."""
    assert main(["train", "--out", str(tmp_path / "full"), *SMALL, "--frames", "768", "--checkpoint-every", "1"]) == 0
    assert main(["train", "--out", str(tmp_path / "part"), *SMALL, "--frames", "384", "--checkpoint-every", "1"]) == 0
    assert main(["train", "--out", str(tmp_path / "part"), "--resume", "--frames", "768", "--quiet"]) == 0
    full = _rows(tmp_path / "full" / "metrics.csv")
    assert len(full) == 6 and full[-1]["fastslow_slow_steps"] == "4.0"
    assert _rows(tmp_path / "part" / "metrics.csv") == full
