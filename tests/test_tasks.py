"""Task descriptions, samplers, vocabulary, seeding and env construction (real MiniGrid envs)."""

from __future__ import annotations

import numpy as np
import pytest

import metarim.envs
from metarim.envs import check_level, make_env, make_vec_env
from metarim.tasks import (
    MAX_FILTER_TRIES,
    SAMPLERS,
    MissionFilter,
    Task,
    Vocab,
    draw_episode,
    env_seeds,
    make_sampler,
)

GOTO = "BabyAI-GoToLocal-v0"


def test_task_validation_and_roundtrip():
    t = Task(GOTO, env_kwargs=(("b", 1), ("a", 2)), seed_start=5, seed_stop=9,
             mission_filter=MissionFilter(colors=("red",), objects=("ball", "key")))
    assert t.env_kwargs == (("a", 2), ("b", 1))
    assert Task.from_dict(t.to_dict()) == t
    with pytest.raises(ValueError, match="seed range"):
        Task(GOTO, seed_start=5, seed_stop=5)
    with pytest.raises(ValueError, match="level"):
        Task("")


def test_overlaps():
    a = Task(GOTO, seed_start=0, seed_stop=10)
    assert a.overlaps(Task(GOTO, seed_start=9, seed_stop=20))
    assert not a.overlaps(Task(GOTO, seed_start=10, seed_stop=20))
    assert not a.overlaps(Task("BabyAI-GoToLocalS6N2-v0", seed_start=0, seed_stop=10))
    red = Task(GOTO, mission_filter=MissionFilter(("red",), ("ball",)))
    blue = Task(GOTO, mission_filter=MissionFilter(("blue",), ("ball",)))
    assert not red.overlaps(blue) and red.overlaps(Task(GOTO))


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("levels", {"levels": [GOTO, "BabyAI-GoToLocalS6N2-v0", "MiniGrid-DoorKey-5x5-v0"]}),
        ("seeds", {"level": GOTO, "num_tasks": 10, "seed_stop": 1000}),
        ("missions", {"level": GOTO}),
    ],
)
def test_sampler_deterministic_and_disjoint_split(name, kwargs):
    a, b = make_sampler(name, seed=3, **kwargs), make_sampler(name, seed=3, **kwargs)
    assert a.sample(20) == b.sample(20)
    assert a.sample(20) != make_sampler(name, seed=4, **kwargs).sample(20) or len(a.tasks) < 3
    train, held = a.split(0.3)
    assert train.tasks and held.tasks
    assert sorted(map(repr, train.tasks + held.tasks)) == sorted(map(repr, a.tasks))
    assert not any(x.overlaps(y) for x in train.tasks for y in held.tasks)
    assert all(t in train.tasks for t in train.sample(50))
    # the split itself is deterministic
    assert make_sampler(name, seed=3, **kwargs).split(0.3)[1].tasks == held.tasks


def test_sampler_state_and_errors():
    s = make_sampler("seeds", level=GOTO, num_tasks=5, seed=1)
    s.sample(3)
    state = s.state_dict()
    first = s.sample(5)
    s.load_state_dict(state)
    assert s.sample(5) == first
    ranges = [(t.seed_start, t.seed_stop) for t in s.tasks]
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert set(SAMPLERS) >= {"levels", "seeds", "missions"}
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("nope")
    with pytest.raises(ValueError, match="weights"):
        make_sampler("levels", levels=[GOTO], weights=[-1.0])
    with pytest.raises(ValueError, match="unknown colours"):
        make_sampler("missions", level=GOTO, colors=["pink"])


def test_check_level_suggests():
    check_level(GOTO)
    with pytest.raises(ValueError, match="did you mean BabyAI-GoToLocal-v0"):
        check_level("BabyAI-GoToLocl-v0")


def test_vocab():
    v = Vocab(max_len=6)
    ids = v.encode("go to the red ball")
    assert ids.shape == (6,) and ids.dtype == np.int64 and ids[-1] == 0
    assert v.decode(ids) == "go to the red ball"
    v.encode("zebra")
    w = Vocab.from_dict(v.to_dict())
    assert w.words == v.words
    w.frozen = True
    assert w.encode("unicorn")[0] == Vocab.UNK


def test_env_seeds_are_seed_sequence_children():
    # pinned values: every run, checkpoint and result of the project was seeded with them
    assert env_seeds(0, 3) == [3757552657, 673228719, 3241444873]
    children = np.random.SeedSequence(123).spawn(5)
    assert env_seeds(123, 5) == [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]
    assert env_seeds(123, 2) == env_seeds(123, 5)[:2]


def test_draw_episode_redraws_until_the_filter_passes():
    task = Task(GOTO, seed_start=10, seed_stop=20, mission_filter=MissionFilter(("red",), None))
    mission = {s: "go to the red ball" if s in (13, 17) else "go to the blue key" for s in range(10, 20)}
    rng, ref = np.random.default_rng(4), np.random.default_rng(4)
    for _ in range(5):
        tried: list[int] = []

        def make(s: int, tried: list[int] = tried) -> str:
            tried.append(s)
            return mission[s]

        seed, episode = draw_episode(task, rng, make, mission=str)
        # the reference: one uniform draw per try, the last one accepted
        expected = [int(ref.integers(10, 20)) for _ in tried]
        assert tried == expected and seed == tried[-1] in (13, 17) and episode == mission[seed]
        assert all(s not in (13, 17) for s in tried[:-1])
    open_task = Task(GOTO, seed_start=10, seed_stop=20)
    seed, _ = draw_episode(open_task, rng, mission.get, mission=str)
    assert seed == int(ref.integers(10, 20))  # no filter: the first draw
    never = Task(GOTO, mission_filter=MissionFilter(("purple",), None))
    calls = []
    with pytest.raises(RuntimeError, match=f"no mission of {GOTO} passed .* in {MAX_FILTER_TRIES} tries"):
        draw_episode(never, rng, calls.append, mission=lambda _: "go to the red ball")
    assert len(calls) == MAX_FILTER_TRIES


def test_env_backend_registry(monkeypatch):
    monkeypatch.setattr(metarim.envs, "ENV_BACKENDS", dict(metarim.envs.ENV_BACKENDS))
    calls = []

    @metarim.envs.register_env_backend("fake")
    def fake(task, num_envs, **kwargs):
        calls.append((task, num_envs, kwargs))
        return "envs"

    vocab = Vocab()
    assert make_vec_env(Task(GOTO), 2, seed=3, vocab=vocab, backend="fake") == "envs"
    assert calls == [(Task(GOTO), 2, {"seed": 3, "vocab": vocab, "asynchronous": False, "worker": False})]
    with pytest.raises(ValueError, match="env backend 'fake' is already registered"):
        metarim.envs.register_env_backend("fake")(fake)
    with pytest.raises(ValueError, match="^backend='nope' must be one of 'fake', 'minigrid', 'tensor'$"):
        make_vec_env(Task(GOTO), 2, seed=3, vocab=vocab, backend="nope")


def test_env_seed_range_filter_and_silence(capsys):
    task = Task(GOTO, seed_start=100, seed_stop=110, mission_filter=MissionFilter(("red",), None))
    env = make_env(task, Vocab(), seed=0)
    for _ in range(15):
        obs, info = env.reset()
        assert 100 <= info["episode_seed"] < 110
        assert "red" in env.mission
        assert obs["mission"].shape == (32,) and obs["image"].shape == (7, 7, 3)
    assert capsys.readouterr().out == ""


def test_env_state_replay_is_exact():
    env = make_env(Task("MiniGrid-DoorKey-5x5-v0"), Vocab(), seed=7)
    env.reset()
    for a in [0, 2, 2, 1, 2, 3]:
        obs, *_ = env.step(a)
    state = env.get_state()
    other = make_env(Task("MiniGrid-DoorKey-5x5-v0"), Vocab(), seed=99)
    obs2 = other.set_state(state)
    np.testing.assert_array_equal(obs["image"], obs2["image"])
    # both continue identically, including the next episode's seed
    for a in [2, 2, 5, 1]:
        o1, r1, *_ = env.step(a)
        o2, r2, *_ = other.step(a)
        np.testing.assert_array_equal(o1["image"], o2["image"])
    assert env.reset()[1]["episode_seed"] == other.reset()[1]["episode_seed"]


def test_vec_env_deterministic():
    def run(seed):
        envs = make_vec_env(Task(GOTO), 4, seed=seed, vocab=Vocab())
        obs, _ = envs.reset()
        out = [obs["image"].copy()]
        rng = np.random.default_rng(0)
        for _ in range(40):
            obs, *_ = envs.step(rng.integers(0, 3, size=4))
            out.append(obs["image"].copy())
        envs.close()
        return np.stack(out)

    a, b = run(1), run(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run(2))
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env(Task(GOTO), 0, seed=0, vocab=Vocab())


def test_async_vec_env_matches_sync():
    a = make_vec_env(Task("BabyAI-GoToLocalS6N2-v0"), 2, seed=3, vocab=Vocab(), asynchronous=True)
    s = make_vec_env(Task("BabyAI-GoToLocalS6N2-v0"), 2, seed=3, vocab=Vocab())
    try:
        oa, _ = a.reset()
        os_, _ = s.reset()
        for i in range(30):
            act = np.array([i % 3, (i + 1) % 3])
            oa, ra, *_ = a.step(act)
            os_, rs, *_ = s.step(act)
            np.testing.assert_array_equal(oa["image"], os_["image"])
            np.testing.assert_array_equal(oa["mission"], os_["mission"])
            np.testing.assert_array_equal(ra, rs)
    finally:
        a.close()
        s.close()
