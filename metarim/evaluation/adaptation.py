r"""Fast adaptation, zero-shot transfer and module activity of a trained policy.

* :func:`fast_adaptation` — success on a held-out task after ``0, 1, 2, 5`` inner
  updates, each learner using its own adaptation rule
  (:attr:`~metarim.algorithms.base.Learner.adaptation_rule`):

  ===========  ====================================================================
  ``metarim``  masked SGD on the fast (module) parameters,
               :math:`\theta \gets \theta - \alpha M(a) \odot \nabla_\theta L`, slow
               parameters frozen, on a ``chunk_length``-step chunk
  ``maml``     SGD on all parameters, :math:`\theta \gets \theta - \alpha\nabla L`
  ``reptile``  Adam steps (rate ``lr``) on all parameters, as in its inner loop
  ``ppo/a2c``  plain fine-tuning: Adam steps (rate ``lr``) on all parameters
  ===========  ====================================================================

  where :math:`L` is the A2C loss of a fresh on-policy rollout of the task
  (``num_steps × num_envs`` frames; ``chunk_length × num_envs`` for Meta-RIM) and
  :math:`\alpha` = ``inner_lr``. Adaptation works on a copy; the policy is unchanged.
* :func:`zero_shot` — success on other levels without any update.
* :func:`module_activity` — how often each RIM module is active, per mission colour,
  per mission object and per step of the episode (the masks are also returned raw).

From the shell, on a run folder of ``metarim train``::

    metarim eval --run runs/x --adapt-steps 0 1 2 5 \
        --zero-shot BabyAI-GoToLocalS8N7-v0 BabyAI-GoToLocal-v0

prints one JSON object with the evaluation of the run's level, ``adaptation`` (on the
first held-out task of the run's task sampler) and ``zero_shot`` results
(:func:`adaptation_report`).

References:
    Madan et al. "Fast and Slow Learning of Recurrent Independent Mechanisms". ICLR 2021.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from metarim.algorithms.base import adam, learner_class
from metarim.algorithms.common import make_task_samplers
from metarim.algorithms.objectives import rollout_loss
from metarim.config import TrainConfig
from metarim.meta.functional import adapt_in_place
from metarim.meta.partition import ParamPartition, partition_parameters
from metarim.rl.policy import ActorCritic
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["Adapter", "adaptation_report", "fast_adaptation", "module_activity", "zero_shot"]

class Adapter:
    r"""A copy of a policy and the update of one adaptation rule.

    ``"masked_sgd"`` is Meta-RIM's collection-pass step,
    :math:`\theta \gets \theta - \alpha\, M(a) \odot \nabla_\theta L` on the fast
    parameters (:func:`~metarim.meta.functional.adapt_in_place`, the step that
    ``MetaRIM._online_step`` takes during training);
    ``"sgd"`` and ``"adam"`` are ``torch.optim`` steps on all parameters. The loss re-runs
    the rollout with ``config.reset_memory``, as the collector and training do.

    Args:
        policy: the trained policy (not modified).
        config: the run config (``inner_lr``, ``lr``, ``reset_memory``, A2C coefficients).
        rule: ``"masked_sgd"``, ``"sgd"`` or ``"adam"``.
        rates: per-element inner rates by fast parameter name (``masked_sgd`` only),
            used instead of ``inner_lr``.
    """

    def __init__(self, policy: ActorCritic, config: TrainConfig, rule: str,
                 rates: Mapping[str, torch.Tensor] | None = None) -> None:
        if rule not in ("masked_sgd", "sgd", "adam"):
            raise ValueError(f"rule={rule!r} must be 'masked_sgd', 'sgd' or 'adam'")
        if rates is not None and rule != "masked_sgd":
            raise ValueError("per-element rates are for the masked_sgd rule (Meta-RIM with learnable_lr)")
        self.config, self.rule, self.rates = config, rule, rates
        self.policy: ActorCritic = copy.deepcopy(policy)
        self.policy.train()
        self.partition: ParamPartition | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if rule == "masked_sgd":
            self.partition = partition_parameters(self.policy, config.fast_params)
        elif rule == "sgd":
            self.optimizer = torch.optim.SGD(self.policy.parameters(), lr=config.inner_lr)
        else:
            self.optimizer = adam(self.policy.parameters(), config.lr, config.adam_eps)

    def update(self, rollout: Any) -> float:
        """One adaptation step on ``rollout`` (collected by :attr:`policy`); returns the loss."""
        loss, _, masks = rollout_loss(self.policy, rollout, self.config, reset_memory=self.config.reset_memory)
        if self.optimizer is None:  # masked_sgd
            lr = self.config.inner_lr if self.rates is None else self.rates
            adapt_in_place(self.policy, loss, lr, self.partition, masks, reduction=self.config.selection,
                           k=self.config.k if self.config.selection == "topk" else None)
            return loss.item()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.rule == "adam":
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return loss.item()


def fast_adaptation(
    policy: ActorCritic,
    config: TrainConfig,
    task: Task,
    vocab: Vocab,
    *,
    steps: Sequence[int] = (0, 1, 2, 5),
    algo: str | None = None,
    episodes: int = 32,
    seed: int = 2_000_003,
    log: Callable[[str], None] | None = None,
    rates: Mapping[str, torch.Tensor] | None = None,
    backend: str = "minigrid",
    eval_envs: int | None = None,
) -> dict[int, dict[str, Any]]:
    """Success on ``task`` after each number of inner updates in ``steps``.

    Args:
        policy: the trained policy (left unchanged).
        config: its run config; ``config.algo`` picks the rule unless ``algo`` is given.
        task: a held-out task.
        vocab: the run's vocabulary.
        steps: numbers of inner updates (sorted, non-negative); adaptation is cumulative.
        algo: learner name whose ``adaptation_rule`` is used (default ``config.algo``).
        episodes: evaluation episodes per entry of ``steps``.
        seed: seed of the adaptation rollouts and of the evaluation.
        log: optional progress callback.
        rates: learned per-element inner rates by fast parameter name (a Meta-RIM run
            with ``learnable_lr``; its checkpoint's ``inner_lrs``), instead of ``inner_lr``.
        backend: env backend of the adaptation rollouts and the evaluation
            (:func:`metarim.envs.make_vec_env`; ``"tensor"`` gives the same episodes as
            ``"minigrid"`` on its levels).
        eval_envs: envs stepped at once by each evaluation (at most ``episodes``;
            default ``config.num_envs``). The adaptation rollouts use ``config.num_envs``.

    Returns:
        ``{k: evaluate(...) result}``, plus ``"adapt_loss"`` in each result.
    """
    from metarim.envs import make_vec_env
    from metarim.evaluation.evaluate import evaluate
    from metarim.rl.rollout import RolloutCollector

    algo = algo or config.algo
    steps = sorted(set(int(s) for s in steps))
    if steps and steps[0] < 0:
        raise ValueError(f"steps={steps} must be non-negative")
    rule = learner_class(algo).adaptation_rule
    torch.manual_seed(seed)
    adapter = Adapter(policy, config, rule, rates)
    length = config.chunk_length if rule == "masked_sgd" else config.num_steps
    envs = make_vec_env(task, config.num_envs, seed=seed, vocab=vocab, backend=backend)
    collector = RolloutCollector(envs, adapter.policy, length, reset_memory=config.reset_memory)
    results: dict[int, dict[str, Any]] = {}
    done, loss = 0, float("nan")
    try:
        for k in steps:
            while done < k:
                loss = adapter.update(collector.collect())
                done += 1
            res = evaluate(adapter.policy, task, vocab, episodes=episodes,
                           num_envs=min(eval_envs or config.num_envs, episodes), seed=seed + 1, backend=backend)
            res["adapt_loss"] = loss
            results[k] = res
            if log:
                log(f"  adapt {algo} k={k}: success {res['success_rate']:.2f}")
    finally:
        envs.close()
    return results


def zero_shot(
    policy: ActorCritic, levels: Sequence[str], vocab: Vocab, *, episodes: int = 64,
    num_envs: int = 16, seed: int = 3_000_017,
) -> dict[str, dict[str, Any]]:
    """``{level: evaluate(...)}`` for each level, with no update of ``policy``."""
    from metarim.evaluation.evaluate import evaluate

    return {lv: evaluate(policy, Task(lv), vocab, episodes=episodes,
                         num_envs=min(num_envs, episodes), seed=seed) for lv in levels}


@torch.no_grad()
def module_activity(
    policy: nn.Module, task: Task, vocab: Vocab, *, episodes: int = 32, num_envs: int = 8,
    max_steps: int = 64, seed: int = 4_000_037,
) -> dict[str, Any]:
    """RIM module activity over ``episodes`` episodes of ``task``.

    Returns:
        A dict with ``num_units``; ``by_color`` and ``by_object`` (``{word: [N
        frequencies]}``, the fraction of steps each module was active on missions naming
        that word); ``by_step`` (``(max_steps, N)`` list, activity at step ``t`` of an
        episode); ``steps`` (how many samples each row of ``by_step`` averages); and
        ``raw``, one ``{"mission", "masks" (T, N)}`` per episode.

    Raises:
        ValueError: if the policy's memory produces no masks (not a RIM).
    """
    from metarim.envs import make_vec_env
    from metarim.rl.rollout import play
    from metarim.tasks.samplers import COLORS, OBJECTS

    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    torch.manual_seed(seed)
    envs = make_vec_env(task, num_envs, seed=seed, vocab=vocab)
    current: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
    raw: list[dict[str, Any]] = []
    try:
        obs, _ = envs.reset()
        missions = [e.mission for e in envs.envs]
        for step in play(policy, envs, obs=obs):
            if step.masks is None:
                raise ValueError("module_activity needs a RIM memory (the policy returned no masks)")
            for b in range(num_envs):
                current[b].append(step.masks[b].numpy().copy())
            for b in np.flatnonzero(step.done):
                if len(raw) < episodes:
                    raw.append({"mission": missions[b], "masks": np.stack(current[b])})
                current[b] = []
                missions[b] = envs.envs[b].mission
            if len(raw) >= episodes:
                break
    finally:
        envs.close()
    n = raw[0]["masks"].shape[1]

    def freq(word: str) -> list[float] | None:
        rows = [r["masks"] for r in raw if word in r["mission"].split()]
        return np.concatenate(rows).mean(0).tolist() if rows else None

    by_step, counts = np.zeros((max_steps, n)), np.zeros(max_steps)
    for r in raw:
        m = r["masks"][:max_steps]
        by_step[: len(m)] += m
        counts[: len(m)] += 1
    by_step = by_step / np.maximum(counts, 1)[:, None]
    return {
        "num_units": n,
        "by_color": {c: f for c in COLORS if (f := freq(c)) is not None},
        "by_object": {o: f for o in OBJECTS if (f := freq(o)) is not None},
        "by_step": by_step.tolist(),
        "steps": counts.tolist(),
        "raw": [{"mission": r["mission"], "masks": r["masks"].tolist()} for r in raw],
    }


def adaptation_report(
    config: TrainConfig, policy: ActorCritic, vocab: Vocab, *, adapt_steps: Sequence[int] = (),
    zero_shot_levels: Sequence[str] = (), episodes: int = 64, seed: int = 2_000_003,
    rates: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Fast adaptation on the run's first held-out task and zero-shot success, as JSON data.

    Returns:
        ``{"held_out_task", "adaptation": {"k": result}}`` when ``adapt_steps`` is not
        empty, and ``{"zero_shot": {level: result}}`` when ``zero_shot_levels`` is not.
    """
    out: dict[str, Any] = {}
    if adapt_steps:
        task = make_task_samplers(config)[1].tasks[0]
        res = fast_adaptation(policy, config, task, vocab, steps=adapt_steps, episodes=episodes, seed=seed,
                              rates=rates)
        out["held_out_task"] = task.to_dict()
        out["adaptation"] = {str(k): v for k, v in res.items()}
    if zero_shot_levels:
        out["zero_shot"] = zero_shot(policy, zero_shot_levels, vocab, episodes=episodes, seed=seed)
    return out

