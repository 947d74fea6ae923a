r"""The within-trial adaptation curve: success in episode 1 of a hidden-task trial against
episodes 2..K, on held-out tasks.

A trained policy plays trials of :math:`K` episodes of held-out hidden tasks
(:class:`~metarim.envs.hidden.HiddenTaskVecEnv`; the tasks are the held-out families of
the run's ``missions`` split, :func:`~metarim.algorithms.common.make_task_samplers`).
Its memory is carried across a trial's episodes and reset at the trial's start, as in
training. With ``adapt_steps`` :math:`= s > 0` the learner's own fast-adaptation rule
(:class:`~metarim.evaluation.adaptation.Adapter`, the rule ``metarim eval --adapt-steps``
uses: Meta-RIM's masked SGD on the fast weights, MAML's SGD, Adam fine-tuning for the
others) also runs between the episodes of a trial: after episode :math:`i < K`,
:math:`s` steps on the A2C loss of episode :math:`i` (on-policy; the adaptation is
cumulative over the trial, so episode :math:`i + 1` is played by weights adapted on
episodes :math:`1..i`), and every trial starts from the trained weights. Adapted trials
run one at a time (one env column), since each needs its own weights; ``adapt_steps=0``
runs ``num_envs`` columns at once. The layouts and tasks a column meets do not depend on
the actions, so curves with the same seed and ``num_envs`` see the same trials.

:func:`trial_curve` turns episode records into the curve: per episode index
:math:`i = 1..K`, the success rate :math:`\hat p_i` (with a Wilson interval) and mean
return over complete trials; ``first`` is :math:`\hat p_1`, ``later`` the success rate
pooled over episodes :math:`2..K`, ``gain`` their difference.

From the shell::

    metarim eval --run runs/x --trials 4 --trial-count 64 --trial-adapt 0 1

References:
    Duan et al. "RL²: Fast Reinforcement Learning via Slow Reinforcement Learning".
    arXiv:1611.02779, 2016. Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning".
    ICML 2017.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from metarim.algorithms.base import learner_class
from metarim.algorithms.common import make_task_samplers
from metarim.config import TrainConfig
from metarim.envs.hidden import make_hidden_vec_env
from metarim.evaluation.adaptation import Adapter
from metarim.evaluation.stats import wilson_interval
from metarim.rl.policy import ActorCritic
from metarim.rl.rollout import Rollout, RolloutCollector
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["held_out_tasks", "run_trials", "trial_curve", "trials_report", "within_trial_curve"]


def trial_curve(records: Sequence[Mapping[str, Any]], trial_episodes: int) -> dict[str, Any]:
    """The within-trial curve of episode records (see module docstring).

    Args:
        records: one record per episode with ``env``, ``trial``, ``index`` (0-based),
            ``success``, ``return`` and ``task`` (as :meth:`HiddenTaskVecEnv.drain` gives);
            only trials with exactly one record per index ``0..K-1`` count.
        trial_episodes: :math:`K`.

    Returns:
        ``{"trial_episodes", "trials", "success": [K], "success_ci95": [K x 2],
        "return": [K], "first", "later", "later_ci95", "gain", "by_task": {task:
        {"trials", "success": [K]}}}`` (``later`` and ``gain`` are ``None`` when
        :math:`K = 1`).

    Example:
        >>> recs = [{"env": 0, "trial": 0, "index": i, "success": s, "return": s / 2, "task": "red ball"}
        ...         for i, s in enumerate([0.0, 1.0])]
        >>> c = trial_curve(recs, 2)
        >>> c["trials"], c["success"], c["gain"]
        (1, [0.0, 1.0], 1.0)
    """
    K = trial_episodes
    if K < 1:
        raise ValueError(f"trial_episodes={K} must be >= 1")
    groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((int(r["env"]), int(r["trial"])), []).append(r)
    trials = [sorted(g, key=lambda r: int(r["index"])) for _, g in sorted(groups.items())
              if sorted(int(r["index"]) for r in g) == list(range(K))]
    succ = np.array([[float(r["success"]) for r in t] for t in trials]).reshape(len(trials), K)
    rets = np.array([[float(r["return"]) for r in t] for t in trials]).reshape(len(trials), K)
    n = len(trials)
    rate = lambda x: float(x.mean()) if x.size else float("nan")  # noqa: E731
    out: dict[str, Any] = {
        "trial_episodes": K,
        "trials": n,
        "success": [rate(succ[:, i]) for i in range(K)],
        "success_ci95": [list(wilson_interval(int(succ[:, i].sum()), n)) if n else [float("nan")] * 2
                         for i in range(K)],
        "return": [rate(rets[:, i]) for i in range(K)],
        "first": rate(succ[:, 0]),
        "later": None, "later_ci95": None, "gain": None,
    }
    if K > 1:
        later = succ[:, 1:]
        out["later"] = rate(later)
        out["later_ci95"] = list(wilson_interval(int(later.sum()), later.size)) if n else [float("nan")] * 2
        out["gain"] = out["later"] - out["first"]
    by_task: dict[str, list[int]] = {}
    for j, t in enumerate(trials):
        by_task.setdefault(str(t[0]["task"]), []).append(j)
    out["by_task"] = {task: {"trials": len(ix), "success": [rate(succ[ix, i]) for i in range(K)]}
                      for task, ix in sorted(by_task.items())}
    return out


def held_out_tasks(config: TrainConfig) -> list[Task]:
    """The held-out target families of ``config``'s ``missions`` split (the tasks a run
    trained with ``hidden_task`` never met)."""
    return make_task_samplers(dataclasses.replace(config, task_sampler="missions"))[1].tasks


def _join(steps: list[Rollout]) -> Rollout:
    """One-step rollouts of one column, in order → one rollout (the last one's bootstrap)."""
    cat = lambda name: torch.cat([getattr(r, name) for r in steps])  # noqa: E731
    return Rollout(
        obs={k: torch.cat([r.obs[k] for r in steps]) for k in steps[0].obs},
        actions=cat("actions"), logprobs=cat("logprobs"), values=cat("values"), rewards=cat("rewards"),
        starts=cat("starts"), ends=cat("ends"),
        memory=tuple(torch.cat(ms) for ms in zip(*[r.memory for r in steps])),
        masks=None if steps[0].masks is None else cat("masks"), last_value=steps[-1].last_value,
    )


def run_trials(
    policy: ActorCritic,
    config: TrainConfig,
    tasks: Sequence[Task],
    vocab: Vocab,
    *,
    trial_episodes: int,
    trials: int = 64,
    adapt_steps: int = 0,
    num_envs: int = 16,
    seed: int = 6_000_011,
    algo: str | None = None,
    rates: Mapping[str, torch.Tensor] | None = None,
    backend: str | None = None,
) -> list[dict[str, Any]]:
    """Plays ``trials`` complete trials of ``trial_episodes`` episodes of ``tasks``.

    Args:
        policy: the trained policy (left unchanged).
        config: its run config (``reset_memory``, and for adaptation ``inner_lr``, ``lr``
            and the loss coefficients).
        tasks: the hidden-task pool (e.g. :func:`held_out_tasks`).
        vocab: the run's vocabulary (it must hold the hidden-task words).
        trial_episodes: :math:`K`.
        trials: complete trials to play, split evenly over the columns in advance.
        adapt_steps: adaptation steps between episodes (module docstring); ``> 0`` plays
            one column.
        num_envs: columns when ``adapt_steps == 0``.
        seed: seed of the layouts, the task draws and the actions.
        algo: learner whose adaptation rule is used (default ``config.algo``).
        rates: learned per-element inner rates (``Learner.adaptation_rates``).
        backend: env backend (default ``config.env_backend``; both give the same trials).

    Returns:
        the episode records of the complete trials (:meth:`HiddenTaskVecEnv.drain`'s).
    """
    if trials < 1 or adapt_steps < 0 or num_envs < 1:
        raise ValueError(f"trials={trials} and num_envs={num_envs} must be >= 1, adapt_steps={adapt_steps} >= 0")
    K = trial_episodes
    cols = 1 if adapt_steps else min(num_envs, trials)
    quota = np.full(cols, trials // cols)
    quota[: trials % cols] += 1
    rule = learner_class(algo or config.algo).adaptation_rule
    torch.manual_seed(seed)
    envs = make_hidden_vec_env(tasks, cols, seed=seed, vocab=vocab, trial_episodes=K,
                               backend=backend or config.env_backend)
    adapter = Adapter(policy, config, rule, rates) if adapt_steps else None
    collector = RolloutCollector(envs, adapter.policy if adapter else policy, 1, reset_memory=config.reset_memory)
    done = np.zeros(cols, dtype=np.int64)
    kept: list[dict[str, Any]] = []
    episode: list[Rollout] = []
    try:
        while (done < quota).any():
            step = collector.collect()
            episode.append(step)
            for r in envs.drain():
                b = r["env"]
                if r["trial"] < quota[b]:
                    kept.append(r)
                if r["index"] == K - 1:
                    done[b] += 1
                if adapter is not None:  # one column: r ends the episode just collected
                    if r["index"] < K - 1:
                        for _ in range(adapt_steps):
                            adapter.update(_join(episode))
                    else:  # the next trial starts from the trained weights
                        adapter = Adapter(policy, config, rule, rates)
                        collector.policy = adapter.policy
                    episode = []
            if adapter is None:
                episode = []
    finally:
        envs.close()
    return kept


def within_trial_curve(
    policy: ActorCritic, config: TrainConfig, vocab: Vocab, *, trial_episodes: int,
    tasks: Sequence[Task] | None = None, **kwargs: Any,
) -> dict[str, Any]:
    """:func:`trial_curve` of :func:`run_trials` on ``tasks`` (default: the run's
    held-out families, :func:`held_out_tasks`); ``kwargs`` go to :func:`run_trials`."""
    tasks = held_out_tasks(config) if tasks is None else list(tasks)
    records = run_trials(policy, config, tasks, vocab, trial_episodes=trial_episodes, **kwargs)
    return trial_curve(records, trial_episodes)


def trials_report(
    config: TrainConfig, policy: ActorCritic, vocab: Vocab, *, trial_episodes: int, trials: int = 64,
    adapt_steps: Sequence[int] = (0,), seed: int = 6_000_011, num_envs: int = 16,
    rates: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The within-trial curves of a run on its held-out families, one per entry of
    ``adapt_steps``, as JSON data (``metarim eval --trials``).

    When some entry is ``> 0`` every curve plays one column, so that all of them see the
    same trials.

    Returns:
        ``{"held_out_tasks": [labels], "curves": {"s": trial_curve(...)}}``.
    """
    from metarim.envs.hidden import task_label

    steps = sorted(set(int(s) for s in adapt_steps))
    if not steps or steps[0] < 0:
        raise ValueError(f"adapt_steps={list(adapt_steps)} must be non-empty and >= 0")
    tasks = held_out_tasks(config)
    cols = 1 if steps[-1] > 0 else num_envs
    return {
        "held_out_tasks": [task_label(t) for t in tasks],
        "curves": {str(s): within_trial_curve(policy, config, vocab, trial_episodes=trial_episodes, tasks=tasks,
                                              trials=trials, adapt_steps=s, num_envs=cols, seed=seed, rates=rates)
                   for s in steps},
    }
