r"""Hidden-task trials: the mission withheld, the target found from reward alone.

A **task** is a :class:`~metarim.tasks.task.Task` whose
:class:`~metarim.tasks.task.MissionFilter` names a target, a colour and an object type
(one family of the ``"missions"`` sampler, :class:`~metarim.tasks.samplers.MissionSampler`):
its episodes are the level's own layouts whose mission names that target (drawn by
:func:`~metarim.tasks.seeding.draw_episode`, as for every filtered task), and its reward
is the level's own, :math:`r = 1 - 0.9\,t / T` for reaching (GoTo) or picking up (Pickup)
the target at step :math:`t` of an episode of at most :math:`T` steps, 0 otherwise. In a
GoTo room, facing another object gives 0 and the episode goes on (``GoToInstr``).

A **trial** is :math:`K` consecutive episodes of one task in one env column.
:class:`HiddenTaskVecEnv` is a vector env of trials:

* ``obs["mission"]`` never holds the mission: it is the word ``hidden`` at every step,
  except at the first step of episode :math:`i \ge 2` of a trial, where it is ``found``
  if episode :math:`i - 1` reached its target and ``missed`` otherwise: the previous
  episode's outcome, RL²'s previous-reward input written into the policy's existing
  mission input (so no learner or policy changes; docs/trials.md gives the reasons);
* rewards are the level's, unchanged;
* ``terminated``/``truncated`` are those of a trial's last episode, at its end, and
  ``False`` at every other episode end (the env has already started the next layout in
  the same step), so a learner that resets its memory and cuts GAE at
  ``terminated | truncated`` does so between trials only;
* ``info`` holds, per column, ``inner_end`` (an episode of the trial ended),
  ``inner_index`` (its index in the trial, 0-based; -1 where none ended),
  ``inner_success`` and ``inner_return``; :meth:`HiddenTaskVecEnv.drain` returns the
  finished episodes as records ``{"return", "length", "success", "env", "index",
  "trial", "task"}``.

The tasks of the trials come from the per-column task streams of a training schedule
(:mod:`metarim.tasks.schedule`): one phase over the task pool with ``every =`` :math:`K`,
so column ``b`` keeps a task for :math:`K` episodes, then draws another one of the pool
(uniformly among the others), with the generator seeded ``(seed, 0, env seed of b)``.
The layouts are the base env's (:func:`~metarim.envs.make_vec_env` with that schedule),
so the ``minigrid`` and ``tensor`` backends give the same trials.

Example:
    >>> from metarim.tasks import MissionSampler, Vocab
    >>> pool = MissionSampler("BabyAI-GoToLocalS6N2-v0").tasks[:3]
    >>> envs = HiddenTaskVecEnv(pool, 2, seed=0, vocab=Vocab(), trial_episodes=2)
    >>> obs, _ = envs.reset()
    >>> envs.vocab.decode(obs["mission"][0]), envs.labels[0] in [task_label(t) for t in pool]
    ('hidden', True)
    >>> envs.close()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from metarim.tasks.schedule import Phase, Schedule
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["FEEDBACK_WORDS", "HiddenTaskVecEnv", "make_hidden_vec_env", "task_label", "trial_schedule"]

FEEDBACK_WORDS = ("hidden", "found", "missed")
"""The words the mission slot holds: no feedback, the previous episode reached its
target, it did not."""
_HIDDEN, _FOUND, _MISSED = range(3)


def task_label(task: Task) -> str:
    """The target a task names, e.g. ``"red ball"`` (its colours, then its object types).

    Example:
        >>> from metarim.tasks import MissionFilter
        >>> task_label(Task("BabyAI-GoToLocal-v0", mission_filter=MissionFilter(("red",), ("ball",))))
        'red ball'
    """
    mf = task.mission_filter
    if mf is None or mf.families() is None:
        raise ValueError(f"a hidden task names a colour and an object type (a 'missions' task), "
                         f"not {task.to_dict()}")
    return " ".join((*mf.colors, *mf.objects))  # type: ignore[misc]


def trial_schedule(tasks: Sequence[Task], trial_episodes: int, *, seed: int) -> Schedule:
    """The one-phase schedule whose column streams give the trials' tasks: every task of
    ``tasks`` equally likely, a new one every ``trial_episodes`` episodes."""
    n = len(tasks)
    return Schedule((Phase(tuple(tasks), (1.0 / n,) * n, every=trial_episodes, name="trials"),), seed)


class HiddenTaskVecEnv:
    """``num_envs`` columns of hidden-task trials (see module docstring).

    Implements :class:`~metarim.envs.protocols.CheckpointableVecEnv` (each env state is
    the base env's, with the column's trial under ``"trial"``).

    Args:
        tasks: the task pool: tasks of one level that each name a colour and an object
            type (:func:`task_label`).
        num_envs: columns, ``>= 1``.
        seed: base seed of the layouts (as :func:`~metarim.envs.make_vec_env` takes it)
            and of the task draws.
        vocab: the shared vocabulary; the :data:`FEEDBACK_WORDS` are added (a frozen
            vocabulary must hold them already).
        trial_episodes: :math:`K`, episodes per trial, ``>= 1``.
        backend: ``"tensor"`` or ``"minigrid"`` (the same trials).
        asynchronous: tensor backend: layouts made in a background process.
    """

    def __init__(self, tasks: Sequence[Task], num_envs: int, *, seed: int, vocab: Vocab, trial_episodes: int,
                 backend: str = "tensor", asynchronous: bool = False) -> None:
        from metarim.envs import make_vec_env

        tasks = list(tasks)
        if trial_episodes < 1:
            raise ValueError(f"trial_episodes={trial_episodes} must be >= 1")
        if not tasks:
            raise ValueError("a hidden-task pool needs at least one task")
        for t in tasks:
            task_label(t)
        if len({(t.level, t.env_kwargs) for t in tasks}) > 1:
            raise ValueError(f"hidden-task pool mixes levels {sorted({t.level for t in tasks})}; use one level")
        missing = [w for w in FEEDBACK_WORDS if w not in vocab.words]
        if vocab.frozen and missing:
            raise ValueError(f"the vocabulary lacks the hidden-task words {missing}: this run was not trained "
                             f"with hidden_task=True")
        self.word_ids = np.stack([vocab.encode(w) for w in FEEDBACK_WORDS])
        self.envs = make_vec_env(tasks[0], num_envs, seed=seed, vocab=vocab, backend=backend,
                                 asynchronous=asynchronous, schedule=trial_schedule(tasks, trial_episodes, seed=seed))
        self.tasks, self.vocab, self.seed, self.trial_episodes = tasks, vocab, seed, trial_episodes
        self.num_envs = num_envs
        self.single_observation_space = self.envs.single_observation_space
        self.single_action_space = self.envs.single_action_space
        self.observation_space = self.envs.observation_space
        self.action_space = self.envs.action_space
        self.labels = [""] * num_envs
        """The target of each column's current trial."""
        self.episode = np.zeros(num_envs, dtype=np.int64)
        """Index in its trial of each column's current episode."""
        self.trial = np.zeros(num_envs, dtype=np.int64)
        """Trials each column has finished since the last :meth:`reset`."""
        self.word = np.zeros(num_envs, dtype=np.int64)
        self.ret = np.zeros(num_envs)
        self.length = np.zeros(num_envs, dtype=np.int64)
        self.finished: list[dict[str, Any]] = []
        self.started = False

    def _hide(self, obs: dict[str, Any]) -> dict[str, Any]:
        return {**obs, "mission": self.word_ids[self.word]}

    def _read_labels(self, idx: Any) -> None:
        tasks = self.envs.current_tasks()
        for b in idx:
            self.labels[b] = task_label(tasks[b])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Starts a trial in every column: the task streams restart (from the seed given at
        construction) and the base env starts new episodes (``seed`` reseeds their layouts
        as ``make_vec_env``'s envs take it)."""
        if self.started:
            self.envs.set_phase(0)
        obs, _ = self.envs.reset(seed=seed, options=options)
        self.episode[:], self.trial[:], self.word[:], self.ret[:], self.length[:] = 0, 0, _HIDDEN, 0.0, 0
        self._read_labels(range(self.num_envs))
        self.started = True
        return self._hide(obs), {}

    def step(self, actions: Any) -> tuple[dict[str, Any], Any, np.ndarray, np.ndarray, dict[str, Any]]:
        """Steps the base env; returns ``(obs, reward, terminated, truncated, info)`` of the
        trials (see module docstring)."""
        if not self.started:
            raise RuntimeError("call reset() before step()")
        obs, rew, term, trunc, _ = self.envs.step(actions)  # the base info may hold the last obs: dropped
        r = np.asarray(rew, dtype=np.float64)
        term, trunc = np.asarray(term, dtype=bool), np.asarray(trunc, dtype=bool)
        n, last = self.num_envs, self.trial_episodes - 1
        self.ret += r
        self.length += 1
        end = term | trunc
        out_term, out_trunc = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        index, success, returns = np.full(n, -1, dtype=np.int64), np.zeros(n), np.zeros(n)
        self.word[:] = _HIDDEN
        ended = np.flatnonzero(end)
        for b in ended:
            ok = bool(term[b]) and r[b] > 0
            i = int(self.episode[b])
            index[b], success[b], returns[b] = i, float(ok), self.ret[b]
            self.finished.append({"return": float(self.ret[b]), "length": int(self.length[b]),
                                  "success": float(ok), "env": int(b), "index": i,
                                  "trial": int(self.trial[b]), "task": self.labels[b]})
            self.ret[b], self.length[b] = 0.0, 0
            if i == last:  # the trial ends; the base env already holds the next trial's layout
                out_term[b], out_trunc[b] = term[b], trunc[b]
                self.trial[b] += 1
                self.episode[b] = 0
            else:
                self.episode[b] = i + 1
                self.word[b] = _FOUND if ok else _MISSED
        if len(ended):
            self._read_labels(ended)
        info = {"inner_end": end, "inner_index": index, "inner_success": success, "inner_return": returns}
        return self._hide(obs), rew, out_term, out_trunc, info

    def drain(self) -> list[dict[str, Any]]:
        """The episodes finished since the last call, oldest first (and forgets them)."""
        out, self.finished = self.finished, []
        return out

    # ------------------------------------------------------------------ checkpoints
    def get_states(self) -> list[dict[str, Any]]:
        """The base env's states, each with its column's trial under ``"trial"``."""
        if not self.started:
            raise RuntimeError("call reset() before get_states()")
        return [{**state, "trial": {"episode": int(self.episode[b]), "trial": int(self.trial[b]),
                                    "word": int(self.word[b]), "return": float(self.ret[b]),
                                    "length": int(self.length[b])}}
                for b, state in enumerate(self.envs.get_states())]

    def set_states(self, states: list[dict[str, Any]]) -> None:
        """Restores :meth:`get_states`: the base env's episodes and task streams, then
        each column's trial."""
        if len(states) != self.num_envs:
            raise ValueError(f"got {len(states)} env states for {self.num_envs} envs")
        if any("trial" not in s for s in states):
            raise ValueError("env states have no trials: they were saved without hidden_task")
        if not self.started:
            self.reset()
        self.envs.set_states([{k: v for k, v in s.items() if k != "trial"} for s in states])
        for b, state in enumerate(states):
            t = state["trial"]
            self.episode[b], self.trial[b], self.word[b] = t["episode"], t["trial"], t["word"]
            self.ret[b], self.length[b] = t["return"], t["length"]
        self._read_labels(range(self.num_envs))
        self.finished = []

    def close(self) -> None:
        """Closes the base env."""
        self.envs.close()


def make_hidden_vec_env(
    tasks: Sequence[Task],
    num_envs: int,
    *,
    seed: int,
    vocab: Vocab,
    trial_episodes: int,
    backend: str = "tensor",
    asynchronous: bool = False,
) -> HiddenTaskVecEnv:
    """``num_envs`` columns of hidden-task trials of ``trial_episodes`` episodes over the
    task pool ``tasks`` (:class:`HiddenTaskVecEnv`; arguments as there), the hidden-task
    counterpart of :func:`~metarim.envs.make_vec_env`."""
    return HiddenTaskVecEnv(tasks, num_envs, seed=seed, vocab=vocab, trial_episodes=trial_episodes,
                            backend=backend, asynchronous=asynchronous)
