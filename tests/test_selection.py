"""Module selection that matters (issue 19): ``topk`` reduction, why ``any`` is a no-op,
Meta-RIM's ``selection``, and the reset tie with its ``rim_init="learned"`` fix.

Float64, seeded; the references are the gradient itself (which blocks it touches) and
``torch.equal`` between masked and unmasked steps.
"""

from __future__ import annotations

import pytest
import torch

from metarim.algorithms import make_learner
from metarim.algorithms.objectives import rollout_loss
from metarim.config import TrainConfig
from metarim.meta import MaskedMAML
from metarim.meta.backends import quiet_nonleaf_grad
from metarim.meta.partition import reduce_activity
from metarim.rim import RIM
from metarim.rl.policy import ActorCritic

N = 4
LEVEL = "BabyAI-GoToLocalS6N2-v0"


def make_policy(k: int, seed: int = 0, init: str = "zeros") -> ActorCritic:
    torch.manual_seed(seed)
    kw = {"num_units": N, "k": k, **({"init": init} if init != "zeros" else {})}
    return ActorCritic(7, 16, memory="rim", hidden_size=16, memory_kwargs=kw).double()


def make_obs(steps: int, batch: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = {"image": torch.randint(0, 6, (steps, batch, 7, 7, 3), generator=g, dtype=torch.uint8),
           "mission": torch.randint(1, 16, (steps, batch, 5), generator=g)}
    done = torch.zeros(steps, batch, dtype=torch.bool)
    done[0] = True
    return obs, done


def loss_and_masks(module, obs, done, state=None):
    logits, values, _, masks = module(obs, state, done)
    return logits.log_softmax(-1)[..., 0].mean() + values.pow(2).mean(), masks


def blocks_changed(before: dict, after: dict, part) -> dict[str, list[bool]]:
    """For each fast tensor with a module axis, whether each module's block changed."""
    out = {}
    for n in part.fast:
        axis = part.axes[n]
        if axis is not None:
            diff = (after[n].detach() - before[n]).unbind(axis)
            out[n] = [bool(d.abs().sum() > 0) for d in diff]
    return out


# --- reduce_activity("topk") ------------------------------------------------------------

def test_topk_counts_ties_and_never_selected():
    m = torch.zeros(3, 2, N)
    m[:, :, 3] = 1  # 6 steps
    m[0, :, 1] = m[1, 0, 1] = 1  # 3 steps
    m[2, :, 0] = m[1, 1, 2] = 1  # 2 and 1 steps
    assert reduce_activity(m, "topk", k=1).tolist() == [0.0, 0.0, 0.0, 1.0]
    assert reduce_activity(m, "topk", k=2).tolist() == [0.0, 1.0, 0.0, 1.0]
    assert reduce_activity(m, "topk", k=3).tolist() == [1.0, 1.0, 0.0, 1.0]
    tie = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]])  # every module once: lower index wins
    assert reduce_activity(tie, "topk", k=2).tolist() == [1.0, 1.0, 0.0, 0.0]
    tie = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]])  # counts 0, 1, 1, 2: module 1 beats 2
    assert reduce_activity(tie, "topk", k=2).tolist() == [0.0, 1.0, 0.0, 1.0]
    # a never-selected module is never active, even if k leaves room for it
    assert reduce_activity(torch.tensor([[1, 0, 0, 0]]), "topk", k=3).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert reduce_activity(m.double(), "topk", k=2).dtype == torch.float64
    assert reduce_activity(m.bool(), "topk", k=2).dtype == torch.get_default_dtype()


def test_topk_equals_a_python_loop():
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        m = (torch.rand(5, 3, 6, generator=g) < 0.3).float()
        k = int(torch.randint(1, 7, (1,), generator=g))
        counts = [int(m[..., n].sum()) for n in range(6)]
        ranked = sorted(range(6), key=lambda n: (-counts[n], n))[:k]
        want = [1.0 if n in ranked and counts[n] > 0 else 0.0 for n in range(6)]
        assert reduce_activity(m, "topk", k=k).tolist() == want


@pytest.mark.parametrize(("kw", "needle"), [
    ({}, "needs an integer k in 1..4"),
    ({"k": 0}, "needs an integer k in 1..4"),
    ({"k": 5}, "needs an integer k in 1..4"),
    ({"k": True}, "needs an integer k in 1..4"),
])
def test_topk_bad_k(kw, needle):
    with pytest.raises(ValueError, match=needle):
        reduce_activity(torch.ones(2, N), "topk", **kw)


def test_k_only_for_topk():
    with pytest.raises(ValueError, match="k=2 is for reduction='topk', not 'mean'"):
        reduce_activity(torch.ones(2, N), "mean", k=2)
    with pytest.raises(ValueError, match="needs an integer k"):
        MaskedMAML(make_policy(2), 1.0, reduction="topk")
    with pytest.raises(ValueError, match="k=2 is for reduction='topk'"):
        MaskedMAML(make_policy(2), 1.0, k=2)


# --- "any" is a no-op, "topk" is not -----------------------------------------------------

@pytest.mark.parametrize("backend", ["learn2learn", "func"])
def test_any_mask_is_a_noop_on_a_rim_policy(backend):
    policy = make_policy(k=1)
    obs, done = make_obs(3, 2)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    meta = MaskedMAML(policy, 10.0, backend=backend)  # reduction="any"
    with quiet_nonleaf_grad():
        masked, plain = meta.clone(), meta.clone()
        loss, masks = loss_and_masks(masked, obs, done)
        active = reduce_activity(masks)
        assert 0 < active.sum() < N  # some module never selected: the mask has zeros
        masked.adapt(loss, active=masks)
        loss, _ = loss_and_masks(plain, obs, done)
        plain.adapt(loss, active=None)
    for n in meta.partition.fast:
        assert torch.equal(masked.parameter_dict()[n], plain.parameter_dict()[n]), n
    # why: the never-selected modules' blocks got an exactly zero gradient anyway
    for n, changed in blocks_changed(before, plain.parameter_dict(), meta.partition).items():
        assert all(not c for c, a in zip(changed, active.tolist()) if a == 0), n


@pytest.mark.parametrize("backend", ["learn2learn", "func"])
def test_topk_mask_adapts_exactly_the_chosen_modules(backend):
    policy = make_policy(k=2)
    obs, done = make_obs(8, 3)
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    meta = MaskedMAML(policy, 10.0, backend=backend, reduction="topk", k=2)
    with quiet_nonleaf_grad():
        masked, plain = meta.clone(), meta.clone()
        loss, masks = loss_and_masks(masked, obs, done)
        assert reduce_activity(masks).sum() > 2  # more modules took part than topk keeps
        chosen = reduce_activity(masks, "topk", k=2)
        masked.adapt(loss, active=masks)
        loss, _ = loss_and_masks(plain, obs, done)
        plain.adapt(loss, active=None)
    assert any(not torch.equal(masked.parameter_dict()[n], plain.parameter_dict()[n]) for n in meta.partition.fast)
    for n, changed in blocks_changed(before, masked.parameter_dict(), meta.partition).items():
        if n.endswith("weight_hh"):  # a module selected only from a zero state has no W_hh gradient
            assert all(c <= bool(a) for c, a in zip(changed, chosen.tolist())), n
        else:
            assert changed == [bool(a) for a in chosen.tolist()], n
    # the unmasked step does move a block that topk left out
    left_out = [i for i, a in enumerate(chosen.tolist()) if a == 0 and reduce_activity(masks)[i] > 0]
    plain_changed = blocks_changed(before, plain.parameter_dict(), meta.partition)
    assert any(plain_changed["memory.cell.mechanisms.weight_ih"][i] for i in left_out)
    # slow parameters are untouched
    for n in meta.partition.slow:
        assert torch.equal(masked.parameter_dict()[n].detach(), before[n]), n


def test_any_is_not_a_noop_for_the_attention_preset_mid_episode():
    # with the attentions fast, an unselected module's state is still read by the active
    # ones (communication), so its key/value weights get a gradient when that state is
    # non-zero: "any" then masks something.
    policy = make_policy(k=1)
    obs, _ = make_obs(2, 1)
    done = torch.zeros(2, 1, dtype=torch.bool)  # the chunk starts mid-episode
    g = torch.Generator().manual_seed(5)
    state = tuple(torch.randn(1, N, 4, generator=g, dtype=torch.float64) for _ in range(2))
    meta = MaskedMAML(policy, 1.0, fast="attention")
    loss, masks = loss_and_masks(policy, obs, done, state)
    active = reduce_activity(masks)
    assert 0 < active.sum() < N
    params = dict(policy.named_parameters())
    grad = torch.autograd.grad(loss, params["memory.cell.comm_attention.qkv.weight"])[0]
    unselected = [i for i, a in enumerate(active.tolist()) if a == 0]
    assert all(grad[i].abs().sum() > 0 for i in unselected)
    with quiet_nonleaf_grad():
        masked, plain = meta.clone(), meta.clone()
        for learner, mask in ((masked, masks), (plain, None)):
            learner.adapt(loss_and_masks(learner, obs, done, state)[0], active=mask)
    name = "memory.cell.comm_attention.qkv.weight"
    assert not torch.equal(masked.parameter_dict()[name], plain.parameter_dict()[name])


# --- Meta-RIM's selection ----------------------------------------------------------------

TINY = {"algo": "metarim", "memory": "rim", "env": LEVEL, "hidden_size": 16, "num_units": N, "k": 2,
        "num_envs": 2, "num_steps": 16, "chunk_length": 8, "batch_size": 32, "num_tasks": 5, "inner_lr": 1.0}


def test_metarim_selection_topk_masks_its_online_and_inner_steps():
    learner = make_learner(TrainConfig.from_dict({**TINY, "selection": "topk"}))
    try:
        assert learner.meta.reduction == "topk" and learner.meta.k == 2
        learner.policy.double()
        learner._sync_actor()
        chunk = learner.collector.collect()
        _, _, masks = rollout_loss(learner.actor, chunk, learner.config)
        chosen = reduce_activity(masks, "topk", k=2)
        assert torch.equal(learner._activity(masks), chosen)
        before = {n: p.detach().clone() for n, p in learner.actor.named_parameters()}
        learner._online_step(chunk)
        after = dict(learner.actor.named_parameters())
        for n, changed in blocks_changed(before, after, learner.meta.partition).items():
            assert all(c <= bool(a) for c, a in zip(changed, chosen.tolist())), n
        assert any(blocks_changed(before, after, learner.meta.partition)["memory.cell.mechanisms.bias_hh"])
        out = learner.step()  # the inner chain's active fraction is at most k/N
        assert out["meta/active_fraction"] <= 2 / N
    finally:
        learner.close()


def test_metarim_fast_params_attention():
    learner = make_learner(TrainConfig.from_dict({**TINY, "fast_params": "attention"}))
    try:
        fast = learner.meta.partition.fast
        assert fast and all("_attention." in n for n in fast)
        assert {n for n, p in learner.actor.named_parameters() if p.requires_grad} == set(fast)
        learner.step()
    finally:
        learner.close()


def test_metarim_default_inner_lr_follows_the_fast_set():
    from metarim.algorithms.base import prepare_config
    from metarim.sweep.spec import expand_sweep

    assert prepare_config(TrainConfig(algo="metarim", memory="rim")).inner_lr == 10.0
    assert prepare_config(TrainConfig(algo="metarim", memory="rim", fast_params="attention")).inner_lr == 0.1
    assert prepare_config(TrainConfig(algo="metarim", memory="rim", fast_params="attention",
                                      inner_lr=3.0)).inner_lr == 3.0  # an explicit rate stays
    spec = {"base": {"frames": 1024}, "seeds": [0],
            "learners": {"rev": {"algo": "metarim", "memory": "rim", "fast_params": "attention"}}}
    assert expand_sweep(spec)[0].config["inner_lr"] == 0.1  # the sweep writes the same number


def test_metarim_non_finite_fast_weights_raise_a_named_error():
    learner = make_learner(TrainConfig.from_dict({**TINY, "fast_params": "attention", "inner_lr": 1e30}))
    try:
        with pytest.raises(FloatingPointError, match="lower --inner-lr"):  # weights or probabilities
            for _ in range(3):
                learner.step()
    finally:
        learner.close()


# --- the reset tie ------------------------------------------------------------------------

def _first_step_selection(rim: RIM, x: torch.Tensor) -> torch.Tensor:
    done = torch.ones(1, x.shape[1], dtype=torch.bool)
    _, _, masks = rim(x, rim.initial_state(x.shape[1]), done)
    return masks[0]


def test_zero_reset_ties_and_picks_the_same_modules():
    torch.manual_seed(0)
    rim = RIM(6, 16, num_units=4, k=2)
    x = torch.randn(1, 64, 6) * 5
    first = _first_step_selection(rim, x)
    assert (first == torch.tensor([0.0, 0.0, 1.0, 1.0])).all()  # {2, 3} whatever the input


def test_learned_reset_breaks_the_tie():
    torch.manual_seed(0)
    rim = RIM(6, 16, num_units=4, k=2, init="learned")
    x = torch.randn(1, 64, 6) * 5
    first = _first_step_selection(rim, x)
    sets = {tuple(row.nonzero().flatten().tolist()) for row in first}
    assert len(sets) > 1  # the first step's selection depends on the observation
    # ... and on the modules' parameters: other initial states, other choices
    with torch.no_grad():
        rim.cell.h0.neg_()
    assert not torch.equal(_first_step_selection(rim, x), first)


def test_learned_reset_sets_the_state_to_h0_and_gets_a_gradient():
    torch.manual_seed(0)
    rim = RIM(6, 16, num_units=4, k=2, init="learned").double()
    x = torch.randn(3, 2, 6, dtype=torch.float64)
    done = torch.tensor([[True, False], [False, True], [False, False]])
    state = tuple(torch.randn(2, 4, 4, dtype=torch.float64) for _ in range(2))
    out, _, _ = rim(x, state, done)
    # the same as feeding the learned state by hand at the resets
    ref_state = state
    outs = []
    for t in range(3):
        ref_state = tuple(torch.where(done[t].view(2, 1, 1), s0.unsqueeze(0), s)
                          for s, s0 in zip(ref_state, (rim.cell.h0, rim.cell.c0)))
        o, ref_state, _ = rim(x[t : t + 1], ref_state)
        outs.append(o)
    torch.testing.assert_close(out, torch.cat(outs), rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.pow(2).sum(), [rim.cell.h0, rim.cell.c0])
    assert all(g.abs().sum() > 0 for g in grads)
    assert torch.equal(rim.initial_state(3)[0], rim.cell.h0.detach().expand(3, 4, 4))


def test_zeros_init_is_bit_identical_and_learned_keeps_other_weights():
    torch.manual_seed(0)
    plain = RIM(6, 16, num_units=4, k=2)
    after_plain = torch.rand(3)
    torch.manual_seed(0)
    zeros = RIM(6, 16, num_units=4, k=2, init="zeros")
    torch.manual_seed(0)
    learned = RIM(6, 16, num_units=4, k=2, init="learned")
    after_learned = torch.rand(3)
    assert [n for n, _ in zeros.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert "cell.h0" not in dict(zeros.named_parameters())
    for n, p in plain.named_parameters():
        assert torch.equal(p, dict(zeros.named_parameters())[n])
        assert torch.equal(p, dict(learned.named_parameters())[n])  # h0/c0 drawn from a fork of the RNG
    assert torch.equal(after_plain, after_learned)  # the global RNG is where it was
    x = torch.randn(5, 3, 6)
    done = torch.rand(5, 3) < 0.3
    a, b = plain(x, None, done), zeros(x, None, done)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    with pytest.raises(ValueError, match="init='ones' must be one of"):
        RIM(6, 16, num_units=4, k=2, init="ones")


def test_rim_init_config_reaches_the_policy():
    learner = make_learner(TrainConfig.from_dict({**TINY, "algo": "ppo", "num_steps": 8, "batch_size": 8,
                                                  "recurrence": 4, "rim_init": "learned"}))
    try:
        names = dict(learner.policy.named_parameters())
        assert {"memory.cell.h0", "memory.cell.c0"} <= set(names)
        learner.step()
    finally:
        learner.close()
    with pytest.raises(ValueError, match="rim_init='learned' needs memory='rim'"):
        TrainConfig(rim_init="learned")
