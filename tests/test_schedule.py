"""Task schedules (issue 20): the format, switches at the frame boundaries and per column in
the periodic mode (real envs), bit-for-bit resume, and the CLI's errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from metarim.checkpoint import latest_checkpoint, load_checkpoint
from metarim.cli import main
from metarim.config import LEGACY, TrainConfig
from metarim.envs import make_vec_env
from metarim.rl.rollout import RolloutCollector
from metarim.tasks import Schedule, Task, TaskStream, Vocab, load_schedule, sequential_schedule
from metarim.tasks.task import MissionFilter
from metarim.train import Trainer

GOTO, PICKUP, PUTNEXT = "BabyAI-GoToLocalS6N2-v0", "BabyAI-PickupLoc-v0", "BabyAI-PutNextLocal-v0"
SMALL_GOTO, SMALL_PUT = "BabyAI-GoToObjS4-v0", "BabyAI-PutNextLocalS5N3-v0"
VERB = {GOTO: "go to", PICKUP: "pick up", PUTNEXT: "put", SMALL_GOTO: "go to", SMALL_PUT: "put"}
# explicit values for everything a result depends on (the defaults are about to change)
TINY = dict(env=GOTO, num_envs=4, num_steps=32, batch_size=64, hidden_size=32, epochs=1, lr=1e-3,
            entropy_coef=0.01, recurrence=4, checkpoint_every=100)
TIME_COLUMNS = {"fps", "collect_s", "update_s"}


def _verb(mission: str) -> str:
    return next(v for v in ("go to", "pick up", "put") if mission.startswith(v))


def _rows(run):
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(f)]


# -- the format ----------------------------------------------------------------------------
def test_parse_roundtrip_and_phase_at():
    d = {"seed": 3, "phases": [
        {"frames": 100, "level": GOTO},
        {"frames": 50, "level": "BabyAI-GoToLocal-v0", "missions": {"colors": ["red"], "objects": ["ball"]}},
        {"frames": 70, "levels": {PICKUP: 3, PUTNEXT: 1}, "name": "mix"},
        {"every": 4, "tasks": [{"level": GOTO}, {"level": PICKUP, "weight": 2}]}]}
    s = Schedule.from_dict(d)
    assert Schedule.from_dict(s.to_dict()) == s
    assert s.starts() == [0, 100, 150, 220]
    # phase of an update that starts at f: the last phase whose start is <= f (by hand)
    assert [s.phase_at(f) for f in (0, 99, 100, 149, 150, 219, 220, 10**9)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert s.phases[2].weights == (0.75, 0.25) and s.phases[3].weights == (1 / 3, 2 / 3)
    assert [p.name for p in s.phases] == [GOTO, "BabyAI-GoToLocal-v0", "mix", "phase 3"]
    assert s.phases[1].tasks[0].mission_filter == MissionFilter(("red",), ("ball",))
    assert s.phases[3].every == 4 and s.phases[0].every is None and s.phases[3].frames is None
    assert s.levels() == [GOTO, "BabyAI-GoToLocal-v0", PICKUP, PUTNEXT]
    # a column keeps its seed range and filter; the phase gives the level (and its own filter)
    base = Task(GOTO, seed_start=10, seed_stop=20, mission_filter=MissionFilter(("blue",), None))
    t0 = s.phases[0].tasks_for(base)[0]
    assert (t0.level, t0.seed_start, t0.seed_stop, t0.mission_filter) == (GOTO, 10, 20, base.mission_filter)
    assert s.phases[1].tasks_for(base)[0].mission_filter == MissionFilter(("red",), ("ball",))
    assert s.same_tasks(0, 0) and not s.same_tasks(0, 2)
    assert Schedule.from_dict(sequential_schedule([GOTO, PICKUP, GOTO], 10)).same_tasks(0, 2)


BAD_SCHEDULES = [
    ([], "must be a JSON object"),
    ({"phase": []}, "unknown key 'phase'; did you mean 'phases'?"),
    ({"phases": []}, '"phases" must be a non-empty list'),
    ({"phases": [{"frames": 10}]}, "phases[0] needs one of 'level', 'levels', 'tasks'"),
    ({"phases": [{"frames": 10, "level": GOTO, "levels": [GOTO]}]}, "has 'level' and 'levels'; give only one"),
    ({"phases": [{"level": GOTO}, {"frames": 10, "level": GOTO}]}, "phases[0] has no 'frames'; only the last"),
    ({"phases": [{"frames": 0, "level": GOTO}]}, "phases[0].frames=0 must be an integer >= 1"),
    ({"phases": [{"frames": 1.5, "level": GOTO}]}, "phases[0].frames=1.5 must be an integer"),
    ({"phases": [{"level": GOTO, "every": 2}]}, "list at least two"),
    ({"phases": [{"levels": [GOTO, PICKUP], "every": 0}]}, "phases[0].every=0 must be an integer >= 1"),
    ({"phases": [{"levels": {GOTO: -1}}]}, "weight -1 must be a number > 0"),
    ({"phases": [{"levels": [GOTO, GOTO]}]}, "lists a task twice"),
    ({"phases": [{"level": GOTO, "missions": {"colors": ["pink"]}}]}, "missions.colors: unknown ['pink']"),
    ({"phases": [{"level": GOTO, "missions": {"colour": ["red"]}}]}, "unknown key 'colour'; did you mean 'colors'?"),
    ({"phases": [{"tasks": [{"level": GOTO, "wieght": 2}]}]}, "tasks[0]: unknown key 'wieght'; did you mean 'weight'?"),
    ({"phases": [{"level": 3}]}, "phases[0].level must be a level id"),
    ({"seed": -1, "phases": [{"level": GOTO}]}, "seed=-1 must be an integer >= 0"),
]


@pytest.mark.parametrize("d,needle", BAD_SCHEDULES)
def test_bad_schedules_are_one_line_errors_naming_the_key(d, needle):
    with pytest.raises(ValueError) as e:
        Schedule.from_dict(d)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_load_schedule_names_the_file(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"phases": [')
    with pytest.raises(ValueError, match=r"s.json is not valid JSON \(Expecting value, line 1\)"):
        load_schedule(p)
    p.write_text('{"phases": [{"frames": 5}]}')
    with pytest.raises(ValueError, match=r"s.json: schedule: phases\[0\] needs one of"):
        load_schedule(p)
    p.write_text(json.dumps(sequential_schedule([GOTO], 5)))
    assert load_schedule(p).phases[0].frames == 5


def test_task_stream_periodic_blocks_and_mixture_weights():
    tasks = [Task(SMALL_GOTO), Task(PICKUP), Task(SMALL_PUT)]
    for every in (1, 3):
        s = TaskStream(tasks, every=every, seed=5)
        seq = [s.next() for _ in range(30 * every)]
        blocks = [seq[i : i + every] for i in range(0, len(seq), every)]
        assert all(len(set(b)) == 1 for b in blocks)  # one task for exactly `every` episodes
        assert all(a[0] != b[0] for a, b in zip(blocks, blocks[1:]))  # then a different one
        assert len({b[0] for b in blocks}) == 3
    # a mixture: independent draws with the weights (20000 draws, 3 standard errors < 0.01)
    s = TaskStream(tasks[:2], [3.0, 1.0], seed=0)
    share = np.mean([s.next() == tasks[0] for _ in range(20000)])
    assert abs(share - 0.75) < 0.01
    # the state restores the stream exactly
    s = TaskStream(tasks, every=2, seed=1)
    [s.next() for _ in range(5)]
    saved = s.state_dict()
    ahead = [s.next() for _ in range(9)]
    again = TaskStream(tasks, every=2, seed=99)
    again.load_state_dict(saved)
    assert [again.next() for _ in range(9)] == ahead


# -- switches in training runs (real envs, tensor backend) ----------------------------------
@pytest.mark.parametrize("algo,extra,frames", [
    ("ppo", {}, 896),
    ("ppo", {"env_backend": "minigrid", "env_worker": True}, 896),  # the switch reaches the worker process
    ("metarim", {"memory": "rim", "chunk_length": 16}, 896),
    ("maml", {"meta_batch": 2, "inner_steps": 1}, 1536),
])
def test_switches_at_the_frame_boundaries(tmp_path, monkeypatch, algo, extra, frames):
    """Phase 1 starts at 256 (a multiple of the 128 frames of a rollout), phase 2 at 556 (not
    one): an update's rollouts are all of the phase its starting frame count falls in, so
    phase 2 begins with the first update that starts at or after 556 (PPO: 640)."""
    schedule = {"phases": [{"frames": 256, "level": GOTO}, {"frames": 300, "level": PICKUP}, {"level": PUTNEXT}]}
    sched = Schedule.from_dict(schedule)
    cfg = TrainConfig.from_dict({**TINY, "algo": algo, "env_backend": "tensor", "frames": frames,
                                 "schedule": schedule, **extra})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    learner = trainer.learner
    seen = []
    collect = RolloutCollector.collect

    def spy(self):
        tasks = self.envs.current_tasks()
        rollout = collect(self)
        seen.append((learner.frames, id(self), [t.level for t in tasks], rollout))
        return rollout

    monkeypatch.setattr(RolloutCollector, "collect", spy)
    assert trainer.run() == 0
    last_phase: dict[int, int] = {}
    starts_of_phase = set()
    for start, col, levels, rollout in seen:
        k = sched.phase_at(start)
        level = sched.phases[k].tasks[0].level
        assert levels == [level] * cfg.num_envs
        T, B = rollout.actions.shape
        missions = {_verb(learner.vocab.decode(rollout.obs["mission"][t, b])) for t in range(T) for b in range(B)}
        assert missions == {VERB[level]}, (start, k, missions)
        if last_phase.get(col, 0) != k:  # the first rollout of a collector in a new phase
            assert bool(rollout.starts[0].all())  # every column starts a fresh episode of it
            starts_of_phase.add((k, start))
        last_phase[col] = k
    if algo == "ppo":
        assert starts_of_phase == {(1, 256), (2, 640)}
        assert [s for s, *_ in seen] == list(range(0, 896, 128))
    rows = _rows(tmp_path / "run")
    starts = [0.0] + [float(r["frames"]) for r in rows[:-1]]
    assert [float(r["schedule_phase"]) for r in rows] == [float(sched.phase_at(int(s))) for s in starts]
    assert {k for (k, _) in starts_of_phase} == {1, 2}


def test_a_phase_shorter_than_an_update_is_skipped_with_a_warning(tmp_path):
    schedule = {"phases": [{"frames": 300, "level": GOTO}, {"frames": 50, "level": PICKUP}, {"level": PUTNEXT}]}
    cfg = TrainConfig.from_dict({**TINY, "env_backend": "tensor", "frames": 512, "schedule": schedule})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    with pytest.warns(UserWarning, match=r"phase\(s\) 1 \(BabyAI-PickupLoc-v0\) ended before an update"):
        assert trainer.run() == 0
    assert [r["schedule_phase"] for r in _rows(tmp_path / "run")] == ["0.0", "0.0", "0.0", "2.0"]


# -- the periodic mode, per column ------------------------------------------------------------
def _episode_starts(backend, schedule, steps, num_envs=3):
    """Per column, the (level, mission verb) of each episode in order, from real envs acting
    at random (the levels from ``current_tasks``, the verbs from the observed missions)."""
    vocab = Vocab()
    envs = make_vec_env(Task(SMALL_GOTO), num_envs, seed=7, vocab=vocab, backend=backend, schedule=schedule)
    obs, _ = envs.reset()
    rng = np.random.default_rng(0)
    out = [[] for _ in range(num_envs)]
    done = np.ones(num_envs, dtype=bool)
    for _ in range(steps):
        levels = [t.level for t in envs.current_tasks()]
        for b in np.flatnonzero(done):
            out[b].append((levels[b], _verb(vocab.decode(np.asarray(obs["mission"])[b]))))
        obs, _, term, trunc, _ = envs.step(rng.integers(0, 7, num_envs))
        done = np.logical_or(np.asarray(term), np.asarray(trunc))
    envs.close()
    return out


def test_periodic_mode_switches_each_column_after_exactly_m_episodes():
    M = 2
    schedule = Schedule.from_dict({"phases": [{"every": M, "levels": [SMALL_GOTO, PICKUP, SMALL_PUT]}]})
    tensor = _episode_starts("tensor", schedule, 500)
    assert _episode_starts("minigrid", schedule, 500) == tensor  # the same tasks and episodes
    for column in tensor:
        assert len(column) >= 4 * M
        assert all(VERB[level] == verb for level, verb in column)
        blocks = [column[i : i + M] for i in range(0, len(column) - M + 1, M)]
        assert all(len({lv for lv, _ in b}) == 1 for b in blocks)  # M episodes of one task
        assert all(a[0][0] != b[0][0] for a, b in zip(blocks, blocks[1:]))  # then another task
    assert len({tuple(c) for c in tensor}) == 3  # the columns draw their own streams


def test_backends_meet_the_same_episodes_across_a_switch_and_restore_each_other():
    """minigrid, the tensor env and the tensor env with layouts made ahead in a worker
    process: the same observations and rewards through a phase switch (``set_phase`` and a
    reset), and a tensor env's states restore a minigrid env mid-phase."""
    schedule = Schedule.from_dict({"phases": [
        {"frames": 1, "every": 2, "levels": [GOTO, PICKUP, SMALL_PUT]}, {"levels": {SMALL_GOTO: 1, GOTO: 2}}]})
    actions = np.random.default_rng(0).integers(0, 7, (300, 3))
    logs, envs = {}, {}
    for name, backend, kw in [("minigrid", "minigrid", {}), ("tensor", "tensor", {}),
                              ("prefetch", "tensor", {"asynchronous": True})]:
        vocab = Vocab()
        env = make_vec_env(Task(GOTO), 3, seed=1, vocab=vocab, backend=backend, schedule=schedule, **kw)
        env.reset()
        log = []
        for t, a in enumerate(actions):
            if t == 200:
                env.set_phase(1)
                env.reset()
            obs, rew, *_ = env.step(a)
            log.append((np.asarray(obs["image"]).copy(), np.asarray(rew).copy(), env.current_tasks()))
            if t == 250:
                envs[name] = (env, env.get_states())
        logs[name] = log
    for name in ("tensor", "prefetch"):
        assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() and a[2] == b[2]
                   for a, b in zip(logs["minigrid"], logs[name])), name
    assert {t.level for *_, tasks in logs["minigrid"][:200] for t in tasks} == {GOTO, PICKUP, SMALL_PUT}
    assert {t.level for *_, tasks in logs["minigrid"][200:] for t in tasks} == {SMALL_GOTO, GOTO}
    # a minigrid env built in phase 0 takes the tensor env's phase-1 states and replays them
    fresh = make_vec_env(Task(GOTO), 3, seed=1, vocab=Vocab(), backend="minigrid", schedule=schedule)
    fresh.reset()
    tensor, states = envs["tensor"]
    fresh.set_states(states)
    tensor.set_states(states)
    assert fresh.current_tasks() == tensor.current_tasks()
    for a in actions[:40]:
        o1, r1, *_ = fresh.step(a)
        o2, r2, *_ = tensor.step(a)
        assert (np.asarray(o1["image"]) == np.asarray(o2["image"])).all() and (np.asarray(r1) == np.asarray(r2)).all()
    for env, _ in envs.values():
        env.close()


# -- resume --------------------------------------------------------------------------------------
# the periodic phase on short levels, so that a checkpoint falls inside a column's block of M
RESUME_SCHEDULE = {"phases": [{"frames": 256, "level": GOTO}, {"frames": 256, "level": PICKUP},
                              {"every": 3, "levels": [SMALL_GOTO, "BabyAI-GoToLocalS5N2-v0", GOTO]}]}
FULL = 1536


def _cli_train(out, schedule_file, backend, algo, frames, *extra):
    argv = ["train", "--out", str(out), "--schedule", str(schedule_file), "--env-backend", backend, "--algo", algo,
            "--frames", str(frames), "--quiet", *extra]
    for k, v in TINY.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert main(argv) == 0


def _policy(run):
    return load_checkpoint(latest_checkpoint(run))["policy"]


@pytest.mark.parametrize("backend,algo,stop", [
    ("tensor", "ppo", 384),  # mid-phase
    ("tensor", "ppo", 512),  # at a boundary: the switch happens after the resume
    ("tensor", "ppo", 1024),  # mid-phase of the periodic mode
    ("minigrid", "ppo", 896),
    ("tensor", "metarim", 384),
])
def test_resume_mid_phase_is_bit_for_bit(tmp_path, backend, algo, stop):
    sched = tmp_path / "s.json"
    sched.write_text(json.dumps(RESUME_SCHEDULE))
    extra = ["--memory", "rim", "--chunk-length", "16"] if algo == "metarim" else []
    _cli_train(tmp_path / "full", sched, backend, algo, FULL, *extra)
    _cli_train(tmp_path / "part", sched, backend, algo, stop, *extra)
    if stop > 512:  # the checkpoint resumed from holds columns in the middle of a block of M episodes
        streams = [e["tasks"] for e in load_checkpoint(latest_checkpoint(tmp_path / "part"))["collector"]["envs"]]
        assert any(t["left"] > 0 for t in streams) and max(t["draws"] for t in streams) >= 2
    assert main(["train", "--out", str(tmp_path / "part"), "--resume", "--frames", str(FULL), "--quiet"]) == 0
    full, part = _rows(tmp_path / "full"), _rows(tmp_path / "part")
    assert part == full and [r["schedule_phase"] for r in full] == ["0.0"] * 2 + ["1.0"] * 2 + ["2.0"] * 8
    a, b = _policy(tmp_path / "full"), _policy(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "full" / "config.json").read_text())["config"]
    assert saved["schedule"] == RESUME_SCHEDULE  # the content, not the path


@pytest.mark.slow
def test_sigkill_mid_phase_then_resume_matches_clean_run(tmp_path):
    import signal
    import time

    sched = tmp_path / "s.json"
    sched.write_text(json.dumps(RESUME_SCHEDULE))
    _cli_train(tmp_path / "clean", sched, "tensor", "ppo", FULL, "--checkpoint-every", "2")
    out = tmp_path / "killed"
    base = [sys.executable, "-m", "metarim.cli", "train", "--out", str(out), "--schedule", str(sched),
            "--env-backend", "tensor", "--frames", str(FULL), "--quiet"]
    for k, v in {**TINY, "checkpoint_every": 2}.items():
        base += [f"--{k.replace('_', '-')}", str(v)]
    for rows_before_kill, extra_sleep in [(1, 0.0), (3, 0.05), (7, 0.02), (9, 0.04)]:
        cmd = base + (["--resume"] if (out / "config.json").is_file() else [])
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            n = len((out / "metrics.csv").read_text().splitlines()) - 1 if (out / "metrics.csv").is_file() else 0
            if n >= rows_before_kill or proc.poll() is not None:
                break
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(extra_sleep)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0
    assert _rows(out) == _rows(tmp_path / "clean")


# -- the config, the sweep and the CLI -----------------------------------------------------------
def test_config_reads_a_path_into_content_and_legacy_means_no_schedule(tmp_path):
    from metarim.sweep.spec import expand_sweep

    p = tmp_path / "s.json"
    p.write_text(json.dumps(RESUME_SCHEDULE))
    assert LEGACY["schedule"] is None and TrainConfig().schedule is None
    cfg = TrainConfig.from_dict({"schedule": str(p)})
    assert cfg.schedule == RESUME_SCHEDULE and cfg.to_dict()["schedule"] == RESUME_SCHEDULE
    assert TrainConfig.from_dict({}, legacy=True).schedule is None
    (run,) = expand_sweep({"learners": {"ppo": {"algo": "ppo"}}, "seeds": [0], "base": {"schedule": str(p)}})
    assert run.config["schedule"] == RESUME_SCHEDULE
    with pytest.raises(ValueError, match="schedule must be a JSON object"):
        TrainConfig.from_dict({"schedule": 3})


def _cli_error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("metarim: error: "), err
    return err[0]


@pytest.mark.parametrize("content,backend,needle", [
    (None, "minigrid", "cannot read schedule file"),
    ("{", "minigrid", "is not valid JSON"),
    ('{"phase": []}', "minigrid", "unknown key 'phase'; did you mean 'phases'?"),
    ('{"phases": [{"frames": 10, "level": "BabyAI-GoToLocl-v0"}]}', "minigrid", "did you mean"),
    ('{"phases": [{"level": "BabyAI-GoToLocal-v0"}, {"frames": 9, "level": "BabyAI-PickupLoc-v0"}]}', "minigrid",
     "only the last phase may omit"),
    ('{"phases": [{"level": "BabyAI-GoTo-v0"}]}', "tensor", "not supported by the tensor env"),
])
def test_cli_bad_schedule_files_exit_2_with_one_line(tmp_path, capsys, content, backend, needle):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    msg = _cli_error(capsys, ["train", "--out", str(tmp_path / "o"), "--schedule", str(path), "--env-backend",
                              backend, "--frames", "128"])
    assert needle in msg
    assert not (tmp_path / "o").exists()


def test_cli_bad_schedule_has_no_traceback(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"phases": [{"frames": 0, "level": "BabyAI-GoToLocal-v0"}]}')
    proc = subprocess.run([sys.executable, "-m", "metarim.cli", "train", "--out", str(tmp_path / "o"),
                           "--schedule", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "metarim: error: schedule: phases[0].frames=0 must be an integer >= 1"]
