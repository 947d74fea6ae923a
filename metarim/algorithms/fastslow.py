r"""Two-timescale PPO: the first-order reading of Meta-RIM.

Madan et al. describe the RIM's modules as learned over a short timespan and the
attention over longer ones; the closest public code approximates this to first order on
BabyAI's PPO by stepping the modules with one optimiser every update and the attention
with another, slower one. :class:`FastSlow` is that reading on :class:`~metarim.algorithms.ppo.PPO`
with a RIM memory. The parameters are split by the same partition as Meta-RIM's
(:func:`~metarim.meta.partition.partition_parameters` with ``fast_params``):
``"modules"`` (default) makes the RIM mechanisms :math:`\theta` fast and everything else
:math:`\phi` (the two attentions, encoders, heads, a learned initial state) slow;
``"attention"`` is the reversed roles, the attentions fast and everything else slow.

At PPO minibatch :math:`j = 1, 2, \dots` with gradient :math:`(g^\theta_j, g^\phi_j)` of
the clipped PPO loss, each group's gradient is clipped to norm ``max_grad_norm`` on its
own, :math:`\bar g = g \min(1, c / \lVert g \rVert)`, and

.. math::
    \theta \gets \mathrm{Adam}_{\text{fast}}(\theta, \bar g^\theta_j)
    \quad \text{every minibatch, step size } \texttt{fast\_lr},

    \phi \gets \mathrm{Adam}_{\text{slow}}\Big(\phi, \frac{1}{K} \sum_{i=j-K+1}^{j} \bar g^\phi_i\Big)
    \quad \text{when } j \equiv 0 \pmod K, \text{ step size } \texttt{slow\_lr},

with :math:`K` = ``slow_every``. Between slow steps :math:`\phi` is fixed, so the fast
parameters adapt to a fixed attention, and the slow step follows the mean gradient over
:math:`K` minibatches, which may span rollouts (the running sum is checkpointed). Clipping
each group separately keeps a large fast gradient from shrinking the slow one (and the
reverse); the mean of :math:`K` clipped gradients has norm at most ``max_grad_norm``, so
the slow step needs no second clip. With :math:`K = 1` and equal rates this is PPO with
two Adams and per-group clipping (not bit-identical to ``ppo``, which clips the whole
gradient at once). ``losses/grad_norm`` is the norm of the whole unclipped gradient,
:math:`\sqrt{\lVert g^\theta \rVert^2 + \lVert g^\phi \rVert^2}`, as PPO reports it.

Collection, GAE, recurrence windows and minibatches are PPO's, so a step costs what a
PPO+RIM step costs, plus one running sum of the slow gradients.

References:
    Madan, Ke, Goyal, Schölkopf, Bengio. "Fast and Slow Learning of Recurrent
    Independent Mechanisms". ICLR 2021. arXiv:2105.08710.
    Schulman et al. "Proximal Policy Optimization Algorithms". arXiv:1707.06347, 2017.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metarim.algorithms.base import adam, register_learner
from metarim.algorithms.ppo import PPO
from metarim.config import TrainConfig
from metarim.meta.partition import ParamPartition, partition_parameters

__all__ = ["FastSlow", "GradientSum"]


class GradientSum:
    """A running sum of gradients of a fixed list of parameters and its count.

    The sums are made at the first :meth:`add`, like the gradients (same dtype and
    device). Checkpointed as plain data (``{"count": int, "sums": [Tensor]}``), so the
    slow step of a resumed run sees the same sum as an uninterrupted one.

    Args:
        params: the parameters whose ``.grad`` is summed.

    Example:
        >>> p = nn.Parameter(torch.zeros(2))
        >>> acc = GradientSum([p])
        >>> p.grad = torch.tensor([1.0, 2.0]); acc.add()
        >>> p.grad = torch.tensor([3.0, 0.0]); acc.add()
        >>> acc.count, acc.mean()[0].tolist()
        (2, [2.0, 1.0])
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.sums: list[Tensor] = []
        self.count = 0

    def add(self) -> None:
        """Adds each parameter's current ``.grad`` (``None``: zero) to the sum."""
        if not self.sums:
            self.sums = [torch.zeros_like(p) for p in self.params]
        pairs = [(s, p.grad) for s, p in zip(self.sums, self.params) if p.grad is not None]
        if pairs:
            torch._foreach_add_([s for s, _ in pairs], [g for _, g in pairs])
        self.count += 1

    def mean(self) -> list[Tensor]:
        """The mean gradient over the :attr:`count` sums (new tensors).

        Raises:
            ValueError: nothing was added since the last :meth:`reset`.
        """
        if self.count == 0:
            raise ValueError("no gradient has been added since the last reset")
        return [s / self.count for s in self.sums]

    def reset(self) -> None:
        """Zero sum, zero count."""
        for s in self.sums:
            s.zero_()
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        """``{"count": int, "sums": [Tensor]}`` (copies; ``[]`` before the first add)."""
        return {"count": self.count, "sums": [s.clone() for s in self.sums]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`.

        Raises:
            ValueError: the sums do not match the parameters' shapes.
        """
        sums = list(state["sums"])
        if sums and (len(sums) != len(self.params)
                     or any(s.shape != p.shape for s, p in zip(sums, self.params))):
            raise ValueError("gradient sums in the checkpoint do not match the slow parameters")
        self.sums = [s.to(device=p.device).clone() for s, p in zip(sums, self.params)]
        self.count = int(state["count"])


@register_learner("fastslow")
class FastSlow(PPO):
    """PPO with a RIM whose fast and slow parameters have their own Adam and timescale
    (see the module docstring).

    Args:
        config: ``memory`` must be ``"rim"``; uses ``fast_params``, ``fast_lr``,
            ``slow_lr``, ``slow_every``, ``max_grad_norm`` and everything PPO uses.

    Attributes:
        partition: the fast/slow split of :attr:`policy`'s parameters.
        fast_optimizer, slow_optimizer: the two Adams (``adam_eps``, ``foreach``).
        slow_grads: the running sum of the clipped slow gradients since the last slow step.
    """

    supports_fast_params = True
    supports_two_timescales = True

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Also: a RIM memory (the partition splits its modules from its attention)."""
        super().check_config(config)
        if config.memory != "rim":
            raise ValueError(f"algo='fastslow' needs memory='rim', got {config.memory!r}")

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        c = self.config
        self.partition: ParamPartition = partition_parameters(self.policy, c.fast_params)
        params = dict(self.policy.named_parameters())
        self.fast_params = [params[n] for n in self.partition.fast]
        self.slow_params = [params[n] for n in self.partition.slow]
        self.fast_optimizer = adam(self.fast_params, c.lr if c.fast_lr is None else c.fast_lr, c.adam_eps)
        self.slow_optimizer = adam(self.slow_params, c.lr if c.slow_lr is None else c.slow_lr, c.adam_eps)
        self.slow_grads = GradientSum(self.slow_params)
        self.optimizer = self.fast_optimizer  # PPO.update hands it to optimizer_step, which steps both
        self.stateful = {"fast_optimizer": self.fast_optimizer, "slow_optimizer": self.slow_optimizer,
                         "slow_grads": self.slow_grads, "collector": self.collector, "recent": self.recent}

    def optimizer_step(self, loss: Tensor, optimizer: Any = None) -> Tensor:
        """Non-finite guard, zero every gradient, backward, then :meth:`clip_and_step`;
        ``optimizer`` is ignored (both of this learner's are used). Returns the norm of
        the whole gradient before clipping."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss ({loss.item()}) at update {self.updates}")
        self.policy.zero_grad(set_to_none=True)
        loss.backward()
        return self.clip_and_step(optimizer)

    def clip_and_step(self, optimizer: Any = None) -> Tensor:
        """Clips the fast and the slow gradient to ``max_grad_norm`` each, steps the fast
        Adam, adds the slow gradient to :attr:`slow_grads` and, every ``slow_every``-th
        call, steps the slow Adam on their mean and resets the sum.

        Raises:
            FloatingPointError: a group's gradient norm is not finite; nothing is stepped
                or added.
        """
        c = self.config
        fast = torch.nn.utils.clip_grad_norm_(self.fast_params, c.max_grad_norm, foreach=True)
        slow = torch.nn.utils.clip_grad_norm_(self.slow_params, c.max_grad_norm, foreach=True)
        if not (torch.isfinite(fast) and torch.isfinite(slow)):
            raise FloatingPointError(f"non-finite gradient norm at update {self.updates}")
        self.fast_optimizer.step()
        self.slow_grads.add()
        if self.slow_grads.count >= c.slow_every:
            for p, g in zip(self.slow_params, self.slow_grads.mean()):
                p.grad = g
            self.slow_optimizer.step()
            self.slow_grads.reset()
        return torch.sqrt(fast.detach() ** 2 + slow.detach() ** 2)

    @property
    def slow_steps(self) -> int:
        """Slow Adam steps taken so far."""
        state = self.slow_optimizer.state.get(self.slow_params[0], {})
        step = state.get("step", 0)
        return int(step.item() if isinstance(step, Tensor) else step)

    def step(self, tasks: Any = None) -> dict[str, float]:
        """PPO's step, plus ``fastslow/slow_steps``."""
        out = super().step(tasks)
        out["fastslow/slow_steps"] = float(self.slow_steps)
        return out

