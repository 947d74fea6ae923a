r"""Reptile for recurrent policies: adapt to each task with a few optimiser steps,
then move the initial parameters towards the adapted ones.

For a meta-batch of tasks :math:`\tau_1..\tau_m` from the training sampler, each task
starts from :math:`\theta` and takes :math:`S` = ``inner_steps`` Adam steps (fresh
optimiser state, rate ``lr``) on the A2C loss of fresh on-policy rollouts of that task,
giving :math:`\tilde\theta_j`. The outer update is the interpolation

.. math:: \theta \gets \theta + \varepsilon \Big(\frac{1}{m}\sum_{j=1}^m \tilde\theta_j
          - \theta\Big)

with :math:`\varepsilon` = ``meta_step`` (:func:`reptile_update`). With :math:`S = 1`
Reptile is plain joint training on the expected loss; it differs from it (and picks up
the MAML-like term :math:`-\tfrac{\alpha^2}{2}\nabla\|\nabla L\|^2`) only for
:math:`S \geq 2`, so use ``--inner-steps`` of 2 or more.

References:
    Nichol, Achiam, Schulman. "On First-Order Meta-Learning Algorithms".
    arXiv:1803.02999, 2018.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from metarim.algorithms.base import adam, register_learner
from metarim.algorithms.common import copy_into, parameter_values
from metarim.algorithms.objectives import rollout_loss
from metarim.algorithms.task_learner import TaskLearner
from metarim.config import TrainConfig
from metarim.tasks.task import Task

__all__ = ["Reptile", "reptile_update"]


def reptile_update(
    theta: Mapping[str, Tensor], adapted: Sequence[Mapping[str, Tensor]], eps: float
) -> dict[str, Tensor]:
    r"""Pure Reptile interpolation :math:`\theta + \varepsilon(\bar{\tilde\theta} - \theta)`.

    Args:
        theta: the initial parameters, by name.
        adapted: one dict per task of adapted parameters (same names).
        eps: the outer step :math:`\varepsilon`.

    Example:
        >>> th = {"w": torch.tensor([0.0, 2.0])}
        >>> reptile_update(th, [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 0.0])}], 0.5)
        {'w': tensor([1.0000, 1.5000])}
    """
    if not adapted:
        raise ValueError("reptile_update needs at least one adapted parameter set")
    out = {}
    for name, value in theta.items():
        mean = torch.stack([a[name] for a in adapted]).mean(0)
        out[name] = value + eps * (mean - value)
    return out


@register_learner("reptile")
class Reptile(TaskLearner):
    """Reptile learner (see the module docstring for the update).

    Args:
        config: uses ``inner_steps``, ``meta_batch``, ``meta_step``, ``lr``,
            ``num_envs``, ``num_steps``, ``task_sampler``, ``memory``.
    """

    adaptation_rule = "adam"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self._frames = 0
        self._losses: list[float] = []

    def adapt_task(self, task: Task, theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
        r"""Starts from ``theta``, takes ``inner_steps`` Adam steps on ``task``; returns :math:`\tilde\theta`."""
        c = self.config
        copy_into(self.policy, theta)
        opt = adam(self.policy.parameters(), c.lr, c.adam_eps)
        for _ in range(c.inner_steps):
            rollout = self.collectors.collect(task, self.policy)
            self._frames += rollout.num_frames
            self.recent.extend(rollout.episodes)
            loss, _, _ = rollout_loss(self.policy, rollout, c)
            self.optimizer_step(loss, opt)
            self._losses.append(loss.item())
        return parameter_values(self.policy)

    def step(self, tasks: list[Task] | None = None) -> dict[str, float]:
        """One Reptile update over ``tasks`` (default: ``meta_batch`` sampled training tasks)."""
        c = self.config
        t0 = time.perf_counter()
        tasks = tasks if tasks is not None else self.train_tasks.sample(c.meta_batch)
        self._frames, self._losses = 0, []
        theta = parameter_values(self.policy)
        adapted = [self.adapt_task(task, theta) for task in tasks]
        new = reptile_update(theta, adapted, c.meta_step)
        copy_into(self.policy, new)
        shift = torch.sqrt(sum(((new[n] - theta[n]) ** 2).sum() for n in theta))
        self.frames += self._frames
        self.updates += 1
        return {
            "frames": float(self.frames),
            **self.recent.metrics(),
            "losses/inner": sum(self._losses) / len(self._losses),
            "meta/step_norm": float(shift),
            "time/fps": self._frames / (time.perf_counter() - t0),
        }
