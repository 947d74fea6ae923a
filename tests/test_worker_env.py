"""The env worker (WorkerVecEnv) and the collector's pipelined loop against the in-process
vector env: same episodes, same rollouts, same checkpoints."""

import os
import signal

import numpy as np
import pytest
import torch

from metarim.envs import MinigridVecEnv, PipelinedVecEnv, WorkerVecEnv, _ipc, make_vec_env
from metarim.rl.policy import ActorCritic
from metarim.rl.rollout import RolloutCollector
from metarim.tasks import Task, Vocab

# short episodes, so that a few dozen steps cross several episode ends
TASK = Task("BabyAI-GoToLocalS6N2-v0", env_kwargs=(("max_steps", 7),))


def _policy(memory: str, vocab: Vocab) -> ActorCritic:
    torch.manual_seed(0)
    policy = ActorCritic(7, vocab.max_size, memory=memory, hidden_size=16,
                         memory_kwargs={"num_units": 4, "k": 2} if memory == "rim" else {})
    with torch.no_grad():  # near-one-hot action probabilities: sampling is deterministic
        policy.actor[-1].weight.mul_(1e5)
    return policy


def _same(a, b) -> None:
    # env data and actions exactly; the policy's outputs up to float32 rounding (a batch
    # of 2 or 3 rows may round differently from one of 5 in the matrix products)
    for k in a.obs:
        assert torch.equal(a.obs[k], b.obs[k]), k
    for name in ("actions", "rewards", "starts", "ends"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("logprobs", "values", "last_value"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6)
    assert len(a.memory) == len(b.memory)
    for x, y in zip(a.memory, b.memory):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert (a.masks is None) == (b.masks is None)
    if a.masks is not None:
        assert torch.equal(a.masks, b.masks)
    assert a.episodes == b.episodes


@pytest.mark.parametrize("memory", ["lstm", "rim"])
def test_pipelined_rollouts_match_the_in_process_env(memory):
    num_envs = 5  # slices of 2 and 3 envs
    out = {}
    for worker in (False, True):
        vocab = Vocab(words=[])  # every word is new: the worker's vocabulary must come back
        envs = make_vec_env(TASK, num_envs, seed=3, vocab=vocab, worker=worker)
        collector = RolloutCollector(envs, _policy(memory, vocab), 12)
        out[worker] = ([collector.collect() for _ in range(3)], dict(vocab.words))
        if worker:
            assert [(s.start, s.stop) for s in envs.slices] == [(0, 2), (2, 5)]
            assert isinstance(envs, PipelinedVecEnv) and collector.piped
            envs.close()
    (plain, words), (piped, piped_words) = out[False], out[True]
    assert piped_words == words and len(words) > 5
    assert sum(len(r.episodes) for r in plain) >= num_envs * 4  # episode ends were crossed
    assert plain[0].masks is not None if memory == "rim" else plain[0].masks is None
    for a, b in zip(plain, piped):
        _same(a, b)


def _echo(rfd: int, wfd: int) -> None:
    """A worker for the IPC test: answers each message with (its pid, the message)."""
    while True:
        try:
            msg = _ipc.recv(rfd)
        except EOFError:
            return
        _ipc.send(wfd, (os.getpid(), msg))


def test_ipc_worker_pool_round_trip_ignores_ctrl_c_and_stops_on_close():
    pool = _ipc.WorkerPool(_echo, 2)
    big = np.arange(300_000)  # larger than a pipe buffer: written and read in pieces
    for (rfd, wfd), proc in zip(pool.conns, pool.procs):
        assert not _ipc.ready(rfd)
        _ipc.send(wfd, ("hello", big))
        pid, (word, arr) = _ipc.recv(rfd)
        assert pid == proc.pid and word == "hello"
        np.testing.assert_array_equal(arr, big)
    proc = pool.procs[0]
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the parent decides when its workers stop
    _ipc.send(pool.conns[0][1], "still there")
    assert _ipc.recv(pool.conns[0][0]) == (proc.pid, "still there")
    pool.close()
    assert [p.returncode for p in pool.procs] == [0, 0]
    pool.close()  # a second close does nothing
    with pytest.raises(ValueError, match="count=0 must be >= 1"):
        _ipc.WorkerPool(_echo, 0)


def test_worker_step_matches_sync_env_step():
    vocab_a, vocab_b = Vocab(), Vocab()
    sync = make_vec_env(TASK, 4, seed=1, vocab=vocab_a)
    work = make_vec_env(TASK, 4, seed=1, vocab=vocab_b, worker=True)
    oa, _ = sync.reset()
    ob, _ = work.reset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        for k in oa:
            np.testing.assert_array_equal(np.asarray(oa[k]), ob[k])
        a = rng.integers(0, 7, size=4)
        oa, ra, ta, ua, _ = sync.step(a)
        ob, rb, tb, ub, _ = work.step(a)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(np.logical_or(ta, ua), np.logical_or(tb, ub))
    work.close()
    assert work.proc.poll() is not None  # the worker exited


def test_worker_checkpoint_resumes_the_same_rollout():
    vocab = Vocab(words=[])  # ids given in the order the missions' words appear
    envs = make_vec_env(TASK, 4, seed=2, vocab=vocab, worker=True)
    collector = RolloutCollector(envs, _policy("lstm", vocab), 10)
    collector.collect()
    state, saved_vocab = collector.state_dict(), vocab.to_dict()
    expected = collector.collect()
    envs.close()
    # restored into a fresh worker env, and into the in-process env, whose vocabularies
    # start with other ids and are then restored as Learner.load_state_dict does: the same
    # next rollout, mission ids included
    for worker in (True, False):
        fresh = Vocab(words=["extra", "words"])
        envs = make_vec_env(TASK, 4, seed=99, vocab=fresh, worker=worker)
        restored = RolloutCollector(envs, _policy("lstm", vocab), 10)
        fresh.words.clear()
        fresh.words.update(Vocab.from_dict(saved_vocab).words)
        fresh._cache.clear()
        restored.load_state_dict(state)
        _same(expected, restored.collect())
        assert fresh.words == vocab.words
        if worker:
            envs.close()


def test_ppo_with_env_worker_trains_and_resumes(tmp_path):
    from metarim.algorithms import make_learner
    from metarim.config import TrainConfig

    cfg = TrainConfig(env="BabyAI-GoToLocalS6N2-v0", env_worker=True, num_envs=4, num_steps=16,
                      batch_size=32, frames=128)
    learner = make_learner(cfg)
    m = learner.step()
    assert m["frames"] == 64 and np.isfinite(m["losses/policy"])
    state = learner.state_dict()
    assert len(state["collector"]["envs"]) == 4
    proc = learner.envs.proc
    learner.close()
    assert proc.wait(timeout=10) == 0
    again = make_learner(cfg)
    again.load_state_dict(state)
    assert again.step()["frames"] == 128
    again.close()
    with pytest.raises(ValueError, match="env_worker=True needs env_backend='minigrid'"):
        TrainConfig(env="BabyAI-GoToLocal-v0", env_backend="tensor", env_worker=True)
    with pytest.raises(ValueError, match="env_worker=True needs a learner with one vector env"):
        make_learner(TrainConfig(algo="maml", env_worker=True))  # MAML.check_config, before any env


def test_worker_bad_input():
    with pytest.raises(ValueError, match="slices=3 must be between 1 and num_envs=2"):
        WorkerVecEnv([TASK] * 2, [0, 1], Vocab(), make=MinigridVecEnv, slices=3)
    with pytest.raises(ValueError, match="worker=True needs backend='minigrid'"):
        make_vec_env(Task("BabyAI-GoToLocal-v0"), 2, seed=0, vocab=Vocab(), worker=True, backend="tensor")
    envs = make_vec_env(TASK, 2, seed=0, vocab=Vocab(), worker=True)
    envs.reset()
    envs.step_async(0, np.zeros(1, dtype=np.int64))
    with pytest.raises(RuntimeError, match="steps in flight"):
        envs.get_states()
    envs.step_wait()
    with pytest.raises(RuntimeError, match="no env step in flight"):
        envs.step_wait()
    envs.close()
