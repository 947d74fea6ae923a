"""The starter-kit switches of issue 18 (``adam_eps``, ``combine="heads"``,
``mission_dim``, ``image_encoding``, ``init``, ``window_shift``, ``memory_refresh``) and
the legacy values of keys a saved run's ``config.json`` lacks.

References are independent of the code under test: a transcription of rl-starter-files'
``ACModel`` (model.py) and of torch-ac 1.4.0's PPO update loop (``algos/ppo.py``: one
policy step at a time over flattened experience, ``memory * mask``, and the write-back
``exps.memory[inds + i + 1] = memory.detach()``), run in float64.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import pytest
import torch
from torch import nn

from metarim import config as config_module
from metarim.algorithms import build_policy, make_learner
from metarim.config import DEFAULT_CHANGES, LEGACY, TrainConfig
from metarim.rl.policy import ActorCritic
from metarim.tasks.vocab import Vocab

DATA = pathlib.Path(__file__).parent / "data" / "f898eb9" / "half"
LEVEL = "BabyAI-GoToLocalS6N2-v0"
KIT = {"combine": "heads", "mission_dim": 128, "image_encoding": "raw", "init": "kit"}


def _obs(steps: int, batch: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.stack([torch.randint(0, 11, (steps, batch, 7, 7), generator=g),
                         torch.randint(0, 6, (steps, batch, 7, 7), generator=g),
                         torch.randint(0, 3, (steps, batch, 7, 7), generator=g)], dim=-1)
    mission = torch.randint(1, 20, (steps, batch, 5), generator=g)  # no padding: kit and ours agree
    return {"image": image.to(torch.uint8), "mission": mission}


# -- the kit's model ----------------------------------------------------------------
class KitACModel(nn.Module):
    """rl-starter-files ``ACModel(obs_space, action_space, use_memory=True, use_text=True)``
    for a 7×7 view, transcribed (without ``init_params``)."""

    def __init__(self, num_actions: int, vocab_size: int) -> None:
        super().__init__()
        self.image_conv = nn.Sequential(
            nn.Conv2d(3, 16, (2, 2)), nn.ReLU(), nn.MaxPool2d((2, 2)),
            nn.Conv2d(16, 32, (2, 2)), nn.ReLU(), nn.Conv2d(32, 64, (2, 2)), nn.ReLU())
        self.memory_rnn = nn.LSTMCell(64, 64)
        self.word_embedding = nn.Embedding(vocab_size, 32)
        self.text_rnn = nn.GRU(32, 128, batch_first=True)
        self.actor = nn.Sequential(nn.Linear(192, 64), nn.Tanh(), nn.Linear(64, num_actions))
        self.critic = nn.Sequential(nn.Linear(192, 64), nn.Tanh(), nn.Linear(64, 1))

    def forward(self, image, text, memory):
        x = image.to(self.actor[0].weight.dtype).transpose(1, 3).transpose(2, 3)  # kit: dtype=float
        x = self.image_conv(x).reshape(x.shape[0], -1)
        h, c = self.memory_rnn(x, (memory[:, :64], memory[:, 64:]))
        _, hidden = self.text_rnn(self.word_embedding(text))
        embedding = torch.cat([h, hidden[-1]], dim=1)
        return self.actor(embedding), self.critic(embedding).squeeze(1), torch.cat([h, c], dim=1)


def _kit_policy(memory: str = "lstm", **kw) -> ActorCritic:
    cfg = TrainConfig(memory=memory, **{**KIT, **kw})
    return build_policy(cfg, 7, Vocab())


def test_kit_layout_has_the_kits_parameters():
    vocab = Vocab().max_size
    pol = _kit_policy()
    # by hand: convs 3*16*4+16 + 16*32*4+32 + 32*64*4+64; embedding 32 V; GRU(32, 128)
    # 3*128*(32+128) + 2*3*128; LSTM(64, 64) 4*64*(64+64) + 2*4*64; actor 192*64+64 + 64*7+7;
    # critic 192*64+64 + 64+1
    want = (208 + 2080 + 8256) + 32 * vocab + 62208 + 33280 + (12352 + 455) + (12352 + 65)
    assert sum(p.numel() for p in pol.parameters()) == want == 131256 + 32 * vocab
    kit = KitACModel(7, vocab)
    shapes = sorted(tuple(p.shape) for p in pol.parameters())
    assert shapes == sorted(tuple(p.shape) for p in kit.parameters())
    assert pol.conv[0].in_channels == 3 and pol.memory.input_size == 64
    assert pol.actor[0].in_features == pol.critic[0].in_features == 64 + 128
    assert not hasattr(pol, "film")


def test_kit_layout_computes_the_kits_function():
    """Our weights copied into the transcribed kit model: same logits, values, memory."""
    torch.manual_seed(0)
    pol = _kit_policy(init="torch").double()
    kit = KitACModel(7, Vocab().max_size).double()
    rename = {"image_conv.0": "conv.0", "image_conv.3": "conv.3", "image_conv.5": "conv_last",
              "word_embedding": "mission.embed", "text_rnn": "mission.gru"}
    ours = pol.state_dict()
    state = {}
    for key in kit.state_dict():
        mod, _, leaf = key.rpartition(".")
        if mod == "memory_rnn":
            state[key] = ours[f"memory.lstm.{leaf}_l0"]
        else:
            state[key] = ours[f"{rename.get(mod, mod)}.{leaf}"]
    kit.load_state_dict(state)
    obs = _obs(1, 6)
    h0 = torch.randn(6, 64, dtype=torch.float64)
    c0 = torch.randn(6, 64, dtype=torch.float64)
    logits, value, (h, c), _ = pol(obs, (h0, c0), None)
    k_logits, k_value, k_mem = kit(obs["image"][0], obs["mission"][0], torch.cat([h0, c0], 1))
    torch.testing.assert_close(logits[0], k_logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(value[0], k_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat([h, c], 1), k_mem, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory", ["lstm", "rim"])
def test_heads_layout_speed_paths_agree(memory):
    """``heads`` with either core: the indexed tables (PPO's minibatches) and the mission
    cache (collection) give the plain path's numbers; the heads read [memory out, m]."""
    torch.manual_seed(1)
    pol = _kit_policy(memory, hidden_size=32)
    obs = _obs(3, 4, seed=2)
    done = torch.zeros(3, 4, dtype=torch.bool)
    done[1, 2] = True
    state = pol.initial_state(4)
    logits, value, _, _ = pol(obs, state, done)
    from metarim.algorithms.ppo import distinct_obs

    logits_i, value_i, _, _ = pol(distinct_obs(obs), state, done)
    torch.testing.assert_close(logits_i, logits)
    torch.testing.assert_close(value_i, value)
    with torch.no_grad(), pol.mission.cached():
        steps = []
        s = state
        for t in range(3):
            lt, _, s, _ = pol({k: v[t : t + 1] for k, v in obs.items()}, s, done[t : t + 1])
            steps.append(lt)
    torch.testing.assert_close(torch.cat(steps), logits.detach(), rtol=1e-5, atol=1e-6)
    # by hand: memory over ReLU(z) only, heads over [out, mission code]
    with torch.no_grad():
        z = torch.relu(pol.image_code(obs["image"].flatten(0, 1))).view(3, 4, -1)
        m = pol.mission(obs["mission"].flatten(0, 1)).view(3, 4, -1)
        out, _, _ = pol.memory(z, state, done)
        torch.testing.assert_close(pol.actor(torch.cat([out, m], -1)), logits.detach())


def test_raw_image_encoding_reads_the_ids_as_floats():
    torch.manual_seed(0)
    pol = ActorCritic(7, 50, image_encoding="raw")
    assert pol.conv[0].weight.shape == (16, 3, 2, 2)
    assert ActorCritic(7, 50, image_encoding="onehot").conv[0].weight.shape == (16, 20, 2, 2)
    image = _obs(1, 5)["image"][0]
    x = image.float().permute(0, 3, 1, 2)
    want = pol.conv_last(pol.conv(x)).flatten(1)
    with torch.no_grad():  # also the native-kernel path for <= 8 rows
        torch.testing.assert_close(pol.image_code(image), want.detach())
    torch.testing.assert_close(pol.image_code(image), want)
    with pytest.raises(ValueError, match="image_encoding"):
        ActorCritic(7, 50, image_encoding="embed")


def test_kit_init_normalises_rows_outside_the_memory():
    torch.manual_seed(3)
    ref = _kit_policy("rim", init="torch", hidden_size=32)
    torch.manual_seed(3)
    pol = _kit_policy("rim", init="kit", hidden_size=32)
    ref_film = ActorCritic(7, 50, combine="film", init="torch")
    linears = {n: m for n, m in pol.named_modules() if isinstance(m, nn.Linear) and not n.startswith("memory.")}
    assert sorted(linears) == ["actor.0", "actor.2", "critic.0", "critic.2"]
    for name, layer in linears.items():
        torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(layer.out_features), msg=name)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias)), name
    # everything else is PyTorch's init, drawn before: the same as with init="torch"
    ref_state = ref.state_dict()
    for key, value in pol.state_dict().items():
        if key.split(".")[0] not in ("actor", "critic"):
            assert torch.equal(value, ref_state[key]), key
    # the kit has no small actor output: its rows have norm 1, not ~0.01 as ours
    assert ref.actor[2].weight.norm(dim=1).max() < 0.05
    film = ActorCritic(7, 50, combine="film", init="kit").film
    torch.testing.assert_close(film.weight.norm(dim=1), torch.ones(film.out_features))
    assert ref_film.film.weight.norm(dim=1).min() < 0.99  # torch's default is not normalised


def test_actor_critic_defaults_are_the_train_config_defaults():
    """A Python-API user who builds ``ActorCritic`` without arguments gets the model that
    ``metarim train`` builds by default: the same parameter names, shapes and init."""
    config = TrainConfig()
    torch.manual_seed(0)
    want = build_policy(config, 7, Vocab())
    torch.manual_seed(0)
    got = ActorCritic(7, Vocab().max_size, memory=config.memory)
    want_state = want.state_dict()
    assert list(got.state_dict()) == list(want_state)
    for key, value in got.state_dict().items():
        assert torch.equal(value, want_state[key]), key


def test_mission_dim_sets_the_gru():
    pol = build_policy(TrainConfig(mission_dim=40, combine="film"), 7, Vocab())
    assert pol.mission.gru.hidden_size == 40 and pol.film.in_features == 40
    pol = build_policy(TrainConfig(mission_dim=40, combine="concat"), 7, Vocab())
    assert pol.memory.input_size == 64 + 40


@pytest.mark.parametrize("field,value,message", [
    ("adam_eps", 0.0, "adam_eps"), ("mission_dim", 0, "mission_dim"), ("init", "xavier", "init"),
    ("image_encoding", "embed", "image_encoding"), ("combine", "add", "heads"),
    ("memory_refresh", True, "window_shift"),
])
def test_bad_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_window_shift_is_ppos_only():
    with pytest.raises(ValueError, match="window_shift=True needs num_steps"):
        TrainConfig(num_steps=4, recurrence=4, batch_size=4, window_shift=True)
    for algo in ("a2c", "metarim", "maml", "reptile"):
        with pytest.raises(ValueError, match="PPO's epochs"):
            make_learner(TrainConfig(algo=algo, memory="rim", env=LEVEL, window_shift=True))


def test_adam_eps_reaches_every_learners_optimiser(monkeypatch):
    made = []
    real = torch.optim.Adam

    def recording(params, **kw):
        made.append(kw["eps"])
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", recording)
    tiny = {"env": LEVEL, "hidden_size": 12, "num_units": 3, "num_envs": 2, "num_steps": 8,
            "chunk_length": 4, "batch_size": 16, "num_tasks": 5, "meta_batch": 2, "adam_eps": 1e-8}
    for algo, memory in (("ppo", "lstm"), ("a2c", "lstm"), ("metarim", "rim"), ("maml", "lstm"),
                         ("reptile", "lstm")):
        made.clear()
        learner = make_learner(TrainConfig(algo=algo, memory=memory, **tiny))
        if algo == "reptile":  # its Adam is built per task, inside the step
            learner.step()
        assert made and set(made) == {1e-8}, algo
        learner.close()
    made.clear()
    make_learner(TrainConfig(algo="ppo", **{**tiny, "adam_eps": 1e-5})).close()
    assert made == [1e-5]


# -- torch-ac's PPO epochs ----------------------------------------------------------
def _as_double(rollout):
    conv = lambda t: t.double() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return dataclasses.replace(
        rollout, obs=dict(rollout.obs), values=conv(rollout.values), rewards=conv(rollout.rewards),
        logprobs=conv(rollout.logprobs), last_value=conv(rollout.last_value),
        memory=tuple(conv(m) + 0.1 * torch.randn_like(conv(m)) for m in rollout.memory))


def _torch_ac_update(policy, optimizer, rollout, c, updates: int) -> None:
    """torch-ac 1.4.0 ``PPOAlgo.update_parameters`` + ``_get_batches_starting_indexes``,
    transcribed over flattened experience (index ``b * T + t``), with the batches drawn
    by our ``torch.randperm`` of window ids (window ``j`` of the shifted or unshifted set
    starts at step ``offset + (j // B) R`` of column ``j % B``)."""
    from metarim.rl.losses import gae

    T, B = rollout.actions.shape
    R = c.recurrence
    adv, ret = gae(rollout.rewards, rollout.values, rollout.ends, rollout.last_value,
                   gamma=c.gamma, lam=c.gae_lambda)
    flat = lambda x: x.transpose(0, 1).reshape(T * B, *x.shape[2:])  # noqa: E731
    image, mission = flat(rollout.obs["image"]), flat(rollout.obs["mission"])
    actions, old_logp, old_v = flat(rollout.actions), flat(rollout.logprobs), flat(rollout.values)
    adv, ret = flat(adv), flat(ret)
    mask = 1.0 - flat(rollout.starts).double()
    memory = [flat(m).clone() for m in rollout.memory]
    for epoch in range(c.epochs):
        shifted = c.window_shift and (updates * c.epochs + epoch) % 2 == 1
        offset, per_col = (R // 2, T // R - 1) if shifted else (0, T // R)
        order = torch.randperm(per_col * B)
        starts = torch.tensor([(int(j) % B) * T + offset + (int(j) // B) * R for j in order])
        for i0 in range(0, len(starts), c.batch_size // R):
            inds = starts[i0 : i0 + c.batch_size // R]
            mem = [m[inds] for m in memory]
            loss = 0.0
            for i in range(R):
                sb = inds + i
                keep = mask[sb]
                obs = {"image": image[sb].unsqueeze(0), "mission": mission[sb].unsqueeze(0)}
                logits, value, state, _ = policy(obs, tuple(m * keep.view(-1, *[1] * (m.dim() - 1)) for m in mem), None)
                dist = torch.distributions.Categorical(logits=logits[0])
                entropy = dist.entropy().mean()
                ratio = torch.exp(dist.log_prob(actions[sb]) - old_logp[sb])
                surr1 = ratio * adv[sb]
                surr2 = torch.clamp(ratio, 1.0 - c.clip, 1.0 + c.clip) * adv[sb]
                policy_loss = -torch.min(surr1, surr2).mean()
                value_clipped = old_v[sb] + torch.clamp(value[0] - old_v[sb], -c.clip, c.clip)
                value_loss = torch.max((value[0] - ret[sb]).pow(2), (value_clipped - ret[sb]).pow(2)).mean()
                loss = loss + policy_loss - c.entropy_coef * entropy + c.value_coef * value_loss
                mem = list(state)
                if c.memory_refresh and i < R - 1:
                    for m, s in zip(memory, mem):
                        m[inds + i + 1] = s.detach()
            loss = loss / R
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), c.max_grad_norm)
            optimizer.step()


@pytest.mark.parametrize("shift,refresh,updates,epochs", [
    (False, False, 0, 4), (True, False, 0, 4), (True, True, 0, 4), (True, True, 1, 3)])
def test_ppo_epochs_match_torch_ac(shift, refresh, updates, epochs):
    """Our batched windows against torch-ac's step-by-step loop, float64, one update of a
    rollout with episode starts inside and at the edges of windows (rim core: its state
    is a tuple like the LSTM's; ``updates=1, epochs=3`` checks the run-wide parity)."""
    torch.set_num_threads(1)
    cfg = TrainConfig(env=LEVEL, env_backend="tensor", memory="rim", hidden_size=12, num_units=3,
                      num_envs=3, num_steps=16, recurrence=4, batch_size=16, epochs=epochs,
                      norm_adv=False, entropy_coef=0.01, lr=1e-2, window_shift=shift,
                      memory_refresh=refresh, seed=4)
    learner = make_learner(cfg)
    torch.manual_seed(0)
    rollout = _as_double(learner.collector.collect())
    rollout.starts[[1, 2, 6, 8, 13], [0, 1, 2, 0, 1]] = True
    learner.policy.double()
    learner.updates = updates
    ref = make_learner(cfg)
    ref.policy.double()
    ref.policy.load_state_dict(learner.policy.state_dict())
    torch.manual_seed(5)
    learner.update(rollout)
    torch.manual_seed(5)
    _torch_ac_update(ref.policy, ref.optimizer, rollout, cfg, updates)
    for (name, p), q in zip(learner.policy.named_parameters(), ref.policy.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10, msg=name)
    start = make_learner(cfg)
    moved = max(float((p - q.double()).abs().max()) for p, q in
                zip(learner.policy.state_dict().values(), start.policy.state_dict().values()))
    assert moved > 1e-3  # the update did something
    learner.close(), ref.close(), start.close()


def test_memory_refresh_changes_the_update():
    """With the shift, the refresh changes the result (the check above could pass if the
    write-back were never read); without the write-back the reference differs."""
    cfg = dict(env=LEVEL, env_backend="tensor", num_envs=2, num_steps=16, recurrence=4, batch_size=16,
               epochs=3, hidden_size=16, window_shift=True, seed=2)
    finals = []
    for refresh in (False, True):
        learner = make_learner(TrainConfig(**cfg, memory_refresh=refresh))
        torch.manual_seed(0)
        learner.update(learner.collector.collect())
        finals.append(torch.cat([p.detach().flatten() for p in learner.policy.parameters()]))
        learner.close()
    assert not torch.equal(*finals)


# -- legacy values ------------------------------------------------------------------
def _old_configs() -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())["config"] for p in sorted(DATA.glob("*/config.json"))}


def test_every_field_added_since_f898eb9_has_a_legacy_value():
    old = set.union(*(set(c) for c in _old_configs().values()))
    new = {f.name for f in dataclasses.fields(TrainConfig)} - old
    assert new == set(LEGACY), "add the new field to config.LEGACY with its value of today"
    TrainConfig(**LEGACY)  # valid values
    for name, value in LEGACY.items():  # the default is the old behaviour, unless changed since
        old, new, _ = DEFAULT_CHANGES.get(name, (value, value, ""))
        assert value == old and getattr(TrainConfig(), name) == new, name


def test_default_changes_are_the_defaults():
    for name, (old, new, why) in DEFAULT_CHANGES.items():
        assert getattr(TrainConfig(), name) == new != old, name
        assert why.startswith("issue "), name
        TrainConfig(**{name: old})  # the old value stays valid


def test_legacy_values_fill_missing_keys_only(monkeypatch):
    monkeypatch.setitem(LEGACY, "adam_eps", 1e-8)  # as if the default had changed since
    for name, saved in _old_configs().items():
        cfg = TrainConfig.from_dict(saved, legacy=True)
        assert cfg.adam_eps == 1e-8, name
        assert TrainConfig.from_dict(saved).adam_eps == TrainConfig().adam_eps
        assert TrainConfig.from_dict({**saved, "adam_eps": 1e-3}, legacy=True).adam_eps == 1e-3


def _copy_run(tmp_path: pathlib.Path, name: str = "ppo-lstm") -> pathlib.Path:
    run = tmp_path / name
    shutil.copytree(DATA / name, run)
    return run


def test_sweep_compares_an_old_run_through_its_legacy_values(tmp_path, monkeypatch):
    from metarim.sweep.run import run_state

    run = _copy_run(tmp_path)
    saved = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["config"], legacy=True)
    expanded = {**saved.to_dict(), "frames": 10**6}
    assert run_state(run, expanded) == "partial"
    assert run_state(run, {**expanded, "adam_eps": 1e-8}) == "conflict"
    monkeypatch.setitem(LEGACY, "adam_eps", 1e-8)  # the default changed after the run
    assert run_state(run, expanded) == "conflict"  # asks for 1e-5: not what the run did
    assert run_state(run, {**expanded, "adam_eps": 1e-8}) == "partial"


def test_resume_and_eval_of_an_old_run_use_legacy_values(tmp_path, monkeypatch):
    from metarim.cli import UsageError, _build_config, _parser
    from metarim.evaluation.evaluate import load_run

    monkeypatch.setitem(LEGACY, "adam_eps", 1e-8)
    monkeypatch.setitem(LEGACY, "init", "kit")  # no effect on a loaded policy's weights
    run = _copy_run(tmp_path)
    args = _parser().parse_args(["train", "--out", str(run), "--resume"])
    cfg = _build_config(args)
    assert (cfg.adam_eps, cfg.init, cfg.seed) == (1e-8, "kit", 7)
    args = _parser().parse_args(["train", "--out", str(run), "--resume", "--adam-eps", "1e-5"])
    with pytest.raises(UsageError, match="adam_eps"):
        _build_config(args)
    config, policy, _, state = load_run(run)
    assert (config.adam_eps, config.init) == (1e-8, "kit")
    assert torch.equal(policy.actor[2].weight, state["policy"]["actor.2.weight"])
    assert config_module.LEGACY is LEGACY
