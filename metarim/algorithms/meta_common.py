r"""Pieces shared by the meta-learners: the differentiable A2C loss of a rollout, task
samplers built from a config, parameter copies and the episode window.

The inner and outer losses of Meta-RIM, MAML and Reptile are all the A2C loss of an
on-policy rollout, re-run from its stored (detached) first memory through the given
policy (the meta-parameters or a differentiable clone of them):

.. math:: L(\theta) = -\frac{1}{TB}\sum_{t,b} \log\pi_\theta(a_{t,b}|h_{t,b}) \hat A_{t,b}
          + c_v \frac{1}{TB}\sum_{t,b} (V_\theta(h_{t,b}) - \hat R_{t,b})^2
          - c_H \frac{1}{TB}\sum_{t,b} H(\pi_\theta(\cdot|h_{t,b})),

with GAE advantages :math:`\hat A` (normalised if ``config.norm_adv``) and returns
:math:`\hat R` computed from the values recorded at collection time, so only
:math:`\log\pi_\theta`, :math:`V_\theta` and :math:`H` carry gradient. A2C rather than
the PPO surrogate: the data of each inner step is collected by the very parameters that
are differentiated (so the importance ratio is 1 and clipping does nothing), and a
single differentiable step is what MAML's analysis assumes.

References:
    Mnih et al. "Asynchronous Methods for Deep Reinforcement Learning". ICML 2016.
    Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning". ICML 2017. arXiv:1703.03400.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metarim.config import TrainConfig
from metarim.rl.losses import a2c_loss, gae, ppo_loss
from metarim.rl.rollout import Rollout
from metarim.tasks.samplers import TaskSampler, make_sampler

__all__ = [
    "EpisodeWindow",
    "quiet_nonleaf_grad",
    "copy_into",
    "make_task_samplers",
    "parameter_values",
    "rollout_a2c_loss",
    "select_columns",
    "sequence_targets",
]


def rollout_a2c_loss(
    policy: nn.Module, rollout: Rollout, config: TrainConfig, *, reset_memory: bool = True,
    kind: str = "a2c", targets: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """Differentiable A2C (or PPO-surrogate) loss of a whole ``(T, B)`` rollout under ``policy``.

    Args:
        policy: an actor-critic (or a clone of one) ``(obs, state, done) -> (logits,
            value, state, masks)``.
        rollout: on-policy experience; its ``memory[.][0]`` is the (detached) memory
            before the first step.
        config: gives ``gamma``, ``gae_lambda``, ``norm_adv``, ``value_coef``,
            ``entropy_coef``.
        reset_memory: zero the memory at episode starts, as the collector did.
        kind: ``"a2c"`` or ``"ppo"`` (clipped surrogate against the collection-time
            log-probabilities and values, :func:`~metarim.rl.losses.ppo_loss`; at the
            collecting parameters its ratio is 1 and its policy gradient is A2C's).
        targets: precomputed ``(advantages, returns)`` of this rollout, e.g. from GAE
            over a longer sequence it is a chunk of (:func:`sequence_targets`); by
            default GAE over this rollout alone, bootstrapped with its ``last_value``.

    Returns:
        ``(loss, parts, masks)``: the scalar loss, its detached parts and the RIM
        activity ``(T, B, N)`` of this re-run (``None`` for an LSTM).
    """
    if targets is None:
        adv, ret = gae(rollout.rewards, rollout.values, rollout.ends, rollout.last_value,
                       gamma=config.gamma, lam=config.gae_lambda)
    else:
        adv, ret = targets
    if config.norm_adv and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    obs = {"image": rollout.obs["image"], "mission": rollout.obs["mission"]}
    mem0 = tuple(m[0] for m in rollout.memory)
    logits, values, _, masks = policy(obs, mem0, rollout.starts if reset_memory else None)
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    if kind == "ppo":
        loss, parts = ppo_loss(logp, rollout.logprobs, adv, values, rollout.values, ret, entropy,
                               clip=config.clip, value_coef=config.value_coef,
                               entropy_coef=config.entropy_coef)
    elif kind == "a2c":
        loss, parts = a2c_loss(logp, adv, values, ret, entropy,
                               value_coef=config.value_coef, entropy_coef=config.entropy_coef)
    else:
        raise ValueError(f"kind={kind!r} must be 'a2c' or 'ppo'")
    return loss, parts, masks


def sequence_targets(chunks: list[Rollout], config: TrainConfig) -> list[tuple[Tensor, Tensor]]:
    """GAE ``(advantages, returns)`` over consecutive chunks taken as one sequence, split
    back per chunk.

    Each chunk's targets then see the rewards and values of the chunks after it, and
    only the last chunk bootstraps (with its ``last_value``), instead of every chunk end.

    Example:
        >>> T, B = 3, 1
        >>> def chunk(r):
        ...     z = torch.zeros(T, B)
        ...     return Rollout(obs={}, actions=z.long(), logprobs=z, values=z, rewards=r,
        ...                    starts=z.bool(), ends=z.bool(), memory=(), masks=None,
        ...                    last_value=torch.zeros(B))
        >>> cfg = TrainConfig(gamma=0.5, gae_lambda=1.0)
        >>> [a.flatten().tolist() for a, _ in sequence_targets(
        ...     [chunk(torch.zeros(T, B)), chunk(torch.tensor([[8.0], [0.0], [0.0]]))], cfg)]
        [[1.0, 2.0, 4.0], [8.0, 0.0, 0.0]]
    """
    cat = lambda name: torch.cat([getattr(r, name) for r in chunks])  # noqa: E731
    adv, ret = gae(cat("rewards"), cat("values"), cat("ends"), chunks[-1].last_value,
                   gamma=config.gamma, lam=config.gae_lambda)
    sizes = [r.rewards.shape[0] for r in chunks]
    return list(zip(adv.split(sizes), ret.split(sizes)))


@contextlib.contextmanager
def quiet_nonleaf_grad() -> Iterator[None]:
    """Silences torch's "``.grad`` of a non-leaf Tensor" warning inside the block.

    ``learn2learn``'s ``clone_module`` and ``update_module`` re-apply ``nn.GRU``'s
    ``_apply`` to a clone whose parameters are non-leaf by design, and torch warns when
    it reads their ``.grad``. Harmless here; silenced only around cloning and adapting.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        yield


def select_columns(rollout: Rollout, cols: Tensor) -> Rollout:
    """The env columns ``cols`` of a ``(T, B)`` rollout (episode records are dropped)."""
    return Rollout(
        obs={k: v[:, cols] for k, v in rollout.obs.items()},
        actions=rollout.actions[:, cols], logprobs=rollout.logprobs[:, cols],
        values=rollout.values[:, cols], rewards=rollout.rewards[:, cols],
        starts=rollout.starts[:, cols], ends=rollout.ends[:, cols],
        memory=tuple(m[:, cols] for m in rollout.memory),
        masks=None if rollout.masks is None else rollout.masks[:, cols],
        last_value=rollout.last_value[cols],
    )


def make_task_samplers(config: TrainConfig) -> tuple[TaskSampler, TaskSampler]:
    """``(train, held_out)`` samplers over ``config.env`` from ``config.task_sampler``.

    ``seeds``: ``num_tasks`` disjoint seed ranges; ``missions``: one task per (colour,
    object) family. ``held_out`` of the tasks are kept for fast-adaptation evaluation.

    Example:
        >>> cfg = TrainConfig(env="BabyAI-GoToLocalS6N2-v0", num_tasks=10, held_out=0.2)
        >>> train, held = make_task_samplers(cfg)
        >>> len(train.tasks), len(held.tasks)
        (8, 2)
    """
    if config.task_sampler == "seeds":
        sampler = make_sampler("seeds", level=config.env, num_tasks=config.num_tasks, seed=config.seed)
    else:
        sampler = make_sampler("missions", level=config.env, seed=config.seed)
    return sampler.split(config.held_out)


def parameter_values(module: nn.Module) -> dict[str, Tensor]:
    """Detached copies of ``module``'s parameters, by name."""
    return {n: p.detach().clone() for n, p in module.named_parameters()}


@torch.no_grad()
def copy_into(module: nn.Module, values: Mapping[str, Tensor]) -> None:
    """Writes ``values`` into ``module``'s parameters in place (names must exist)."""
    params = dict(module.named_parameters())
    for name, value in values.items():
        if name not in params:
            raise ValueError(f"unknown parameter {name!r}")
        params[name].copy_(value)


class EpisodeWindow:
    """The last ``size`` finished episodes and the ``rollout/*`` metrics PPO reports."""

    def __init__(self, size: int = 100) -> None:
        self.episodes: deque[dict[str, float]] = deque(maxlen=size)
        self.new = 0

    def extend(self, episodes: list[dict[str, float]]) -> None:
        """Adds finished episodes."""
        self.episodes.extend(episodes)
        self.new += len(episodes)

    def metrics(self) -> dict[str, float]:
        """``rollout/return_mean``, ``rollout/success_rate``, ``rollout/length_mean`` over
        the window and ``rollout/episodes``, the episodes finished since the last call."""
        ep = list(self.episodes)
        mean = lambda key: float(np.mean([e[key] for e in ep])) if ep else float("nan")  # noqa: E731
        new, self.new = self.new, 0
        return {"rollout/return_mean": mean("return"), "rollout/success_rate": mean("success"),
                "rollout/length_mean": mean("length"), "rollout/episodes": float(new)}

    def state_dict(self) -> list[dict[str, Any]]:
        """Plain data."""
        return [dict(e) for e in self.episodes]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.episodes.clear()
        self.episodes.extend(state)
