r"""GAE and the PPO and A2C losses, as pure functions of tensors.

Generalised advantage estimation (Schulman et al. 2016), with :math:`d_t = 1` when the
episode ended after action :math:`t`:

.. math::
    \delta_t = r_t + \gamma (1 - d_t) V_{t+1} - V_t, \qquad
    A_t = \delta_t + \gamma \lambda (1 - d_t) A_{t+1}, \qquad R_t = A_t + V_t.

PPO (Schulman et al. 2017) with ratio :math:`\rho = \exp(\log\pi - \log\pi_\text{old})`:

.. math::
    L = -\mathbb{E}\min(\rho A, \operatorname{clip}(\rho, 1-\epsilon, 1+\epsilon) A)
        + c_v \mathbb{E}\max\big((V - R)^2, (V_\text{old} + \operatorname{clip}(V -
        V_\text{old}, -\epsilon, \epsilon) - R)^2\big) - c_H \mathbb{E} H.

A2C: :math:`L = -\mathbb{E}[\log\pi \, A] + c_v \mathbb{E}(V - R)^2 - c_H \mathbb{E} H`.

Example:
    >>> import torch
    >>> adv, ret = gae(torch.tensor([[1.0]]), torch.tensor([[0.5]]),
    ...                torch.tensor([[True]]), torch.tensor([9.0]), gamma=0.9, lam=0.8)
    >>> adv.item(), ret.item()
    (0.5, 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["a2c_loss", "gae", "ppo_loss"]


def gae(
    rewards: Tensor, values: Tensor, ends: Tensor, last_value: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Advantages and returns for ``(T, B)`` rewards, values and episode ends.

    Args:
        rewards: ``r_t``, shape ``(T, B)``.
        values: ``V(s_t)``, shape ``(T, B)``.
        ends: ``d_t`` (bool), the episode ended after action ``t``.
        last_value: ``V(s_T)``, shape ``(B,)``, the value after the last step.
        gamma: discount.
        lam: GAE λ.

    Returns:
        ``(advantages, returns)``, both ``(T, B)``.
    """
    steps = rewards.shape[0]
    notdone = 1.0 - ends.to(values.dtype)
    adv = torch.empty_like(values)
    next_adv = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * notdone[t] * next_value - values[t]
        next_adv = delta + gamma * lam * notdone[t] * next_adv
        adv[t] = next_adv
        next_value = values[t]
    return adv, adv + values


def ppo_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    *,
    clip: float = 0.2,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped PPO loss (see module docstring); all inputs have the same shape.

    Returns:
        The scalar loss and detached parts: ``policy``, ``value``, ``entropy``,
        ``approx_kl`` (the ``(ρ - 1) - log ρ`` estimator) and ``clip_frac``.
    """
    log_ratio = logp - old_logp
    ratio = log_ratio.exp()
    surr = torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    policy = -surr.mean()
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    value = torch.max((values - returns) ** 2, (v_clipped - returns) ** 2).mean()
    ent = entropy.mean()
    loss = policy + value_coef * value - entropy_coef * ent
    with torch.no_grad():
        parts = {
            "policy": policy.detach(),
            "value": value.detach(),
            "entropy": ent.detach(),
            "approx_kl": ((ratio - 1) - log_ratio).mean(),
            "clip_frac": ((ratio - 1).abs() > clip).to(ratio.dtype).mean(),
        }
    return loss, parts


def a2c_loss(
    logp: Tensor,
    advantages: Tensor,
    values: Tensor,
    returns: Tensor,
    entropy: Tensor,
    *,
    value_coef: float = 0.5,
    entropy_coef: float = 0.01,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Advantage actor-critic loss (see module docstring); same-shape inputs."""
    policy = -(logp * advantages.detach()).mean()
    value = ((values - returns) ** 2).mean()
    ent = entropy.mean()
    loss = policy + value_coef * value - entropy_coef * ent
    return loss, {"policy": policy.detach(), "value": value.detach(), "entropy": ent.detach()}
