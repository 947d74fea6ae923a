"""Tests of masked differentiable adaptation (metarim.meta.maml), float64 and seeded."""

from __future__ import annotations

import copy
import gc
import resource
import weakref

import learn2learn as l2l
import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.testing import assert_close

from metarim.meta import MaskedMAML, available_backends, masked_maml_update, masked_sgd
from metarim.meta.partition import reduce_activity
from metarim.rim import RIM, GroupLinear

BACKENDS = ("learn2learn", "higher", "func")
N, K, T, B, OBS, ACT = 4, 2, 6, 3, 5, 3
LR = 0.3
SLOW_ATTENTION_PREFIXES = ("rim.cell.input_attention.", "rim.cell.comm_attention.")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (and stall badly on a busy host)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Policy(nn.Module):
    """Linear encoder -> RIM -> linear head; returns (predictions (T, B, ACT), masks)."""

    def __init__(self, cell: str = "lstm", comm_reads: str = "cells"):
        super().__init__()
        self.encoder = nn.Linear(OBS, 6)
        self.rim = RIM(6, 3 * N, num_units=N, k=K, cell=cell, input_key_size=4,
                       input_value_size=5, comm_key_size=3, comm_value_size=3, comm_heads=2,
                       comm_reads=comm_reads)
        self.head = nn.Linear(3 * N, ACT)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, _, masks = self.rim(torch.tanh(self.encoder(x)))
        return self.head(out), masks


def make_policy(seed: int = 0, cell: str = "lstm", comm_reads: str = "cells") -> Policy:
    torch.manual_seed(seed)
    return Policy(cell, comm_reads).double()


def make_data(seed: int = 1) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(T, B, d, generator=g, dtype=torch.float64) for d in (OBS, ACT, OBS, ACT))


def mse(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).pow(2).mean()


def random_active(seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    active = (torch.rand(N, generator=g) < 0.5).double()
    active[seed % N] = 1.0  # at least one active, at least one inactive
    active[(seed + 1) % N] = 0.0
    return active


def meta_episode(meta: MaskedMAML, data, active, steps: int = 1, first_order=None):
    """Inner steps on chunk 1, outer loss on chunk 2; returns (learner, outer loss)."""
    x1, y1, x2, y2 = data
    learner = meta.clone(first_order=first_order)
    for _ in range(steps):
        pred, masks = learner(x1)
        learner.adapt(mse(pred, y1), active=masks if active == "masks" else active)
    pred, _ = learner(x2)
    return learner, mse(pred, y2)


def grads_of(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def reference_episode(policy: Policy, data, active: Tensor, first_order: bool, steps: int = 1):
    """Independent reference: functional_call + autograd.grad, masking by hand."""
    x1, y1, x2, y2 = data
    params = dict(policy.named_parameters())
    fast = [n for n in params if n.startswith("rim.cell.mechanisms.")]
    for _ in range(steps):
        loss = mse(functional_call(policy, params, (x1,))[0], y1)
        grads = torch.autograd.grad(loss, [params[n] for n in fast], create_graph=not first_order)
        params = dict(params)
        for n, g in zip(fast, grads):
            mask = active.view(-1, *([1] * (g.dim() - 1)))
            params[n] = params[n] - LR * (g * mask)
    loss = mse(functional_call(policy, params, (x2,))[0], y2)
    outer = torch.autograd.grad(loss, list(policy.parameters()), allow_unused=True)
    names = [n for n, _ in policy.named_parameters()]
    return params, {n: g for n, g in zip(names, outer) if g is not None}


def test_backends_registered():
    assert set(BACKENDS) == set(available_backends())


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("active", [None, "ones"])
def test_equals_learn2learn_maml_when_all_fast_and_active(first_order, active):
    policy, data = make_policy(), make_data()
    ref_policy = copy.deepcopy(policy)
    meta = MaskedMAML(policy, LR, first_order=first_order, fast="all")
    ref = l2l.algorithms.MAML(ref_policy, lr=LR, first_order=first_order)
    x1, y1, x2, y2 = data
    learner, ref_learner = meta.clone(), ref.clone()
    for _ in range(2):
        learner.adapt(mse(learner(x1)[0], y1), active=None if active is None else torch.ones(N))
        ref_learner.adapt(mse(ref_learner(x1)[0], y1))
    out, ref_out = learner(x2)[0], ref_learner(x2)[0]
    assert torch.equal(out, ref_out)
    mse(out, y2).backward()
    mse(ref_out, y2).backward()
    got, want = grads_of(policy), grads_of(ref_policy)
    assert got.keys() == want.keys() == dict(policy.named_parameters()).keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


class _LinearModel(nn.Module):
    """p(x) = sum_n theta_n . (A x)_n: fast theta (GroupLinear), slow encoder A."""

    def __init__(self, n_units: int, d: int, d_in: int):
        super().__init__()
        self.enc = nn.Linear(d_in, n_units * d, bias=False)
        self.group = GroupLinear(d, 1, n_units, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.group(self.enc(x).view(x.shape[0], self.group.num_units, -1)).sum(dim=(1, 2))


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_closed_form_on_linear_model(first_order):
    n_units, d, d_in, batch, alpha = 3, 2, 4, 7, 0.2
    torch.manual_seed(0)
    model = _LinearModel(n_units, d, d_in).double()
    enc, group = model.enc, model.group
    meta = MaskedMAML(model, alpha, fast=GroupLinear, first_order=first_order)
    x1, x2 = torch.randn(batch, d_in).double(), torch.randn(batch, d_in).double()
    y1, y2 = torch.randn(batch).double(), torch.randn(batch).double()
    active = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)

    learner = meta.clone()
    learner.adapt(0.5 * (learner(x1) - y1).pow(2).sum(), active=active)
    (0.5 * (learner(x2) - y2).pow(2).sum()).backward()

    A, theta = enc.weight.detach(), group.weight.detach().reshape(-1)
    M = torch.diag(active.repeat_interleave(d))
    G = x1.T @ x1
    r1 = x1 @ A.T @ theta - y1
    theta_new = theta - alpha * M @ A @ x1.T @ r1
    assert_close(learner.fast_parameters()["group.weight"].detach().reshape(-1), theta_new)
    r2 = x2 @ A.T @ theta_new - y2
    v = A @ x2.T @ r2  # dL_out / dtheta'
    if first_order:
        grad_theta, grad_A = v, torch.outer(theta_new, x2.T @ r2)
    else:
        u = M @ v
        grad_theta = v - alpha * A @ G @ A.T @ M @ v
        grad_A = torch.outer(theta_new, x2.T @ r2) - alpha * (
            torch.outer(u, theta) @ A @ G + torch.outer(theta, u) @ A @ G - torch.outer(u, x1.T @ y1)
        )
    assert_close(group.weight.grad.reshape(-1), grad_theta)
    assert_close(enc.weight.grad, grad_A)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backends_agree_on_rim_policy(seed, first_order):
    data = make_data(seed + 10)
    active = random_active(seed)
    results = {}
    for backend in BACKENDS:
        policy = make_policy(seed)
        meta = MaskedMAML(policy, LR, backend=backend, first_order=first_order)
        learner, loss = meta_episode(meta, data, active, steps=2)
        loss.backward()
        adapted = {n: p.detach() for n, p in learner.parameter_dict().items()}
        results[backend] = adapted, grads_of(policy)
    want_params, want_grads = results["learn2learn"]
    for backend in ("higher", "func"):
        params, grads = results[backend]
        assert params.keys() == want_params.keys() and grads.keys() == want_grads.keys()
        for name in want_params:
            assert_close(params[name], want_params[name], msg=f"{backend} {name}")
        for name in want_grads:
            assert_close(grads[name], want_grads[name], msg=f"{backend} grad {name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_inactive_blocks_and_slow_parameters_bit_identical(backend):
    policy, (x1, y1, _, _) = make_policy(), make_data()
    meta = MaskedMAML(policy, LR, backend=backend)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    learner = meta.clone()
    pred, masks = learner(x1)
    active = reduce_activity(masks)
    assert active.sum() >= 2, "test needs two modules that were selected"
    off = int(active.nonzero()[0])  # selected, hence has a gradient, but masked off
    active[off] = 0.0
    learner.adapt(mse(pred, y1), active=active)
    after = learner.parameter_dict()
    for name in meta.partition.slow:
        assert torch.equal(after[name], before[name]), name
    for name in meta.partition.fast:
        for n in range(N):
            same = torch.equal(after[name][n], before[name][n])
            assert same == (active[n] == 0), (name, n)
    assert all(torch.equal(p, before[n]) for n, p in policy.named_parameters())


@pytest.mark.parametrize("first_order", [False, True])
def test_slow_gradients_match_functional_reference(first_order):
    policy, data = make_policy(3), make_data(4)
    active = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    meta = MaskedMAML(policy, LR, first_order=first_order)
    learner, loss = meta_episode(meta, data, active, steps=2)
    loss.backward()
    ref_params, ref_grads = reference_episode(policy, data, active, first_order, steps=2)
    for name, p in learner.parameter_dict().items():
        assert_close(p, ref_params[name])
    got = grads_of(policy)
    assert got.keys() == ref_grads.keys()
    for name in ref_grads:
        assert_close(got[name], ref_grads[name], msg=name)
    attention = [n for n in got if n.startswith(SLOW_ATTENTION_PREFIXES)]
    assert len(attention) >= 5 and set(attention) <= set(meta.partition.slow)
    for name in attention:
        assert got[name].abs().sum() > 0, name
    if not first_order:  # the second-order terms are really there
        _, fo_grads = reference_episode(policy, data, active, True, steps=2)
        for name in attention:
            assert not torch.allclose(got[name], fo_grads[name]), name


class _Episode(nn.Module):
    """An episode as a module, so that functional_call can substitute one slow tensor."""

    def __init__(self, meta: MaskedMAML, data, active: Tensor):
        super().__init__()
        self.meta, self.data, self.active = meta, data, active

    def forward(self) -> Tensor:
        return meta_episode(self.meta, self.data, self.active, steps=2)[1]


@pytest.mark.parametrize("name", ["rim.cell.input_attention.value.weight", "rim.cell.comm_attention.output.bias"])
def test_gradcheck_outer_loss_through_two_masked_steps(name):
    # comm_reads="kept", whose gradients are the true derivatives: the default reads the
    # inactive modules' cell outputs with their gradient blocked (as the reference RIM
    # does), which finite differences cannot see.
    torch.manual_seed(5)
    policy = make_policy(5, comm_reads="kept")
    x1, y1, x2, y2 = make_data(6)
    data = (x1[:3, :2], y1[:3, :2], x2[:3, :2], y2[:3, :2])
    episode = _Episode(MaskedMAML(policy, LR), data, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    w = dict(policy.named_parameters())[name].detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: functional_call(episode, {"meta.module." + name: w}, ()), (w,))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_repeated_clone_adapt_backward_does_not_grow_memory():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 256)).double()
    meta = MaskedMAML(net, 0.01, fast="0.*")
    x = torch.randn(64, 256, dtype=torch.float64)

    def episode() -> weakref.ref:
        learner = meta.clone()
        learner.adapt(learner(x).pow(2).mean(), active=torch.ones(1))
        learner(x).pow(2).mean().backward()
        return weakref.ref(learner.fast_parameters()["0.weight"])

    for _ in range(10):
        episode()
    gc.collect()
    start = _rss_mb()
    refs = [episode() for _ in range(100)]
    gc.collect()
    grown = _rss_mb() - start
    assert all(r() is None for r in refs), "adapted tensors outlive their learner"
    # one leaked episode graph holds > 1.5 MB (weights 0.5 MB each, activations, grads)
    assert grown < 30, f"RSS grew by {grown:.1f} MB over 100 episodes"


@pytest.mark.parametrize("backend", BACKENDS)
def test_learnable_lr_meta_sgd(backend):
    policy, data = make_policy(), make_data()
    active = random_active(0)
    scalar = MaskedMAML(copy.deepcopy(policy), LR, backend=backend)
    meta = MaskedMAML(policy, LR, backend=backend, learnable_lr=True)
    assert len(meta.lrs) == len(meta.partition.fast)
    assert all(any(lr is p for p in meta.parameters()) for lr in meta.lrs)
    learner, loss = meta_episode(meta, data, active)
    want, _ = meta_episode(scalar, data, active)
    for name, p in learner.fast_parameters().items():
        assert_close(p, want.fast_parameters()[name])
    loss.backward()
    for lr, name in zip(meta.lrs, meta.partition.fast):
        assert lr.grad is not None and lr.grad.abs().sum() > 0, name
        inactive = (active == 0).nonzero().flatten()
        assert torch.equal(lr.grad[inactive], torch.zeros_like(lr.grad[inactive]))


def test_gru_policy_default_fast_set_adapts():
    policy, data = make_policy(cell="gru"), make_data()
    meta = MaskedMAML(policy, LR)
    assert meta.partition.fast == tuple(f"rim.cell.mechanisms.{n}" for n in
                                        ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    _, loss = meta_episode(meta, data, "masks")
    loss.backward()
    assert policy.rim.cell.mechanisms.weight_hh.grad.abs().sum() > 0


def test_first_order_retain_graph_through_carried_state():
    policy, (x1, y1, x2, y2) = make_policy(), make_data()
    meta = MaskedMAML(policy, LR, first_order=True)
    learner = meta.clone()
    h1, state, masks = learner.module.rim(torch.tanh(learner.module.encoder(x1)))
    learner.adapt(mse(learner.module.head(h1), y1), active=masks, retain_graph=True)
    h2, _, _ = learner.module.rim(torch.tanh(learner.module.encoder(x2)), state)
    mse(learner.module.head(h2), y2).backward()  # reaches chunk 1 through the state
    assert policy.encoder.weight.grad.abs().sum() > 0


def test_meta_rim_learner_path_with_adam():
    """The path the Meta-RIM learner takes: clone, chunk 1, adapt on masks, chunk 2, Adam."""
    policy, (x1, y1, x2, y2) = make_policy(), make_data()
    meta = MaskedMAML(policy, LR)
    opt = torch.optim.Adam(meta.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in meta.named_parameters()}
    losses = []
    for _ in range(3):
        learner = meta.clone()
        pred, masks = learner(x1)
        learner.adapt(mse(pred, y1), active=masks)
        loss = mse(learner(x2)[0], y2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    for name, p in meta.named_parameters():
        assert not torch.equal(p, before[name]), name
    assert losses[-1] < losses[0]


def test_soft_and_batch_activity():
    policy, (x1, y1, _, _) = make_policy(), make_data()
    learner = MaskedMAML(policy, LR, reduction="mean").clone()
    pred, masks = learner(x1)
    masks_bn = learner.block_masks(masks[0])  # (B, N): fraction over the batch
    assert_close(masks_bn["rim.cell.mechanisms.weight_ih"].flatten(), masks[0].mean(0))
    soft = torch.tensor([0.0, 0.5, 1.0, 0.25])
    learner.adapt(mse(pred, y1), active=[0.0, 0.5, 1.0, 0.25])
    assert learner.block_masks(soft)["rim.cell.mechanisms.bias_hh"].shape == (N, 1)


def test_functional_core():
    p = {"w": torch.ones(2, 3), "b": torch.zeros(3)}
    g = {"w": torch.full((2, 3), 2.0), "b": None}
    new = masked_sgd(p, 0.5, g, {"w": torch.tensor([1.0, 0.0]).view(2, 1)})
    assert_close(new["w"], torch.tensor([[0.0] * 3, [1.0] * 3]))
    assert new["b"] is p["b"]
    net = l2l.clone_module(nn.Linear(3, 2))
    old = dict(net.named_parameters())
    net = masked_maml_update(net, 0.1, {"weight": torch.ones(2, 3)}, {"weight": torch.tensor([[0.0], [1.0]])})
    assert_close(net.weight, old["weight"] - 0.1 * torch.tensor([[0.0] * 3, [1.0] * 3]))
    assert net.bias is old["bias"]
    with pytest.raises(ValueError, match="unknown parameter 'nope'"):
        masked_sgd(p, 0.1, {"nope": torch.ones(1)})
    with pytest.raises(ValueError, match="non-negative"):
        masked_maml_update(net, -0.1, {})


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_learner_clones_from_its_adapted_parameters(backend, first_order):
    # learner.clone() after one step, a step on the clone, the outer loss: the same
    # fast tensors and meta-gradient as two steps on one learner (the reference)
    policy, data = make_policy(), make_data()
    x1, y1, x2, y2 = data
    active = random_active(3)
    learner = MaskedMAML(policy, LR, first_order=first_order, backend=backend).clone()
    learner.adapt(mse(learner(x1)[0], y1), active=active)
    adapted = {n: p.detach().clone() for n, p in learner.parameter_dict().items()}
    second = learner.clone()
    assert type(second) is type(learner) and second.first_order == first_order
    assert isinstance(second, nn.Module)
    for name, value in second.parameter_dict().items():
        assert torch.equal(value.detach(), adapted[name]), name
    second.adapt(mse(second(x1)[0], y1), active=active)
    for name, value in learner.parameter_dict().items():  # the clone's step leaves its source alone
        assert torch.equal(value.detach(), adapted[name]), name
    mse(second(x2)[0], y2).backward()
    params, ref_grads = reference_episode(policy, data, active, first_order, steps=2)
    fast = second.fast_parameters()
    for name in fast:
        assert_close(fast[name], params[name], msg=name)
    got = grads_of(policy)
    assert got.keys() == ref_grads.keys()
    for name in ref_grads:
        assert_close(got[name], ref_grads[name], msg=name)


def test_clone_first_order_overrides_the_learners_default():
    learner = MaskedMAML(make_policy(), LR).clone()
    assert learner.clone(first_order=True).first_order is True
    assert learner.clone().first_order is False


def test_bad_input_raises_value_error():
    policy, (x1, y1, _, _) = make_policy(), make_data()
    with pytest.raises(ValueError, match="backend='jax'"):
        MaskedMAML(policy, LR, backend="jax")
    with pytest.raises(ValueError, match="lr=-0.1 must be non-negative"):
        MaskedMAML(policy, -0.1)
    with pytest.raises(ValueError, match="lr=True"):
        MaskedMAML(policy, True)
    with pytest.raises(ValueError, match="matches no parameter"):
        MaskedMAML(policy, LR, fast="*.no_such_thing")
    with pytest.raises(ValueError, match="reduction='max'"):
        MaskedMAML(policy, LR, reduction="max")
    learner = MaskedMAML(policy, LR).clone()
    loss = mse(learner(x1)[0], y1)
    with pytest.raises(ValueError, match="length 3 but the fast parameters have num_units=4"):
        learner.adapt(loss, active=torch.ones(3))
    with pytest.raises(ValueError, match="length 5"):
        learner.adapt(loss, active=torch.ones(T, B, 5))


def test_docs_example_runs(capsys):
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "adaptation.md"
    code = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert len(code) == 1
    exec(compile(code[0], str(doc), "exec"), {})
    assert capsys.readouterr().out.strip() == "tensor(True)"


def test_func_backend_needs_neither_learn2learn_nor_higher():
    import subprocess
    import sys

    code = (
        "import sys, torch; from metarim.meta.maml import MaskedMAML; "
        "from metarim.meta.partition import partition_parameters; "
        "net = torch.nn.Linear(2, 1); meta = MaskedMAML(net, 0.1, fast='all', backend='func'); "
        "learner = meta.clone(); learner.adapt(learner(torch.ones(1, 2)).sum()); "
        "learner(torch.ones(1, 2)).sum().backward(); "
        "print([m for m in ('learn2learn', 'higher') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class _GRUPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.head = nn.GRU(3, 4), nn.Linear(4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.gru(x)[0])


def test_policies_with_torch_rnn_modules_work_in_every_backend():
    """learn2learn re-applies nn.GRU's _apply on non-leaf clones; no warning must escape
    (pytest turns warnings into errors) and all backends must agree."""
    torch.manual_seed(0)
    base, x = _GRUPolicy().double(), torch.randn(5, 2, 3, dtype=torch.float64)
    results = {}
    for backend in BACKENDS:
        policy = copy.deepcopy(base)
        learner = MaskedMAML(policy, 0.1, fast="all", backend=backend).clone()
        for _ in range(2):
            learner.adapt(learner(x).pow(2).sum())
        learner(x).pow(2).sum().backward()
        results[backend] = {n: p.detach() for n, p in learner.parameter_dict().items()}, grads_of(policy)
    for backend in ("higher", "func"):
        for got, want in zip(results[backend], results["learn2learn"]):
            assert got.keys() == want.keys()
            for name in want:
                assert_close(got[name], want[name], msg=f"{backend} {name}")
