"""Meta-RIM's truncated-backprop windows (``meta_window``) against independent references.

* ``rollout_loss(window=w)``: one batched call over ``T/w * B`` windows equals a Python
  loop that re-runs each window separately from its stored memory, in the loss, its
  gradient and the activity masks (float64, 1e-12); at ``w = T`` it is the whole-chunk
  loss bit for bit, and at ``w < T`` the gradient differs from it (the truncation).
* The learner's meta-gradient with ``meta_window=w`` equals a hand-written chain
  (``torch.func.functional_call``, explicit block masks, ``autograd.grad`` with
  ``create_graph``) whose every chunk loss is that per-window loop; with
  ``meta_window=chunk_length`` it equals the default chain exactly.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metarim.algorithms import make_learner
from metarim.algorithms.objectives import join_windows, policy_terms, rollout_loss, split_windows
from metarim.config import TrainConfig
from metarim.meta.partition import reduce_activity
from metarim.rl.losses import ppo_loss

TINY = {"env": "BabyAI-GoToLocalS6N2-v0", "env_backend": "tensor", "hidden_size": 12, "num_units": 3,
        "k": 2, "num_envs": 3, "num_steps": 16, "chunk_length": 8, "batch_size": 48, "num_tasks": 5,
        "max_grad_norm": 1e9, "algo": "metarim", "memory": "rim", "inner_lr": 0.5, "fast_weights": "reset"}


def as_double(rollout):
    """A float64 copy of a rollout (float tensors only)."""
    conv = lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return dataclasses.replace(
        rollout, obs=dict(rollout.obs), values=conv(rollout.values), rewards=conv(rollout.rewards),
        logprobs=conv(rollout.logprobs), last_value=conv(rollout.last_value),
        memory=tuple(conv(m) for m in rollout.memory))


def loop_window_loss(call, rollout, config, window, targets):
    """The PPO loss of ``rollout`` re-run window by window in a Python loop: window ``j``
    of every column from the stored memory before its first step ``j * window``."""
    steps = rollout.actions.shape[0]
    logits, values, masks = [], [], []
    for t0 in range(0, steps, window):
        part = slice(t0, t0 + window)
        obs = {k: rollout.obs[k][part] for k in ("image", "mission")}
        lg, v, _, m = call(obs, tuple(mem[t0] for mem in rollout.memory), rollout.starts[part])
        logits.append(lg)
        values.append(v)
        masks.append(m)
    adv, ret = targets
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    logp, entropy = policy_terms(torch.cat(logits), rollout.actions)
    loss, _ = ppo_loss(logp, rollout.logprobs, adv, torch.cat(values), rollout.values, ret, entropy,
                       clip=config.clip, value_coef=config.value_coef, entropy_coef=config.entropy_coef)
    return loss, torch.cat(masks)


@pytest.fixture
def learner_and_chunks():
    torch.manual_seed(0)
    learner = make_learner(TrainConfig.from_dict(TINY))
    learner.policy.double()
    learner._sync_actor()
    chunks = [as_double(learner.collector.collect()) for _ in range(learner.num_chunks)]
    yield learner, chunks
    learner.close()


def test_split_and_join_windows_are_ppo_layout():
    x = torch.arange(24).reshape(6, 2, 2)
    y = split_windows(x, 3)
    assert y.shape == (3, 4, 2)
    assert y[:, 1].equal(x[0:3, 1]) and y[:, 2].equal(x[3:6, 0])  # column j * B + b
    assert join_windows(y, 6).equal(x)


@pytest.mark.parametrize("window", [2, 4])
def test_rollout_loss_windows_equal_separate_reruns(learner_and_chunks, window):
    learner, chunks = learner_and_chunks
    cfg, chunk, policy = learner.config, chunks[1], learner.policy
    targets = tuple(t.double() for t in (torch.randn(8, 3), torch.randn(8, 3)))
    params = list(policy.parameters())
    loss, _, masks = rollout_loss(policy, chunk, cfg, kind="ppo", targets=targets, window=window)
    ref, ref_masks = loop_window_loss(policy, chunk, cfg, window, targets)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    assert masks.equal(ref_masks)
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(ref, params, allow_unused=True)
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    # the truncation is visible: the whole chunk's gradient is not the windowed one
    whole, _, _ = rollout_loss(policy, chunk, cfg, kind="ppo", targets=targets)
    full = torch.autograd.grad(whole, params, allow_unused=True)
    diff = max(float((g - f).abs().max()) for g, f in zip(got, full) if g is not None and f is not None)
    assert diff > 1e-6


def test_rollout_loss_window_of_whole_length_is_the_whole_chunk(learner_and_chunks):
    learner, chunks = learner_and_chunks
    cfg, policy = learner.config, learner.policy
    a = rollout_loss(policy, chunks[0], cfg, window=8)
    b = rollout_loss(policy, chunks[0], cfg, window=0)
    assert a[0].equal(b[0]) and a[2].equal(b[2])
    with pytest.raises(ValueError, match="window=3"):
        rollout_loss(policy, chunks[0], cfg, window=3)


def _learner_grad(monkeypatch, chunks, **kw):
    """The gradient of one ``MetaRIM.step`` on the fixed ``chunks`` (Adam step disabled)."""
    torch.manual_seed(0)
    learner = make_learner(TrainConfig.from_dict({**TINY, **kw}))
    learner.policy.double()
    queue = list(chunks)
    monkeypatch.setattr(learner.collector, "collect", lambda: queue.pop(0))
    monkeypatch.setattr(learner.optimizer, "step", lambda: None)
    monkeypatch.setattr(torch, "randperm", lambda n: torch.arange(n))
    learner.step()
    got = {n: p.grad.clone() for n, p in learner.policy.named_parameters() if p.grad is not None}
    return learner, got


def _reference_chain(learner, chunks, window, first_order):
    """θ_{i+1} = θ_i − α M(a_i) ∇θ_i L_i with L_i the per-window loop loss; outer = mean_i L_i."""
    from metarim.algorithms.objectives import sequence_targets

    cfg, policy = learner.config, learner.policy
    leaves = dict(policy.named_parameters())
    fast = set(learner.meta.partition.fast)
    params = dict(leaves)

    def call(*args):
        return torch.func.functional_call(policy, params, args)

    outer = []
    targets = sequence_targets(chunks, cfg)
    for i, chunk in enumerate(chunks):
        loss, masks = loop_window_loss(call, chunk, cfg, window, targets[i])
        outer.append(loss)
        if i < len(chunks) - 1:
            block = learner.meta.partition.block_masks(reduce_activity(masks), dtype=torch.float64)
            names = [n for n in params if n in fast]
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order,
                                        retain_graph=True)
            params = dict(params)
            for n, g in zip(names, grads):
                params[n] = params[n] - cfg.inner_lr * block[n] * (g.detach() if first_order else g)
    ref = torch.autograd.grad(torch.stack(outer).mean(), list(leaves.values()), allow_unused=True)
    return dict(zip(leaves, ref))


@pytest.mark.parametrize("window,first_order", [(2, False), (4, False), (4, True)])
def test_windowed_meta_gradient_matches_reference(monkeypatch, learner_and_chunks, window, first_order):
    _, chunks = learner_and_chunks
    learner, got = _learner_grad(monkeypatch, chunks, meta_window=window, first_order=first_order)
    ref = _reference_chain(learner, chunks, window, first_order)
    checked = 0
    for n, r in ref.items():
        if r is None or not r.any():
            assert n not in got or not got[n].any(), n
        else:
            torch.testing.assert_close(got[n], r, rtol=1e-9, atol=1e-12, msg=n)
            checked += 1
    assert checked > 10
    learner.close()


def test_window_of_chunk_length_is_the_whole_chunk_chain(monkeypatch, learner_and_chunks):
    _, chunks = learner_and_chunks
    default, a = _learner_grad(monkeypatch, chunks, meta_window=0)  # 0: the whole chunk
    windowed, b = _learner_grad(monkeypatch, chunks, meta_window=8)
    truncated, c = _learner_grad(monkeypatch, chunks, meta_window=2)
    assert a.keys() == b.keys()
    for n in a:
        assert a[n].equal(b[n]), n
    assert max(float((a[n] - c[n]).abs().max()) for n in a) > 1e-6  # a smaller window does change it
    for x in (default, windowed, truncated):
        x.close()


def test_meta_window_must_divide_chunk_length():
    with pytest.raises(ValueError, match="meta_window=3 must divide chunk_length=8"):
        make_learner(TrainConfig.from_dict({**TINY, "meta_window": 3}))
    with pytest.raises(ValueError, match="meta_window=-1"):
        TrainConfig.from_dict({**TINY, "meta_window": -1})


def test_meta_throughput_divides_each_row_by_the_env_runs_beside_it(capsys):
    """``benchmarks/meta_throughput.py``: env only before and after every learner row, each
    row's ratio against the mean of those two, the load average recorded."""
    import json
    import pathlib

    from load_script import load_script

    mod = load_script(pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "meta_throughput.py")
    threads = torch.get_num_threads()
    try:
        rc = mod.main(["--rows", "default, whole", "--updates", "1", "--env-frames", "64", "--num-envs", "16",
                       "--chunk-length", "8", "--num-units", "2", "--k", "1", "--hidden-size", "8"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = out["rows"]
    assert list(rows) == ["env only", "metarim (2nd order, default, whole chunks)",
                          "metarim (1st order, default, whole chunks)"]
    envs = rows["env only"]["fps_all"]
    assert len(envs) == 3
    for i, name in enumerate(list(rows)[1:]):
        r = rows[name]
        assert r["env_fps"] == pytest.approx((envs[i] + envs[i + 1]) / 2)
        assert r["ratio"] == pytest.approx(r["fps"] / r["env_fps"])
        assert r["load"] >= 0 and r["frames_per_step"] == 16 * 16
