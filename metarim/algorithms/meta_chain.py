r"""Meta-RIM's meta-gradient as one function of tensors, which ``torch.compile`` can compile.

:meth:`MetaRIM._meta_loss <metarim.algorithms.meta_rim.MetaRIM._meta_loss>` builds the
inner chain on a differentiable clone and calls ``backward``: autograd's double backward,
which a compiled graph cannot run. :class:`FunctionalChain` computes the same gradient as
a *function*: ``torch.func.grad_and_value`` of the outer loss, which itself calls
``grad_and_value`` for each masked inner step. Inductor then sees the double backward as
one forward graph.

The encoders stay outside the function. With the fast parameters inside the memory
(both partition presets), the memory input :math:`x = e_\phi(o)` of every chunk (the
image code, with the mission for ``film``/``concat``) and the heads' mission code
:math:`m` depend on slow parameters only, so the function takes them as inputs and
returns :math:`\partial \mathcal{L}/\partial x` and :math:`\partial \mathcal{L}/\partial m`
besides the gradient into the memory and the heads; one eager backward of
:math:`x` and :math:`m` then carries the gradient into the encoders (the mission GRU and
its per-batch ``unique`` stay out of the compiled graph). By the chain rule this is the
full gradient of the outer loss, second-order terms included.

Same numbers as the autograd chain up to float rounding: ``tests/test_meta_chain.py``
checks every parameter's gradient against :meth:`MetaRIM._meta_loss` in float64 (to
1e-12) for each selection, partition, window and outer-loss setting;
``python benchmarks/meta_throughput.py --compile`` times the learner with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, grad_and_value

from metarim.algorithms.objectives import (
    join_windows,
    normalized_advantages,
    policy_terms,
    split_windows,
    window_memory,
)
from metarim.config import TrainConfig
from metarim.meta.functional import masked_update
from metarim.meta.maml import MaskedMAML
from metarim.meta.partition import ParamPartition, reduce_activity
from metarim.rl.losses import ppo_loss
from metarim.rl.rollout import Rollout

__all__ = ["FunctionalChain", "unsupported_reason"]

INNER = ("memory.", "actor.", "critic.")
"""Parameter prefixes the function differentiates directly; the others (the encoders)
get their gradient by the eager backward of the function's input gradients."""


def unsupported_reason(config: TrainConfig, partition: ParamPartition) -> str | None:
    """Why :class:`FunctionalChain` cannot compute this learner's meta-gradient, or ``None``."""
    if config.learnable_lr:
        return "learnable_lr (Meta-SGD rates are meta-parameters the function does not take)"
    if not all(n.startswith("memory.") for n in partition.fast):
        return "fast parameters outside the memory"
    return None


def _sub(params: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


class FunctionalChain:
    """The masked inner chain and outer loss of Meta-RIM on one minibatch of env columns,
    as a ``torch.func`` function (compiled when ``compile`` is true).

    Args:
        meta: the learner's :class:`~metarim.meta.maml.MaskedMAML`: its ``module`` (the
            meta-parameters' :class:`~metarim.rl.policy.ActorCritic`), ``partition`` (fast
            ones inside the memory), ``reduction`` and ``k`` (the masked steps' activity).
        config: ``inner_lr``, ``first_order``, ``meta_window``, ``outer_chunks``,
            ``reset_memory``, ``norm_adv`` and the PPO coefficients.
        compile: ``torch.compile`` the function (``dynamic=False``: one graph per
            minibatch shape; inductor's on-disk caches make a later run's compile
            seconds instead of minutes).

    Raises:
        ValueError: :func:`unsupported_reason` gives a reason.
    """

    def __init__(self, meta: MaskedMAML, config: TrainConfig, *, compile: bool = False) -> None:
        reason = unsupported_reason(config, meta.partition)
        if reason is not None:
            raise ValueError(f"the functional meta-gradient does not support {reason}")
        self.meta, self.policy, self.config, self.partition = meta, meta.module, config, meta.partition
        self.inner = [n for n, _ in self.policy.named_parameters() if n.startswith(INNER)]
        self.fn: Callable[..., Any] = grad_and_value(self._outer, argnums=(0, 1, 2), has_aux=True)
        if compile:
            self.fn = torch.compile(self.fn, dynamic=False)

    def _chunk_loss(self, params: dict[str, Tensor], x: Tensor, terms: Tensor,
                    d: dict[str, Any]) -> tuple[Tensor, tuple[Tensor, dict[str, Tensor]]]:
        """The PPO loss of one chunk from its memory input ``x (T, B, D)`` and mission
        code ``terms (T, B, M)``: :func:`~metarim.algorithms.objectives.rollout_loss`
        after the encoders."""
        c, policy = self.config, self.policy
        steps = x.shape[0]
        w = c.meta_window if c.meta_window and c.meta_window < steps else steps
        if w < steps:
            xw, starts, mem0 = split_windows(x, w), split_windows(d["starts"], w), window_memory(d["memory"], w)
        else:
            xw, starts, mem0 = x, d["starts"], tuple(m[0] for m in d["memory"])
        out, _, masks = functional_call(policy.memory, _sub(params, "memory."), (xw, mem0, starts))
        if w < steps:
            out, masks = join_windows(out, steps), join_windows(masks, steps)
        if policy.combine == "heads":
            out = torch.cat([out, terms], dim=-1)
        logits = functional_call(policy.actor, _sub(params, "actor."), (out,))
        values = functional_call(policy.critic, _sub(params, "critic."), (out,)).squeeze(-1)
        logp, ent = policy_terms(logits, d["actions"])
        loss, parts = ppo_loss(logp, d["logprobs"], d["adv"], values, d["values"], d["ret"], ent,
                               clip=c.clip, value_coef=c.value_coef, entropy_coef=c.entropy_coef)
        return loss, (masks, parts)

    def _outer(self, params: dict[str, Tensor], xs: list[Tensor], terms: list[Tensor],
               data: list[dict[str, Any]]) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.config
        fast_names = self.partition.fast
        slow = {n: v for n, v in params.items() if n not in fast_names}
        fast = {n: params[n] for n in fast_names}
        outer, chunk_losses, inner, active, parts = [], [], [], [], []
        last = len(xs) - 1
        for i in range(len(xs)):
            if i < last:
                def loss_i(fw: dict[str, Tensor], i: int = i) -> tuple[Tensor, Any]:
                    return self._chunk_loss({**slow, **fw}, xs[i], terms[i], data[i])

                grads, (loss, (masks, part)) = grad_and_value(loss_i, has_aux=True)(fast)
                if c.first_order:
                    grads = {n: g.detach() for n, g in grads.items()}
                act = reduce_activity(masks, self.meta.reduction, k=self.meta.k)
                block = self.partition.block_masks(act, dtype=xs[0].dtype, device=xs[0].device)
                fast = masked_update(fast, grads, c.inner_lr, block)
                inner.append(loss.detach())
                active.append(act.mean().detach())
            else:
                loss, (_, part) = self._chunk_loss({**slow, **fast}, xs[i], terms[i], data[i])
            chunk_losses.append(loss.detach())
            if i > 0 or c.outer_chunks == "all":
                outer.append(loss)
                parts.append(part)
        aux = {"chunks": torch.stack(chunk_losses),
               "inner": torch.stack(inner) if inner else torch.zeros(0),
               "active": torch.stack(active) if active else torch.zeros(0),
               **{f"part/{k}": torch.stack([p[k] for p in parts]).mean() for k in parts[0]}}
        return torch.stack(outer).mean(), aux

    def inputs(self, chunks: list[Rollout], targets: list[tuple[Tensor, Tensor]]
               ) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
        """The encoders' outputs per chunk (with autograd into the encoders) and the data
        the function reads: stored memories, starts, actions, old log-probabilities and
        values, (normalised) advantages and returns."""
        c, policy = self.config, self.policy
        xs, terms, data = [], [], []
        for r, (adv, ret) in zip(chunks, targets):
            x, m = policy.codes({"image": r.obs["image"], "mission": r.obs["mission"]})
            xs.append(x)
            terms.append(m)
            starts = r.starts if c.reset_memory else torch.zeros_like(r.starts)
            data.append({"memory": r.memory, "starts": starts, "actions": r.actions, "logprobs": r.logprobs,
                         "values": r.values, "adv": normalized_advantages(adv, c), "ret": ret})
        return xs, terms, data

    def backward(self, chunks: list[Rollout], targets: list[tuple[Tensor, Tensor]]
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """Accumulates the outer loss's gradient into every parameter's ``.grad`` (zero
        them first) and returns ``(loss, aux)``: the outer loss (detached) and, in
        ``aux``, each chunk's loss (``"chunks"``), the inner losses, the active fractions
        and the outer chunks' mean loss parts (``"part/<name>"``)."""
        xs, terms, data = self.inputs(chunks, targets)
        params = dict(self.policy.named_parameters())
        (g_params, g_x, g_terms), (loss, aux) = self.fn(
            {n: params[n].detach() for n in self.inner}, [x.detach() for x in xs],
            [m.detach() for m in terms], data)
        torch.autograd.backward([*xs, *terms], [*g_x, *g_terms])
        with torch.no_grad():
            for n, g in g_params.items():
                p = params[n]
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.add_(g)
        return loss, aux
