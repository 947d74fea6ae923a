"""The tensor GoTo env equals minigrid exactly (the reference is gymnasium's vector env).

Every comparison steps ``make_vec_env`` (``SyncVectorEnv`` of real minigrid envs, same-step
autoreset) and the tensor env side by side with the same actions and asserts bitwise
equality of observations (image, direction, mission ids), rewards (float64),
terminations and truncations at every step, resets included. The action sequences are
uniform over all 7 actions plus a "seeker" mode that mostly walks and turns, so that
episodes also end by success, objects are carried, dropped and toggled, and each test
checks that these events did happen (it cannot pass on idle episodes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarim.envs import make_env, make_vec_env
from metarim.envs.tensor import GOTO_LEVELS, TensorGoToVecEnv, make_tensor_vec_env
from metarim.envs.tensor.codes import EMPTY
from metarim.tasks import MissionFilter, Task, Vocab


def _actions(rng: np.random.Generator, b: int, mode: str) -> np.ndarray:
    if mode == "uniform":
        return rng.integers(0, 7, b)
    return rng.choice(7, size=b, p=[0.2, 0.2, 0.4, 0.08, 0.06, 0.04, 0.02])


def compare(tasks, num_envs: int, steps: int, *, seed: int, action_seed: int, mode: str = "uniform",
            workers: int = 0) -> dict[str, int]:
    """Steps both backends; asserts equality at every step; returns event counts."""
    vocab = Vocab()
    ref = make_vec_env(tasks, num_envs, seed=seed, vocab=vocab)
    ten = TensorGoToVecEnv(tasks, num_envs, seed=seed, vocab=vocab, numpy=True, workers=workers)
    try:
        events = dict.fromkeys(("success", "truncated", "carried", "dropped", "steps"), 0)
        o_ref, _ = ref.reset()
        o_ten, _ = ten.reset()
        rng = np.random.default_rng(action_seed)
        for t in range(steps):
            for k in ("image", "direction", "mission"):
                assert o_ref[k].dtype == o_ten[k].dtype, (t, k)
                np.testing.assert_array_equal(o_ten[k], o_ref[k], err_msg=f"step {t} {k}")
            carrying = ten.state.carrying != EMPTY
            a = _actions(rng, num_envs, mode)
            o_ref, r_ref, te_ref, tr_ref, _ = ref.step(a)
            o_ten, r_ten, te_ten, tr_ten, _ = ten.step(a)
            assert r_ten.dtype == r_ref.dtype == np.float64
            np.testing.assert_array_equal(r_ten, r_ref, err_msg=f"step {t} reward")
            np.testing.assert_array_equal(te_ten, te_ref, err_msg=f"step {t} terminated")
            np.testing.assert_array_equal(tr_ten, tr_ref, err_msg=f"step {t} truncated")
            events["success"] += int((r_ref > 0).sum())
            events["truncated"] += int(tr_ref.sum())
            events["carried"] += int(carrying.sum())
            events["dropped"] += int(((a == 4) & carrying.numpy() & ~(te_ref | tr_ref)
                                      & (ten.state.carrying == EMPTY).numpy()).sum())
            events["steps"] += num_envs
        for k in ("image", "direction", "mission"):
            np.testing.assert_array_equal(o_ten[k], o_ref[k])
        return events
    finally:
        ten.close()
        ref.close()


@pytest.mark.parametrize("level", GOTO_LEVELS)
def test_equal_to_minigrid_every_goto_level(level):
    ev = compare(Task(level), 4, 100, seed=11, action_seed=5)
    ev2 = compare(Task(level), 4, 120, seed=12, action_seed=6, mode="seeker")
    assert ev["success"] + ev2["success"] > 0 and ev["truncated"] + ev2["truncated"] > 0, (ev, ev2)


def test_equal_to_minigrid_seeker_actions_success_pickup_drop():
    ev = compare(Task("BabyAI-GoToLocal-v0"), 8, 300, seed=1, action_seed=2, mode="seeker")
    assert ev["success"] > 20 and ev["truncated"] > 0 and ev["carried"] > 0 and ev["dropped"] > 0, ev


def test_equal_to_minigrid_mission_filter_and_seed_range():
    task = Task("BabyAI-GoToLocalS6N3-v0", seed_start=100, seed_stop=140,
                mission_filter=MissionFilter(colors=("red", "blue")))
    ev = compare(task, 4, 200, seed=7, action_seed=8, mode="seeker")
    assert ev["steps"] == 800 and ev["success"] > 0, ev  # episodes ended, auto-reset compared


def test_equal_to_minigrid_with_env_kwargs():
    task = Task("BabyAI-GoToLocal-v0", env_kwargs=(("max_steps", 20), ("num_dists", 3), ("room_size", 7)))
    ev = compare(task, 4, 120, seed=5, action_seed=6)
    assert ev["truncated"] >= 12, ev


def test_equal_to_minigrid_one_task_per_env_mixed_sizes():
    tasks = [Task("BabyAI-GoToLocalS5N2-v0"), Task("BabyAI-GoToLocal-v0"),
             Task("BabyAI-GoToRedBallGrey-v0"), Task("BabyAI-GoToObjS6-v1")]
    ev = compare(tasks, 4, 200, seed=3, action_seed=4)
    assert ev["steps"] == 800 and ev["success"] + ev["truncated"] > 0, ev


def test_equal_to_minigrid_with_background_workers():
    ev = compare(Task("BabyAI-GoToLocalS6N2-v0"), 5, 150, seed=2, action_seed=9, workers=1)
    assert ev["success"] + ev["truncated"] > 5, ev


@pytest.mark.parametrize("level", ["BabyAI-GoToLocal-v0", "BabyAI-GoToRedBallGrey-v0"])
def test_layouts_equal_untouched_minigrid_resets(level):
    """The generator's shortcuts (no first obs, faster reachability check) change nothing."""
    import contextlib
    import io

    import gymnasium as gym

    from metarim.envs.tensor import LayoutGenerator
    from metarim.envs.tensor.codes import CODE_MASK, ENCODING
    from metarim.envs.tensor.layouts import PAD

    gen = LayoutGenerator(level)
    env = gym.make(level).unwrapped
    w, h = env.width, env.height
    for seed in range(250):
        with contextlib.redirect_stdout(io.StringIO()):
            env.reset(seed=seed)
        lay = gen.generate(seed)
        grid = ENCODING[lay.grid.reshape(w + 2 * PAD, h + 2 * PAD)[PAD:-PAD, PAD:-PAD] & CODE_MASK]
        np.testing.assert_array_equal(grid, env.grid.encode(), err_msg=f"seed {seed}")
        assert (lay.mission, lay.dir, lay.max_steps) == (env.mission, env.agent_dir, env.max_steps)
        assert lay.pos == gen.flat(*env.agent_pos)
        assert sorted(map(tuple, np.argwhere(lay.target.reshape(w + 2 * PAD, -1)) - PAD)) == \
            sorted(map(tuple, env.instrs.desc.obj_poss))


def test_reset_with_seed_reseeds_like_gymnasium():
    vocab = Vocab()
    task = Task("BabyAI-GoToLocalS7N4-v0")
    ref = make_vec_env(task, 3, seed=0, vocab=vocab)
    ten = TensorGoToVecEnv(task, 3, seed=0, vocab=vocab, numpy=True)
    for s in (5, [9, 8, 7]):
        o_ref, _ = ref.reset(seed=s)
        o_ten, _ = ten.reset(seed=s)
        for k in o_ref:
            np.testing.assert_array_equal(o_ten[k], o_ref[k])
        for _ in range(30):
            a = np.array([2, 0, 2])
            o_ref, r, *_ = ref.step(a)
            o_ten, r2, *_ = ten.step(a)
            np.testing.assert_array_equal(o_ten["image"], o_ref["image"])
            np.testing.assert_array_equal(r2, r)


@pytest.mark.parametrize("workers", [0, 1])
def test_state_round_trip_and_interchange_with_task_env(workers):
    """get_state of the tensor env restores a minigrid TaskEnv mid-episode, and back."""
    vocab = Vocab()
    task = Task("BabyAI-GoToLocal-v0")
    ten = TensorGoToVecEnv(task, 2, seed=4, vocab=vocab, numpy=True)
    ten.reset()
    rng = np.random.default_rng(0)
    for _ in range(23):
        ten.step(rng.integers(0, 7, 2))
    state = ten.get_env_state(1)
    assert len(state["actions"]) == int(ten.state.steps[1])
    env = make_env(task, vocab, seed=0)
    obs = env.set_state(state)
    np.testing.assert_array_equal(ten._obs()["image"][1], obs["image"])
    other = TensorGoToVecEnv(task, 2, seed=99, vocab=vocab, numpy=True, workers=workers)
    other.reset()
    other.set_env_state(0, env.get_state())
    np.testing.assert_array_equal(other._obs()["image"][0], obs["image"])
    for _ in range(200):  # the streams continue identically, episodes after this one included
        a = int(rng.integers(0, 7))
        obs, r, te, tr, _ = env.step(a)
        if te or tr:
            obs, _ = env.reset()
        o2, r2, te2, tr2, _ = other.step(np.array([a, 0]))
        np.testing.assert_array_equal(o2["image"][0], obs["image"])
        np.testing.assert_array_equal(o2["mission"][0], obs["mission"])
        assert (r2[0], te2[0], tr2[0]) == (r, te, tr)
    other.close()


def test_rollout_collector_identical_on_both_backends():
    from metarim.algorithms.base import build_policy
    from metarim.config import TrainConfig
    from metarim.rl.rollout import RolloutCollector

    cfg = TrainConfig(env="BabyAI-GoToLocalS6N2-v0", num_envs=4, num_steps=32, batch_size=128)
    rollouts = []
    for backend in ("minigrid", "tensor"):
        vocab = Vocab()
        envs = make_vec_env(Task(cfg.env), 4, seed=0, vocab=vocab, backend=backend)
        torch.manual_seed(0)
        policy = build_policy(cfg, 7, vocab)
        rollouts.append(RolloutCollector(envs, policy, 32).collect())
        envs.close()
    a, b = rollouts
    for k in a.obs:
        torch.testing.assert_close(b.obs[k], a.obs[k], rtol=0, atol=0)
    for f in ("actions", "rewards", "starts", "ends"):
        torch.testing.assert_close(getattr(b, f), getattr(a, f), rtol=0, atol=0)
    assert a.episodes == b.episodes


@pytest.mark.parametrize("algo, memory", [("ppo", "lstm"), ("metarim", "rim"), ("maml", "lstm")])
def test_learners_train_identically_on_both_backends(algo, memory, monkeypatch):
    """``env_backend`` reaches the learners, and their updates are bit-identical."""
    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig

    built = []
    init = TensorGoToVecEnv.__init__
    monkeypatch.setattr(TensorGoToVecEnv, "__init__", lambda self, *a, **k: built.append(1) or init(self, *a, **k))
    params = []
    for backend in ("minigrid", "tensor"):
        cfg = TrainConfig.from_dict({
            "env": "BabyAI-GoToLocalS6N2-v0", "algo": algo, "memory": memory, "env_backend": backend,
            "hidden_size": 12, "num_units": 3, "k": 2, "num_envs": 2, "num_steps": 8, "chunk_length": 4,
            "batch_size": 16, "num_tasks": 5, "meta_batch": 2, "seed": 3})
        torch.manual_seed(3)
        learner = make_learner(cfg)
        learner.step()
        assert bool(built) == (backend == "tensor"), backend
        params.append([p.detach().clone() for p in learner.policy.parameters()])
        learner.close()
    for p, q in zip(*params):
        assert torch.equal(p, q)


def test_collector_checkpoint_resumes_bit_for_bit():
    from metarim.algorithms.base import build_policy
    from metarim.config import TrainConfig
    from metarim.rl.rollout import RolloutCollector

    cfg = TrainConfig(env="BabyAI-GoToLocalS5N2-v0", num_envs=3, num_steps=16, batch_size=48)
    vocab = Vocab()
    torch.manual_seed(0)
    policy = build_policy(cfg, 7, vocab)
    col = RolloutCollector(make_vec_env(Task(cfg.env), 3, seed=0, vocab=vocab, backend="tensor"), policy, 16)
    col.collect()
    state, rng = col.state_dict(), torch.get_rng_state()
    first = col.collect()
    fresh = RolloutCollector(make_vec_env(Task(cfg.env), 3, seed=123, vocab=vocab, backend="tensor"), policy, 16)
    fresh.load_state_dict(state)
    torch.set_rng_state(rng)
    again = fresh.collect()
    for k in first.obs:
        assert torch.equal(first.obs[k], again.obs[k]), k
    assert torch.equal(first.actions, again.actions) and torch.equal(first.rewards, again.rewards)
    assert first.episodes == again.episodes


def test_torch_outputs_and_input_validation():
    envs = make_tensor_vec_env(Task("BabyAI-GoToObj-v0"), 3, seed=0, vocab=Vocab())
    assert isinstance(envs.reset()[0]["image"], np.ndarray)
    ten = TensorGoToVecEnv(Task("BabyAI-GoToObj-v0"), 3, seed=0, vocab=Vocab())
    with pytest.raises(RuntimeError, match="reset"):
        ten.step(torch.zeros(3, dtype=torch.long))
    obs, _ = ten.reset()
    assert obs["image"].dtype == torch.uint8 and obs["direction"].dtype == torch.int64
    assert ten.observation_space["image"].shape == (3, 7, 7, 3)
    with pytest.raises(ValueError, match="shape"):
        ten.step(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="0..6"):
        ten.step(torch.tensor([0, 7, 1]))


@pytest.mark.parametrize("level", ["BabyAI-GoTo-v0", "MiniGrid-Unlock-v0", "BabyAI-Pickup-v0"])
def test_unsupported_level_is_a_one_line_error(level):
    with pytest.raises(ValueError) as err:
        TensorGoToVecEnv(Task(level), 2, seed=0, vocab=Vocab())
    assert "not supported" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not supported"):
        make_vec_env(Task(level), 2, seed=0, vocab=Vocab(), backend="tensor")


def test_unknown_backend():
    with pytest.raises(ValueError) as err:
        make_vec_env(Task("BabyAI-GoToObj-v0"), 2, seed=0, vocab=Vocab(), backend="jax")
    assert str(err.value) == "backend='jax' must be one of 'minigrid', 'tensor'"


def test_states_interchange_between_backends_through_the_protocol():
    """get_states/set_states of every backend carry the same plain data (the checkpoint's
    ``"envs"`` list): minigrid's states restore the tensor env, and back."""
    from metarim.envs import CheckpointableVecEnv

    vocab, task = Vocab(), Task("BabyAI-GoToLocalS6N2-v0")
    ref = make_vec_env(task, 3, seed=5, vocab=vocab)
    ten = make_vec_env(task, 3, seed=77, vocab=vocab, backend="tensor")
    assert isinstance(ref, CheckpointableVecEnv) and isinstance(ten, CheckpointableVecEnv)
    ref.reset()
    ten.reset()
    rng = np.random.default_rng(1)
    for _ in range(17):
        ref.step(rng.integers(0, 7, 3))
    states = ref.get_states()
    assert states == [e.get_state() for e in ref.envs]  # TaskEnv's data, unchanged
    ten.set_states(states)
    assert ten.get_states() == states
    for _ in range(60):
        a = rng.integers(0, 7, 3)
        o_ref, r_ref, *_ = ref.step(a)
        o_ten, r_ten, *_ = ten.step(a)
        for k in o_ref:
            np.testing.assert_array_equal(o_ten[k], o_ref[k])
        np.testing.assert_array_equal(r_ten, r_ref)
    with pytest.raises(ValueError, match="got 2 env states for 3 envs"):
        ten.set_states(states[:2])
    with pytest.raises(ValueError, match="got 2 env states for 3 envs"):
        ref.set_states(states[:2])


@pytest.mark.slow
@pytest.mark.parametrize("level", GOTO_LEVELS)
def test_equal_to_minigrid_exhaustive(level):
    """Many seeds, long random sequences of both kinds, per level (a few minutes)."""
    ended = 0
    for seed in range(6):
        ev = compare(Task(level), 8, 400, seed=100 + seed, action_seed=seed,
                     mode="uniform" if seed % 2 else "seeker")
        assert ev["steps"] == 8 * 400, ev
        ended += ev["success"] + ev["truncated"]
    assert ended > 0  # episodes ended, so auto-resets were compared too
