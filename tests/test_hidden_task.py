"""Hidden-task trials (issue 20): the env never shows the mission, its reward is
minigrid's on minigrid's own layouts, a trial is K episodes with the memory reset and
GAE cut only between trials, the within-trial curve is the hand computation, and every
learner trains on it from the command line."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from metarim.algorithms.common import TrialCollector, make_collector
from metarim.cli import main
from metarim.config import TrainConfig
from metarim.envs.hidden import FEEDBACK_WORDS, HiddenTaskVecEnv, make_hidden_vec_env, task_label
from metarim.evaluation.stats import wilson_interval
from metarim.evaluation.trials import trial_curve
from metarim.rl.policy import ActorCritic
from metarim.tasks import MissionFilter, MissionSampler, Task, Vocab
from metarim.tasks.samplers import COLORS, OBJECTS

LEVEL = "BabyAI-GoToLocalS6N2-v0"
POOL = MissionSampler(LEVEL).tasks  # the 18 (colour, object) targets


def _actions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Mostly walking and turning, so that episodes end by success and by time-out."""
    return rng.choice(7, size=n, p=[0.25, 0.25, 0.4, 0.04, 0.03, 0.02, 0.01])


def _play(envs: HiddenTaskVecEnv, steps: int, seed: int):
    """Steps ``envs`` with seeded actions; yields (t, obs before, actions, states before, step output)."""
    obs, _ = envs.reset()
    rng = np.random.default_rng(seed)
    for t in range(steps):
        states = envs.get_states()
        a = _actions(rng, envs.num_envs)
        out = envs.step(a)
        yield t, obs, a, states, out
        obs = out[0]


@pytest.mark.parametrize("backend", ["tensor", "minigrid"])
def test_mission_is_never_shown_and_feedback_is_the_previous_outcome(backend):
    vocab = Vocab()
    envs = make_hidden_vec_env(POOL, 4, seed=3, vocab=vocab, trial_episodes=3, backend=backend)
    target_words = set(COLORS) | set(OBJECTS)
    words_seen = set()
    first_of_episode = np.ones(4, dtype=bool)  # the next obs starts an episode
    episode_in_trial = np.zeros(4, dtype=int)
    last_success = np.zeros(4, dtype=bool)
    counts = {"found": 0, "missed": 0}
    try:
        for _, obs, _, _, (nxt, _, term, trunc, info) in _play(envs, 250, seed=1):
            for b in range(4):
                words = vocab.decode(obs["mission"][b]).split()
                assert len(words) == 1 and not target_words & set(words), words
                words_seen.update(words)
                want = "hidden"
                if first_of_episode[b] and episode_in_trial[b] > 0:
                    want = "found" if last_success[b] else "missed"
                    counts[want] += 1
                assert words == [want], (b, words, want)
            end = info["inner_end"]
            last_success = np.where(end, info["inner_success"] > 0, last_success)
            episode_in_trial = np.where(end, (episode_in_trial + 1) % 3, episode_in_trial)
            first_of_episode = end
            assert ((term | trunc) == (end & (episode_in_trial == 0))).all()
            for b in range(4):
                assert not target_words & set(vocab.decode(nxt["mission"][b]).split())
    finally:
        envs.close()
    assert words_seen == set(FEEDBACK_WORDS) and min(counts.values()) > 0, counts


def test_reward_is_minigrids_on_the_same_layouts():
    """Every finished episode is replayed in a fresh ``gym.make(level)`` reset with its
    episode seed: same rewards and ends at every step, a mission naming the trial's target,
    1 - 0.9 t/T on success, and facing a non-target object gives 0 and goes on."""
    envs = make_hidden_vec_env(POOL, 4, seed=5, vocab=Vocab(), trial_episodes=2)
    ref = gym.make(LEVEL)
    seeds = [-1] * 4
    actions: list[list[int]] = [[] for _ in range(4)]
    rewards: list[list[float]] = [[] for _ in range(4)]
    events = dict.fromkeys(("episodes", "success", "timeout", "other_object"), 0)
    try:
        for _, _, a, states, (_, rew, _, _, _) in _play(envs, 400, seed=2):
            for b in range(4):
                if not states[b]["actions"]:
                    seeds[b], actions[b], rewards[b] = states[b]["episode_seed"], [], []
                actions[b].append(int(a[b]))
                rewards[b].append(float(rew[b]))
            for rec in envs.drain():
                b = rec["env"]
                with contextlib.redirect_stdout(io.StringIO()):
                    ref.reset(seed=seeds[b])
                env = ref.unwrapped
                assert set(rec["task"].split()) <= set(env.mission.split()), (rec, env.mission)
                for t, act in enumerate(actions[b]):
                    _, r, te, tr, _ = ref.step(act)
                    assert r == rewards[b][t], (rec, t)
                    assert (te or tr) == (t == len(actions[b]) - 1), (rec, t)
                    front = env.grid.get(*env.front_pos)
                    if front is not None and front.type in OBJECTS and r == 0 and not te:
                        events["other_object"] += 1
                if r > 0:
                    assert te and r == 1 - 0.9 * (len(actions[b]) / env.max_steps)
                    events["success"] += 1
                else:
                    assert tr and not te and len(actions[b]) == env.max_steps
                    events["timeout"] += 1
                assert rec["success"] == float(r > 0) and rec["length"] == len(actions[b])
                assert rec["return"] == pytest.approx(sum(rewards[b]))
                events["episodes"] += 1
    finally:
        envs.close()
        ref.close()
    assert min(events.values()) > 0, events


def test_backends_give_the_same_trials():
    """minigrid, the tensor env, and the tensor env with layouts made in a background process."""
    out = {}
    for backend, asynchronous in (("tensor", False), ("minigrid", False), ("tensor", True)):
        envs = make_hidden_vec_env(POOL[:6], 3, seed=9, vocab=Vocab(), trial_episodes=2, backend=backend,
                                   asynchronous=asynchronous)
        steps = [(o["mission"].copy(), o["image"].copy(), r.copy(), te.copy(), tr.copy())
                 for _, o, _, _, (_, r, te, tr, _) in _play(envs, 150, seed=4)]
        out[backend, asynchronous] = (steps, envs.drain())
        envs.close()
    ref = out["tensor", False]
    for other in (out["minigrid", False], out["tensor", True]):
        for x, y in zip(ref[0], other[0]):
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v)
        assert ref[1] == other[1] and len(ref[1]) > 6


def test_trial_is_k_episodes_and_memory_resets_only_at_trial_starts():
    """The collector's starts (memory reset) and ends (GAE cut) against the episode
    starts of the base env itself, replayed with the same actions."""
    K, B, T = 3, 3, 150
    vocab = Vocab()
    torch.manual_seed(0)
    envs = make_hidden_vec_env(POOL, B, seed=7, vocab=vocab, trial_episodes=K)
    policy = ActorCritic(7, vocab.max_size, hidden_size=16)
    collector = make_collector(envs, policy, T)
    assert isinstance(collector, TrialCollector)
    rollout = collector.collect()
    envs.close()
    replay = make_hidden_vec_env(POOL, B, seed=7, vocab=vocab, trial_episodes=K)
    replay.reset()
    inner_start = np.zeros((T + 1, B), dtype=bool)
    for t in range(T + 1):
        inner_start[t] = [not s["actions"] for s in replay.get_states()]  # the base env's own episode starts
        if t < T:
            replay.step(rollout.actions[t].numpy())
    replay.close()
    count = np.cumsum(inner_start, axis=0) - inner_start  # episodes started before t
    trial_start = inner_start & (count % K == 0)
    np.testing.assert_array_equal(rollout.starts.numpy(), trial_start[:T])
    np.testing.assert_array_equal(rollout.ends.numpy(), trial_start[1:])
    assert trial_start[1:].sum() >= B and (inner_start[1:] & ~trial_start[1:]).sum() >= B
    recs = rollout.episodes
    assert len(recs) == inner_start[1:].sum()
    for b in range(B):
        mine = [r for r in recs if r["env"] == b]
        assert [r["index"] for r in mine] == [i % K for i in range(len(mine))]
        assert [r["trial"] for r in mine] == [i // K for i in range(len(mine))]
        tasks = [{r["task"] for r in mine if r["trial"] == k} for k in range(mine[-1]["trial"] + 1)]
        assert all(len(t) == 1 for t in tasks) and all(a != b for a, b in zip(tasks, tasks[1:])), tasks
        starts = np.flatnonzero(inner_start[:, b])
        assert [r["length"] for r in mine] == np.diff(starts).tolist()


@pytest.mark.parametrize("backend", ["tensor", "minigrid"])
def test_states_restore_mid_trial(backend):
    envs = make_hidden_vec_env(POOL, 3, seed=1, vocab=Vocab(), trial_episodes=3, backend=backend)
    rng = np.random.default_rng(0)
    envs.reset()
    for _ in range(70):
        envs.step(_actions(rng, 3))
    states = envs.get_states()
    assert any(s["trial"]["episode"] > 0 for s in states)
    acts = [_actions(rng, 3) for _ in range(80)]

    def run(e):
        out = [e.step(a) for a in acts]
        return [(o["mission"], o["image"], r, te, tr, i["inner_index"]) for o, r, te, tr, i in out], e.drain()

    envs.drain()
    first = run(envs)
    fresh = make_hidden_vec_env(POOL, 3, seed=99, vocab=Vocab(), trial_episodes=3, backend=backend)
    fresh.set_states(states)
    second = run(fresh)
    for x, y in zip(first[0], second[0]):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert first[1] == second[1] and first[1]
    envs.close()
    fresh.close()


def test_trial_curve_equals_hand_computation():
    r = lambda env, trial, i, s, ret, task: {"env": env, "trial": trial, "index": i, "success": s,  # noqa: E731
                                             "return": ret, "task": task, "length": 5}
    recs = [
        r(0, 0, 0, 0.0, 0.0, "red ball"), r(1, 0, 0, 1.0, 0.5, "blue key"), r(0, 0, 1, 1.0, 0.8, "red ball"),
        r(1, 0, 1, 1.0, 0.7, "blue key"), r(0, 0, 2, 1.0, 0.9, "red ball"), r(1, 0, 2, 0.0, 0.0, "blue key"),
        r(0, 1, 0, 1.0, 0.4, "red ball"), r(0, 1, 1, 0.0, 0.0, "red ball"), r(0, 1, 2, 1.0, 0.6, "red ball"),
        r(1, 1, 0, 1.0, 0.3, "grey box"), r(1, 1, 1, 1.0, 0.2, "grey box"),  # incomplete: dropped
    ]
    c = trial_curve(recs, 3)
    # complete trials: (0,0) = [0,1,1], (1,0) = [1,1,0], (0,1) = [1,0,1]
    assert c["trials"] == 3
    assert c["success"] == [2 / 3, 2 / 3, 2 / 3]
    assert c["return"] == pytest.approx([0.3, 0.5, 0.5])
    assert c["first"] == 2 / 3 and c["later"] == 4 / 6 and c["gain"] == pytest.approx(0.0)
    assert c["success_ci95"][0] == list(wilson_interval(2, 3))
    assert c["later_ci95"] == list(wilson_interval(4, 6))
    assert c["by_task"] == {"blue key": {"trials": 1, "success": [1.0, 1.0, 0.0]},
                            "red ball": {"trials": 2, "success": [0.5, 0.5, 1.0]}}
    one = trial_curve([rec for rec in recs if rec["index"] == 0], 1)
    assert one["trials"] == 4 and one["first"] == 3 / 4 and one["later"] is None  # (0,0) (1,0) (0,1) (1,1)


def test_bad_setups_are_refused():
    with pytest.raises(ValueError, match="task_sampler='missions'"):
        TrainConfig(hidden_task=True)
    with pytest.raises(ValueError, match="env-worker"):
        TrainConfig(hidden_task=True, task_sampler="missions", env_worker=True)
    with pytest.raises(ValueError, match="trial_episodes=0"):
        TrainConfig(trial_episodes=0)
    with pytest.raises(ValueError, match="names a colour and an object type"):
        make_hidden_vec_env([Task(LEVEL)], 1, seed=0, vocab=Vocab(), trial_episodes=2)
    other = Task("BabyAI-GoToLocalS8N7-v0", mission_filter=MissionFilter(("red",), ("ball",)))
    with pytest.raises(ValueError, match="mixes levels"):
        make_hidden_vec_env([POOL[0], other], 1, seed=0, vocab=Vocab(), trial_episodes=2)
    frozen = Vocab()
    frozen.frozen = True
    with pytest.raises(ValueError, match="not trained with hidden_task"):
        make_hidden_vec_env(POOL, 1, seed=0, vocab=frozen, trial_episodes=2)
    assert task_label(POOL[0]) == "red ball"


TINY = ["--env", LEVEL, "--env-backend", "tensor", "--hidden-task", "--task-sampler", "missions",
        "--trial-episodes", "2", "--num-envs", "4", "--num-steps", "32", "--batch-size", "64",
        "--hidden-size", "16", "--epochs", "1", "--quiet"]


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in ("fps", "collect_s", "update_s")} for r in csv.DictReader(f)]


@pytest.mark.parametrize("algo", ["ppo", "metarim"])
def test_train_and_eval_trials_from_the_command_line(algo, tmp_path, capsys):
    extra = ["--memory", "rim", "--chunk-length", "16"] if algo == "metarim" else []
    out = tmp_path / algo
    assert main(["train", "--algo", algo, "--out", str(out), "--frames", "256", *TINY, *extra]) == 0
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 2 and {"success_rate", "success_first", "success_later"} <= set(rows[0])
    capsys.readouterr()
    assert main(["eval", "--run", str(out), "--episodes", "2", "--trials", "2", "--trial-count", "2",
                 "--trial-adapt", "0", "1"]) == 0
    res = json.loads(capsys.readouterr().out)["trials"]
    assert len(res["held_out_tasks"]) == 4 and set(res["curves"]) == {"0", "1"}
    for curve in res["curves"].values():
        assert curve["trials"] == 2 and len(curve["success"]) == 2 and 0 <= curve["first"] <= 1


def test_resume_of_a_trials_run_matches_an_uninterrupted_one(tmp_path):
    args = ["--algo", "ppo", *TINY, "--checkpoint-every", "1"]
    assert main(["train", "--out", str(tmp_path / "full"), "--frames", "384", *args]) == 0
    assert main(["train", "--out", str(tmp_path / "part"), "--frames", "128", *args]) == 0
    assert main(["train", "--out", str(tmp_path / "part"), "--resume", "--frames", "384", "--quiet"]) == 0
    assert _rows(tmp_path / "part" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")


@pytest.mark.parametrize("argv, needle", [
    (["--trials", "0"], "--trials 0"),
    (["--trials", "2", "--trial-adapt", "-1"], "--trial-adapt -1"),
])
def test_bad_trial_flags_are_one_line(argv, needle, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--algo", "ppo", "--out", str(out), "--frames", "128", *TINY]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["eval", "--run", str(out), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and err.count("\n") == 1


def test_trials_of_a_run_trained_without_hidden_task_is_one_line(tmp_path, capsys):
    out = tmp_path / "plain"
    plain = [a for a in TINY if a not in ("--hidden-task", "--trial-episodes", "2")]
    assert main(["train", "--algo", "ppo", "--out", str(out), "--frames", "128", *plain]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["eval", "--run", str(out), "--episodes", "1", "--trials", "2", "--trial-count", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "not trained with hidden_task=True" in err and err.count("\n") == 1
