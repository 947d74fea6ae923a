r"""The learners' objectives on recorded rollouts: log-probabilities and entropy, the
differentiable loss of a whole rollout, GAE over a sequence of chunks.

The inner and outer losses of Meta-RIM, MAML and Reptile are the loss of an on-policy
rollout, re-run from its stored (detached) first memory through the given policy (the
meta-parameters or a differentiable clone of them). With ``kind="a2c"``:

.. math:: L(\theta) = -\frac{1}{TB}\sum_{t,b} \log\pi_\theta(a_{t,b}|h_{t,b}) \hat A_{t,b}
          + c_v \frac{1}{TB}\sum_{t,b} (V_\theta(h_{t,b}) - \hat R_{t,b})^2
          - c_H \frac{1}{TB}\sum_{t,b} H(\pi_\theta(\cdot|h_{t,b})),

with GAE advantages :math:`\hat A` (normalised if ``config.norm_adv``) and returns
:math:`\hat R` computed from the values recorded at collection time, so only
:math:`\log\pi_\theta`, :math:`V_\theta` and :math:`H` carry gradient. A2C rather than
the PPO surrogate for the inner steps: the data of each inner step is collected by the
very parameters that are differentiated (so the importance ratio is 1 and clipping does
nothing), and a single differentiable step is what MAML's analysis assumes.
``kind="ppo"`` is the clipped surrogate (:func:`~metarim.rl.losses.ppo_loss`) against the
collection-time log-probabilities and values, which Meta-RIM's outer loss uses.

References:
    Mnih et al. "Asynchronous Methods for Deep Reinforcement Learning". ICML 2016.
    Schulman et al. "Proximal Policy Optimization Algorithms". arXiv:1707.06347, 2017.
    Finn, Abbeel, Levine. "Model-Agnostic Meta-Learning". ICML 2017. arXiv:1703.03400.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metarim.config import TrainConfig
from metarim.rl.losses import a2c_loss, gae, ppo_loss
from metarim.rl.rollout import Rollout

__all__ = ["join_windows", "normalized_advantages", "policy_terms", "rollout_loss", "select_columns",
           "sequence_targets", "split_windows", "window_memory"]


def policy_terms(logits: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    r"""Log-probability of the taken actions and entropy of the policy, per step.

    .. math:: \log\pi(a|h) = \mathrm{log\_softmax}(z)_a, \qquad
              H = -\sum_a \pi(a|h) \log\pi(a|h)

    Args:
        logits: ``(..., A)`` action logits :math:`z`.
        actions: ``(...)`` integer actions :math:`a`.

    Returns:
        ``(logp, entropy)``, both of shape ``(...)``.

    Example:
        >>> logp, ent = policy_terms(torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> torch.allclose(logp, torch.tensor(0.25).log()), torch.allclose(ent, torch.tensor(4.0).log())
        (True, True)
    """
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def split_windows(x: Tensor, length: int) -> Tensor:
    """``(T, B, ...)`` → ``(length, T // length * B, ...)``: column ``j * B + b`` is steps
    ``j * length .. (j + 1) * length - 1`` of column ``b`` (PPO's layout).

    Example:
        >>> split_windows(torch.arange(6).reshape(3, 2), 3).equal(torch.arange(6).reshape(3, 2))
        True
        >>> split_windows(torch.arange(4).reshape(4, 1), 2).tolist()
        [[0, 2], [1, 3]]
    """
    steps, batch = x.shape[:2]
    y = x.reshape(steps // length, length, batch, *x.shape[2:]).transpose(0, 1)
    return y.reshape(length, steps // length * batch, *x.shape[2:])


def window_memory(memory: tuple[Tensor, ...], length: int) -> tuple[Tensor, ...]:
    """The stored memories ``(T, B, ...)`` at the window starts ``0, length, 2 length, ...``,
    in :func:`split_windows`' column order: ``(T // length * B, ...)`` each."""
    return tuple(m[::length].reshape(-1, *m.shape[2:]) for m in memory)


def normalized_advantages(adv: Tensor, config: TrainConfig) -> Tensor:
    """``adv`` normalised to mean 0 and standard deviation 1 when ``config.norm_adv`` (and
    it has more than one entry), as the rollout losses use it."""
    if config.norm_adv and adv.numel() > 1:
        return (adv - adv.mean()) / (adv.std() + 1e-8)
    return adv


def join_windows(x: Tensor, steps: int) -> Tensor:
    """Inverse of :func:`split_windows`: ``(length, steps // length * B, ...)`` → ``(steps, B, ...)``.

    Example:
        >>> x = torch.randn(8, 3, 2)
        >>> join_windows(split_windows(x, 4), 8).equal(x)
        True
    """
    length, cols = x.shape[:2]
    batch = cols // (steps // length)
    y = x.reshape(length, steps // length, batch, *x.shape[2:]).transpose(0, 1)
    return y.reshape(steps, batch, *x.shape[2:])


def rollout_loss(
    policy: nn.Module, rollout: Rollout, config: TrainConfig, *, kind: str = "a2c",
    reset_memory: bool = True, targets: tuple[Tensor, Tensor] | None = None, window: int = 0,
) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    r"""Differentiable loss of a whole ``(T, B)`` rollout under ``policy`` (module docstring).

    With ``window`` :math:`w < T` the rollout is re-run with truncated backprop, as PPO's
    ``recurrence``: each column is cut into :math:`T/w` windows of :math:`w` steps, window
    :math:`j` starts from the stored (detached) collection-time memory
    :math:`h_{jw}` (``rollout.memory[.][j * w]``), and all :math:`T/w \cdot B` windows run
    in one batched policy call, so the sequential depth is :math:`w` steps. The outputs are
    put back in ``(T, B)`` order and the loss is the same function of them; only the
    gradient through the memory across window starts is dropped. ``window`` 0 or
    :math:`T`: one window, the whole rollout from ``memory[.][0]``.

    Args:
        policy: an actor-critic (or a clone of one) ``(obs, state, done) -> (logits,
            value, state, masks)``.
        rollout: on-policy experience; its ``memory[.][0]`` is the (detached) memory
            before the first step.
        config: gives ``gamma``, ``gae_lambda``, ``norm_adv``, ``value_coef``,
            ``entropy_coef`` and, for ``kind="ppo"``, ``clip``.
        kind: ``"a2c"`` (:func:`~metarim.rl.losses.a2c_loss`) or ``"ppo"`` (the clipped
            surrogate against the collection-time log-probabilities and values,
            :func:`~metarim.rl.losses.ppo_loss`; at the collecting parameters its ratio
            is 1 and its policy gradient is A2C's).
        reset_memory: zero the memory at episode starts, as the collector did.
        targets: precomputed ``(advantages, returns)`` of this rollout, e.g. from GAE
            over a longer sequence it is a chunk of (:func:`sequence_targets`); by
            default GAE over this rollout alone, bootstrapped with its ``last_value``.
        window: steps per truncated-backprop window (0: the whole rollout); must divide
            ``T``.

    Returns:
        ``(loss, parts, masks)``: the scalar loss, its detached parts and the RIM
        activity ``(T, B, N)`` of this re-run (``None`` for an LSTM).

    Raises:
        ValueError: ``kind`` is neither ``"a2c"`` nor ``"ppo"``, or ``window`` does not
            divide the rollout's length.
    """
    if kind not in ("a2c", "ppo"):
        raise ValueError(f"kind={kind!r} must be 'a2c' or 'ppo'")
    steps = rollout.actions.shape[0]
    if window < 0 or (window and steps % window):
        raise ValueError(f"window={window} must be 0 or divide the rollout's {steps} steps")
    if targets is None:
        adv, ret = gae(rollout.rewards, rollout.values, rollout.ends, rollout.last_value,
                       gamma=config.gamma, lam=config.gae_lambda)
    else:
        adv, ret = targets
    adv = normalized_advantages(adv, config)
    obs = {"image": rollout.obs["image"], "mission": rollout.obs["mission"]}
    if window and window < steps:  # truncated: T/w windows per column, one batched call
        obs = {k: split_windows(v, window) for k, v in obs.items()}
        mem0 = window_memory(rollout.memory, window)
        starts = split_windows(rollout.starts, window) if reset_memory else None
        logits, values, _, masks = policy(obs, mem0, starts)
        logits, values = join_windows(logits, steps), join_windows(values, steps)
        masks = None if masks is None else join_windows(masks, steps)
    else:
        mem0 = tuple(m[0] for m in rollout.memory)
        logits, values, _, masks = policy(obs, mem0, rollout.starts if reset_memory else None)
    logp, entropy = policy_terms(logits, rollout.actions)
    if kind == "ppo":
        loss, parts = ppo_loss(logp, rollout.logprobs, adv, values, rollout.values, ret, entropy,
                               clip=config.clip, value_coef=config.value_coef,
                               entropy_coef=config.entropy_coef)
    else:
        loss, parts = a2c_loss(logp, adv, values, ret, entropy,
                               value_coef=config.value_coef, entropy_coef=config.entropy_coef)
    return loss, parts, masks


def sequence_targets(chunks: list[Rollout], config: TrainConfig) -> list[tuple[Tensor, Tensor]]:
    """GAE ``(advantages, returns)`` over consecutive chunks taken as one sequence, split
    back per chunk.

    Each chunk's targets then see the rewards and values of the chunks after it, and
    only the last chunk bootstraps (with its ``last_value``), instead of every chunk end.

    Examples:
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
