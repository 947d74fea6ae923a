"""The functional meta-gradient (metarim.algorithms.meta_chain) against Meta-RIM's autograd
chain (MetaRIM._meta_loss and a backward through the differentiable clone), in float64 on
pre-collected rollouts, for every selection, partition, window and outer-loss setting; and
a whole learner step taken through it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metarim.algorithms import make_learner
from metarim.algorithms.meta_chain import FunctionalChain, unsupported_reason
from metarim.algorithms.objectives import select_columns, sequence_targets
from metarim.config import TrainConfig
from metarim.meta.backends import quiet_nonleaf_grad

TINY = {"env": "BabyAI-GoToLocalS6N2-v0", "algo": "metarim", "memory": "rim", "hidden_size": 12, "num_units": 3,
        "k": 2, "num_envs": 4, "num_steps": 16, "chunk_length": 8, "batch_size": 32, "meta_window": 4,
        "inner_lr": 10.0, "max_grad_norm": 1e9, "seed": 3}


def _double(rollout):
    conv = lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return dataclasses.replace(rollout, values=conv(rollout.values), rewards=conv(rollout.rewards),
                               logprobs=conv(rollout.logprobs), last_value=conv(rollout.last_value),
                               memory=tuple(conv(m) for m in rollout.memory))


def _setup(**kw):
    learner = make_learner(TrainConfig.from_dict({**TINY, **kw}))
    learner.policy.double()
    learner.collector.memory = tuple(m.double() for m in learner.collector.memory)  # kept without resets
    with quiet_nonleaf_grad():
        learner._sync_actor()
        chunks = [_double(learner.collector.collect()) for _ in range(learner.num_chunks)]
    targets = sequence_targets(chunks, learner.config)
    cols = torch.tensor([0, 2])
    return (learner, [select_columns(r, cols) for r in chunks], [(a[:, cols], r[:, cols]) for a, r in targets])


SETTINGS = [
    {},
    {"selection": "topk"},
    {"selection": "topk", "k": 1},
    {"fast_params": "attention", "inner_lr": 0.1},
    {"first_order": True},
    {"outer_chunks": "adapted"},
    {"meta_window": 0},
    {"meta_window": 8},
    {"combine": "film"},
    {"combine": "concat", "reset_memory": False},
    {"num_steps": 24, "rim_init": "learned"},
]


@pytest.mark.parametrize("kw", SETTINGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_functional_meta_gradient_equals_the_autograd_chain(kw):
    learner, chunks, targets = _setup(**kw)
    params = list(learner.policy.parameters())
    with quiet_nonleaf_grad():
        loss, inner, active, parts = learner._meta_loss(chunks, targets)
        want = torch.autograd.grad(loss, params, allow_unused=True)
    chain = FunctionalChain(learner.meta, learner.config)
    for p in params:
        p.grad = None
    got_loss, aux = chain.backward(chunks, targets)
    assert abs(float(got_loss) - loss.item()) < 1e-12
    assert aux["inner"].tolist() == pytest.approx(inner, abs=1e-12)
    assert aux["active"].tolist() == pytest.approx(active, abs=0)
    for k, v in parts.items():
        assert aux[f"part/{k}"].item() == pytest.approx(v.item(), abs=1e-12), k
    for (name, p), w in zip(learner.policy.named_parameters(), want):
        w = torch.zeros_like(p) if w is None else w
        torch.testing.assert_close(p.grad, w, rtol=0, atol=1e-12, msg=name)
    # the second-order terms are in it: the first-order gradient is another one
    if not learner.config.first_order and learner.config.inner_lr > 0.05:
        fo = FunctionalChain(learner.meta, dataclasses.replace(learner.config, first_order=True))
        got = {n: p.grad.clone() for n, p in learner.policy.named_parameters()}
        for p in params:
            p.grad = None
        fo.backward(chunks, targets)
        assert max(float((got[n] - p.grad).abs().max()) for n, p in learner.policy.named_parameters()) > 1e-9
    learner.close()


def test_a_learner_step_through_the_function_equals_the_autograd_step():
    """Two learners from the same seed, one stepping through the (uncompiled) function:
    the same metrics (times aside) and the same parameters after two updates."""
    a = make_learner(TrainConfig.from_dict({**TINY, "epochs": 2}))
    ma = [a.step() for _ in range(2)]  # one learner at a time: they share torch's global RNG
    b = make_learner(TrainConfig.from_dict({**TINY, "epochs": 2}))
    b.chain = FunctionalChain(b.meta, b.config)
    mb = [b.step() for _ in range(2)]
    for x, y in zip(ma, mb):
        assert x.keys() == y.keys()
        for key in x:
            if not key.startswith("time/"):
                assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-6, nan_ok=True), key
    for (n, p), q in zip(a.policy.named_parameters(), b.policy.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=n)
    a.close(), b.close()


def test_unsupported_settings_are_named():
    learner = make_learner(TrainConfig.from_dict({**TINY, "learnable_lr": True}))
    assert "learnable_lr" in unsupported_reason(learner.config, learner.meta.partition)
    with pytest.raises(ValueError, match="does not support learnable_lr"):
        FunctionalChain(learner.meta, learner.config)
    assert learner.chain is None  # compile=False: the autograd chain
    learner.close()


@pytest.mark.slow
def test_compiled_learner_step_equals_the_eager_one():
    """``compile=True``: the collection pass and the meta-gradient compiled (minutes with a
    cold inductor cache); float32 rounding apart, the same update."""
    a = make_learner(TrainConfig.from_dict(TINY))
    ma = a.step()
    b = make_learner(TrainConfig.from_dict({**TINY, "compile": True}))
    assert b.chain is not None
    mb = b.step()
    assert mb["losses/outer"] == pytest.approx(ma["losses/outer"], rel=1e-4)
    for (n, p), q in zip(a.policy.named_parameters(), b.policy.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-3, atol=1e-5, msg=n)
    a.close(), b.close()
