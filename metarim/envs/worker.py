"""A vector env stepped in a background process, one slice of envs at a time.

With one core stepping envs and the other idle, collection costs ``env + policy`` per
step. :class:`WorkerVecEnv` keeps the envs in a worker process and splits them into
slices, so that :class:`~metarim.rl.rollout.RolloutCollector` can run the policy on one
slice while the worker steps the other: collection then costs about ``max(env,
2 × policy on half the envs)`` (docs/benchmarks.md measures it).

Each slice is a vector env built in the worker by ``make(tasks, seeds, vocab)``
(``make_vec_env(..., worker=True)`` passes :class:`~metarim.envs.minigrid.MinigridVecEnv`,
with the tasks and per-env seeds of the in-process env); envs are independent, so
stepping them slice by slice gives exactly the episodes of the in-process vector env.
:meth:`WorkerVecEnv.step` steps every slice and waits, so the class is also a drop-in
vector env (that is how the env-only rate is measured).

Missions are tokenised in the worker; words that are new to the vocabulary come back
with the next answer and are added to the parent's vocabulary in the same order, so the
ids (saved with the run) agree.

The worker is a :mod:`metarim.envs._ipc` process talking length-prefixed pickles over two
pipes. Protocol (parent → worker): first ``(make, tasks, seeds, vocab dict, slices)``,
then ``("reset",)``, ``("step", j, actions)``, ``("get_state",)``, ``("set_state",
states, vocab dict)``, ``("set_phase", phase)``, ``("current_tasks",)``, EOF to stop.
Each answer is ``(payload, new_words)``; the first answer (after the set-up) is the
action and observation spaces.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from metarim.envs import _ipc
from metarim.envs.protocols import CheckpointableVecEnv
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["WorkerVecEnv"]

SliceFactory = Callable[[list[Task], list[int], Vocab], CheckpointableVecEnv]


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _worker_main(rfd: int, wfd: int) -> None:
    make, tasks, seeds, vocab_dict, slices = _ipc.recv(rfd)
    vocab = Vocab.from_dict(vocab_dict)
    sent = len(vocab.words)
    subs = [make(tasks[lo:hi], seeds[lo:hi], vocab) for lo, hi in slices]

    def answer(payload: Any) -> None:
        nonlocal sent
        words = list(vocab.words)[sent:]
        sent = len(vocab.words)
        _ipc.send(wfd, (payload, words))

    try:
        answer((subs[0].single_action_space, subs[0].single_observation_space))
        while True:
            try:
                msg = _ipc.recv(rfd)
            except EOFError:
                return
            if msg[0] == "step":
                obs, rew, term, trunc, _ = subs[msg[1]].step(msg[2])
                answer((msg[1], {k: np.asarray(v) for k, v in obs.items()}, rew, term, trunc))
            elif msg[0] == "reset":
                answer(_concat([{k: np.asarray(v) for k, v in s.reset()[0].items()} for s in subs]))
            elif msg[0] == "set_phase":
                for s in subs:
                    s.set_phase(msg[1])  # type: ignore[attr-defined]
                answer(None)
            elif msg[0] == "current_tasks":
                answer([t for s in subs for t in s.current_tasks()])  # type: ignore[attr-defined]
            elif msg[0] == "get_state":
                answer([state for s in subs for state in s.get_states()])
            elif msg[0] == "set_state":
                # the parent's vocabulary (restored from the same checkpoint) replaces ours,
                # in place: the envs hold it
                restored = Vocab.from_dict(msg[2])
                vocab.replace_with(restored)
                sent = len(vocab.words)
                for (lo, hi), s in zip(slices, subs):
                    s.set_states(msg[1][lo:hi])
                answer(None)
            else:
                return
    except BrokenPipeError:  # the parent closed: stop quietly
        return


class WorkerVecEnv:
    """``num_envs`` envs in a worker process, in ``len(slices)`` slices.

    Implements :class:`~metarim.envs.protocols.PipelinedVecEnv`.

    Args:
        tasks: one task per env.
        seeds: one seed per env (:func:`~metarim.tasks.seeding.env_seeds`).
        vocab: the run's vocabulary; new words from the worker are added to it.
        make: builds one slice's vector env from its tasks, seeds and vocabulary in the
            worker (picklable, e.g. :class:`~metarim.envs.minigrid.MinigridVecEnv`).
        slices: number of contiguous, near-equal slices (``1 <= slices <= num_envs``).
    """

    def __init__(self, tasks: list[Task], seeds: list[int], vocab: Vocab, *, make: SliceFactory,
                 slices: int = 2) -> None:
        n = len(tasks)
        if not 1 <= slices <= n:
            raise ValueError(f"slices={slices} must be between 1 and num_envs={n}")
        bounds = np.linspace(0, n, slices + 1).round().astype(int)
        self.slices = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.num_envs, self.vocab, self.pending = n, vocab, 0
        self._pool = _ipc.WorkerPool(_worker_main, 1)
        (self.rfd, self.wfd), self.proc = self._pool.conns[0], self._pool.procs[0]
        _ipc.send(self.wfd, (make, list(tasks), [int(s) for s in seeds], vocab.to_dict(),
                             [(s.start, s.stop) for s in self.slices]))
        self.single_action_space, self.single_observation_space = self._answer()

    def _answer(self) -> Any:
        try:
            payload, words = _ipc.recv(self.rfd)
        except EOFError:
            raise RuntimeError("env worker exited; its error is printed above") from None
        for w in words:
            self.vocab._add(w)
        return payload

    def _call(self, *msg: Any) -> Any:
        if self.pending:
            raise RuntimeError("env worker has steps in flight; call step_wait first")
        _ipc.send(self.wfd, msg)
        return self._answer()

    # -- asynchronous slice steps (the collector's pipeline) -------------------------
    def step_async(self, j: int, actions: np.ndarray) -> None:
        """Starts stepping slice ``j`` with ``actions`` (one per env of the slice)."""
        _ipc.send(self.wfd, ("step", j, np.asarray(actions)))
        self.pending += 1

    def step_wait(self) -> tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """The oldest slice step in flight: ``(j, obs, rewards, terminated, truncated)``."""
        if not self.pending:
            raise RuntimeError("no env step in flight")
        self.pending -= 1
        return self._answer()

    # -- the vector env interface ----------------------------------------------------
    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[dict[str, np.ndarray], dict]:
        """Resets every env (each continues its own seeded episode stream)."""
        if seed is not None or options is not None:
            raise ValueError("WorkerVecEnv.reset takes no seed or options (envs seed themselves)")
        return self._call("reset"), {}

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict]:
        """Steps every slice and waits for all of them."""
        actions = np.asarray(actions)
        for j, s in enumerate(self.slices):
            self.step_async(j, actions[s])
        parts = [self.step_wait() for _ in self.slices]
        obs = _concat([p[1] for p in parts])
        return obs, *(np.concatenate([p[i] for p in parts]) for i in (2, 3, 4)), {}

    def set_phase(self, phase: int) -> None:
        """A schedule's phase switch, forwarded to every slice (``MinigridVecEnv.set_phase``)."""
        self._call("set_phase", phase)

    def current_tasks(self) -> list[Task]:
        """The task of each env's current episode (the slices', in env order)."""
        return self._call("current_tasks")

    def get_states(self) -> list[dict[str, Any]]:
        """Each env's plain-data state (the slices' ``get_states``, in env order)."""
        return self._call("get_state")

    def set_states(self, states: list[dict[str, Any]]) -> None:
        """Restores :meth:`get_states`.

        The worker's vocabulary becomes a copy of the parent's (restore that first, as
        ``Learner.load_state_dict`` does), so word ids stay those of the checkpoint."""
        if len(states) != self.num_envs:
            raise ValueError(f"got {len(states)} env states for {self.num_envs} envs")
        self._call("set_state", list(states), self.vocab.to_dict())

    def cpu_seconds(self) -> float:
        """CPU seconds the worker process has used so far (Linux ``/proc``; 0 elsewhere)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        """The worker process's peak resident memory (Linux ``/proc``; 0 elsewhere)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def close(self) -> None:
        """Stops the worker (also done when the env is garbage-collected)."""
        self._pool.close()
