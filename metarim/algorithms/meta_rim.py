r"""Meta-RIM: fast, masked adaptation of the RIM modules inside long sequences; slow
meta-learning of the attention, encoders and heads.

One :meth:`MetaRIM.step` reads ``C = num_steps // chunk_length`` consecutive chunks of
``chunk_length`` steps from each of ``num_envs`` envs. Every env keeps running across
chunks and across updates, so each column is one long sequence of concatenated
episodes (of one training task per env). Let :math:`\theta` be the fast parameters (the
per-module recurrent weights of the RIM mechanisms, ``fast_params="modules"``, the
default; ``"attention"`` swaps the roles: the two attentions are fast and the
mechanisms slow), :math:`\phi` the slow ones, and
:math:`a_i \in [0,1]^N` the activity of chunk :math:`i`'s modules,
``reduce_activity(masks, selection)``: with ``selection="any"`` (default) the modules
the input attention selected at some step of the chunk, with ``"topk"`` the ``k`` it
selected most often. With :math:`\theta_0 = \theta`:

.. math::
    \theta_{i+1} = \theta_i - \alpha\, M(a_i) \odot \nabla_{\theta_i} L_i(\theta_i, \phi),
    \qquad i = 0, \dots, C-2,

    \mathcal{L}_{outer}(\theta, \phi) = \frac{1}{C} \sum_{i=0}^{C-1} L_i(\theta_i, \phi),

    (\theta, \phi) \gets \mathrm{Adam}\big(\nabla_{\theta, \phi} \mathcal{L}_{outer}\big),

(``outer_chunks="all"``, the default: every chunk's loss under the weights adapted on
the chunks before it; ``"adapted"`` is the MAML split, the mean over
:math:`i = 1, \dots, C-1` only, with which Meta-RIM stalls at ~0.6 success on
GoToLocalS6N2 in ``docs/results.md``), where
:math:`L_i` is the clipped PPO surrogate of chunk :math:`i` (with value and
entropy terms, see :func:`~metarim.algorithms.objectives.rollout_loss` with
``kind="ppo"``) with GAE advantages computed over the whole ``num_steps`` sequence
(:func:`~metarim.algorithms.objectives.sequence_targets`: only the last chunk
bootstraps), chunk :math:`i` is *collected* by :math:`(\theta_i, \phi)`, and the
gradient flows through every inner step (second order; ``first_order=True`` treats each
:math:`\nabla_{\theta_i} L_i` as a constant). The chunks are collected once (a
first-order pass with A2C inner steps, so that chunk :math:`i` is collected by the
online-adapted :math:`\theta_i`); then ``epochs`` passes split the env columns into
minibatches of ``batch_size // num_steps`` columns and take one Adam step per minibatch,
each time re-running the inner chain on those columns from the current
:math:`(\theta, \phi)`. For the first minibatch the ratio to the collecting policy is
1 on chunk 0 and close to 1 on later chunks (the collection pass adapted with A2C steps
on chunk-local advantages, the chain here with the PPO loss on sequence advantages), so
:math:`L_i` there has about the A2C policy gradient; the clipping matters as the
parameters move over minibatches and epochs, where it keeps the re-used data
trustworthy (PPO's reason for clipping). ``losses/approx_kl`` and ``losses/clip_frac``
report how far they moved. The memory is detached at chunk boundaries
(each chunk is re-run from its stored memory) and, with ``reset_memory=True`` (default),
zeroed at episode starts: what carries over from one episode to the next is the fast
weights, not the activations. With ``meta_window=w`` (``0``, the default: the whole
chunk) every chunk loss, inner and outer, the collection pass's included, is re-run as
``chunk_length / w`` windows of ``w`` steps per column, each from its stored
collection-time memory, in one batched call (truncated backprop, as PPO's
``recurrence``): :math:`L_i` keeps its value up to the parameters' change since
collection, its gradient drops the paths through the memory across window starts, and
the chain's sequential depth falls from ``chunk_length`` to ``w`` steps per chunk.

After the outer step the fast weights are either

* ``fast_weights="carry"`` (default): moved by the inner progress of this update's
  collection pass, :math:`\theta \gets \theta^{Adam} + (\theta_C - \theta_0)`, where
  :math:`\theta_C` also includes a step on the last chunk, so adaptation continues across
  updates; or
* ``"reset"``: left at the meta-learned initial values :math:`\theta` (MAML style), so
  every update adapts from the same starting point.

``docs/meta_learners.md`` gives the measurement behind the default.

References:
    Madan, Ke, Goyal, Schölkopf, Bengio. "Fast and Slow Learning of Recurrent
    Independent Mechanisms". ICLR 2021. arXiv:2105.08710.
    Goyal et al. "Recurrent Independent Mechanisms". ICLR 2021. arXiv:1909.10893.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

import torch

from metarim.algorithms.base import Learner, adam, build_policy, register_learner
from metarim.algorithms.common import (
    EpisodeWindow,
    make_collector,
    make_envs,
    make_task_samplers,
    parameter_values,
)
from metarim.algorithms.meta_chain import FunctionalChain, unsupported_reason
from metarim.algorithms.objectives import rollout_loss, select_columns, sequence_targets
from metarim.config import TrainConfig
from metarim.meta.backends import quiet_nonleaf_grad
from metarim.meta.functional import adapt_in_place
from metarim.meta.maml import MaskedMAML
from metarim.meta.partition import reduce_activity
from metarim.rl.rollout import Rollout

__all__ = ["MetaRIM"]


@register_learner("metarim")
class MetaRIM(Learner):
    """Meta-RIM learner (see the module docstring for the update).

    Args:
        config: ``memory`` must be ``"rim"``; uses ``inner_lr``, ``chunk_length``,
            ``num_steps``, ``num_envs``, ``first_order``, ``fast_weights``,
            ``reset_memory``, ``selection``, ``fast_params``, ``meta_window``, ``lr`` and
            the A2C coefficients.

    Attributes:
        meta: the :class:`~metarim.meta.maml.MaskedMAML` wrapper of :attr:`policy`.
        train_tasks, held_out_tasks: the task split (one training task per env column).
    """

    adaptation_rule = "masked_sgd"
    default_inner_lr = 10.0
    """A masked step on the module weights only: their gradients are ~100x smaller than a
    whole policy's, and at 0.1 the step changes nothing measurable
    (``benchmarks/inner_lr.py``, docs/meta_learners.md)."""
    supports_env_worker = True
    supports_compile = True
    supports_learnable_lr = True
    supports_selection = True
    supports_fast_params = True

    @classmethod
    def default_inner_lr_of(cls, config: TrainConfig) -> float:
        """10 with the modules fast; 0.1 with the attentions fast (``fast_params="attention"``):
        at 10 one masked step on the attentions drives the action probabilities to 0/1
        (``benchmarks/inner_lr.py --fast-params attention``, docs/meta_learners.md)."""
        return 0.1 if config.fast_params == "attention" else cls.default_inner_lr

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Also: a RIM memory (the masked step adapts its modules) and at least two chunks
        of ``chunk_length`` in ``num_steps`` (one inner, one outer)."""
        super().check_config(config)
        if config.memory != "rim":
            raise ValueError(f"algo='metarim' needs memory='rim', got {config.memory!r}")
        if config.num_steps % config.chunk_length or config.num_steps // config.chunk_length < 2:
            raise ValueError(
                f"chunk_length={config.chunk_length} must divide num_steps={config.num_steps} "
                "into at least 2 chunks (one inner, one outer)"
            )
        if config.meta_window and config.chunk_length % config.meta_window:
            raise ValueError(f"meta_window={config.meta_window} must divide chunk_length={config.chunk_length}")

    @classmethod
    def adaptation_rates(cls, state: Mapping[str, Any]) -> Mapping[str, torch.Tensor] | None:
        """The learned Meta-SGD rates of a ``learnable_lr`` run (``state["inner_lrs"]``)."""
        return state.get("inner_lrs")

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)  # config is now complete (prepare_config, in place)
        torch.manual_seed(config.seed)
        self.train_tasks, self.held_out_tasks = make_task_samplers(config)
        tasks = [self.train_tasks.tasks[b % len(self.train_tasks.tasks)] for b in range(config.num_envs)]
        self.envs = make_envs(config, tasks, config.num_envs, seed=config.seed, vocab=self.vocab,
                              worker=config.env_worker)
        self.policy = build_policy(config, int(self.envs.single_action_space.n), self.vocab)
        self.meta = MaskedMAML(self.policy, config.inner_lr, first_order=config.first_order,
                               learnable_lr=config.learnable_lr, fast=config.fast_params,
                               reduction=config.selection,
                               k=config.k if config.selection == "topk" else None)
        groups = [{"params": list(self.policy.parameters())}]
        if self.meta.lrs is not None:  # Meta-SGD: the rates are meta-parameters too
            groups.append({"params": list(self.meta.lrs), "lr": config.inner_lr_lr})
        self.optimizer = adam(groups, config.lr, config.adam_eps)
        self.num_chunks = config.num_steps // config.chunk_length
        self.columns = max(1, config.batch_size // config.num_steps)
        """Env columns per minibatch: ``batch_size`` frames of whole sequences."""
        self.actor = copy.deepcopy(self.policy)
        r"""A plain copy that acts during collection, holding :math:`(\theta_i, \phi)`: the
        collection pass is first order and nothing differentiates through it, so it needs
        no differentiable clone, and a plain module can be compiled (``compile=True``)."""
        fast = set(self.meta.partition.fast)
        for name, p in self.actor.named_parameters():
            p.requires_grad_(name in fast)
        if config.compile:
            self.actor.memory.compile(dynamic=False)
        self.chain: FunctionalChain | None = None
        """With ``compile`` (and no ``learnable_lr``): the meta-gradient as one compiled
        ``torch.func`` function (:mod:`metarim.algorithms.meta_chain`) instead of autograd
        through a differentiable clone; the same numbers up to float rounding."""
        if config.compile and unsupported_reason(config, self.meta.partition) is None:
            self.chain = FunctionalChain(self.meta, config, compile=True)
        self.collector = make_collector(self.envs, self.actor, config.chunk_length,
                                        reset_memory=config.reset_memory)
        self.recent = EpisodeWindow(trials=config.hidden_task)
        self.stateful = {"optimizer": self.optimizer, "collector": self.collector, "recent": self.recent}

    def step(self, tasks: Any = None) -> dict[str, float]:
        """One meta-update on ``num_chunks`` consecutive chunks of every env's sequence."""
        with quiet_nonleaf_grad():
            return self._step()

    def _step(self) -> dict[str, float]:
        c = self.config
        t0 = time.perf_counter()
        # 1) collection: chunk i is collected by (θ_i, φ), the fast weights adapting online
        start = parameter_values(self.policy)
        self._sync_actor()
        chunks: list[Rollout] = []
        for i in range(self.num_chunks):
            chunks.append(self.collector.collect())
            self.recent.extend(chunks[-1].episodes)
            if i < self.num_chunks - 1 or c.fast_weights == "carry":
                self._online_step(chunks[-1])
        actor = dict(self.actor.named_parameters())
        online = {n: actor[n].detach().clone() for n in self.meta.partition.fast}
        targets = sequence_targets(chunks, c)
        collect_s = time.perf_counter() - t0
        # 2) meta-training: epochs × minibatches of env columns, each through the inner chain
        inner: list[float] = []
        active: list[float] = []
        outer: list[float] = []
        norms: list[float] = []
        diag: dict[str, list[float]] = {"entropy": [], "approx_kl": [], "clip_frac": []}
        for _ in range(c.epochs):
            for cols in torch.randperm(c.num_envs).split(self.columns):
                part = [select_columns(r, cols) for r in chunks]
                tgt = [(a[:, cols], r[:, cols]) for a, r in targets]
                if self.chain is None:
                    loss, inn, act, parts = self._meta_loss(part, tgt)
                    norm = self.optimizer_step(loss, self.optimizer)
                else:
                    loss, inn, act, parts = self._chain_step(part, tgt)
                    norm = self.clip_and_step(self.optimizer)
                for k in diag:
                    diag[k].append(float(parts[k]))
                inner += inn
                active += act
                outer.append(loss.item())
                norms.append(float(norm))
        if c.fast_weights == "carry":
            self._carry(start, online)
        frames = sum(r.num_frames for r in chunks)
        self.frames += frames
        self.updates += 1
        elapsed = time.perf_counter() - t0
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        return {
            "frames": float(self.frames),
            **self.recent.metrics(),
            "losses/inner": mean(inner),
            "losses/outer": mean(outer),
            "losses/grad_norm": mean(norms),
            "meta/active_fraction": mean(active),
            **self._rate_metrics(),
            **{f"losses/{k}": mean(v) for k, v in diag.items()},
            "time/fps": frames / elapsed,
            "time/collect_s": collect_s,
            "time/update_s": elapsed - collect_s,
        }

    def _rate_metrics(self) -> dict[str, float]:
        """``meta/inner_lr_mean`` and ``_min``/``_max`` over every learnable rate."""
        if self.meta.lrs is None:
            return {}
        flat = torch.cat([r.detach().flatten() for r in self.meta.lrs])
        return {"meta/inner_lr_mean": float(flat.mean()), "meta/inner_lr_min": float(flat.min()),
                "meta/inner_lr_max": float(flat.max())}

    def _meta_loss(
        self, chunks: list[Rollout], targets: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[float], list[float], dict[str, torch.Tensor]]:
        """The inner chain over ``chunks`` and the outer loss (see module docstring);
        ``targets``: each chunk's ``(advantages, returns)`` from :func:`sequence_targets`.

        Returns the outer loss, the inner losses, the active fractions and the outer
        chunks' mean detached loss parts (entropy, approximate KL, clip fraction, ...)."""
        c = self.config
        learner = self.meta.clone()
        outer, inner, active, parts = [], [], [], []
        for i, (chunk, target) in enumerate(zip(chunks, targets)):
            loss, part, masks = rollout_loss(learner, chunk, c, kind="ppo", reset_memory=c.reset_memory,
                                             targets=target, window=c.meta_window)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss ({loss.item()}) at update {self.updates}")
            if i > 0 or c.outer_chunks == "all":
                outer.append(loss)
                parts.append(part)
            if i < len(chunks) - 1:
                inner.append(loss.item())
                act = self._activity(masks)
                active.append(float(act.mean()))
                learner.adapt(loss, active=act, retain_graph=True)
        return (torch.stack(outer).mean(), inner, active,
                {k: torch.stack([p[k] for p in parts]).mean() for k in parts[0]})

    def _chain_step(
        self, chunks: list[Rollout], targets: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[float], list[float], dict[str, torch.Tensor]]:
        """:meth:`_meta_loss` and its backward by :attr:`chain`: the gradient is left in
        the parameters' ``.grad`` (zeroed first); returns the same four things."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, aux = self.chain.backward(chunks, targets)
        bad = ~torch.isfinite(aux["chunks"])
        if bad.any():
            raise FloatingPointError(f"non-finite loss ({aux['chunks'][bad][0].item()}) at update {self.updates}")
        parts = {k.removeprefix("part/"): v for k, v in aux.items() if k.startswith("part/")}
        return loss, aux["inner"].tolist(), aux["active"].tolist(), parts

    @torch.no_grad()
    def _sync_actor(self) -> None:
        """The actor takes the policy's current values (and dtype)."""
        dtype = next(self.policy.parameters()).dtype
        if next(self.actor.parameters()).dtype != dtype:
            self.actor.to(dtype)
        for a, p in zip(self.actor.parameters(), self.policy.parameters()):
            a.copy_(p)

    def _online_step(self, chunk: Rollout) -> None:
        r"""The collection pass's inner step on the actor, in place and first order:
        :math:`\theta_{i+1} = \theta_i - \alpha\, M(a_i) \odot \nabla_{\theta_i} L_i`, with
        :math:`L_i` the A2C loss of the chunk just collected (``MaskedLearner.adapt``'s step,
        :func:`~metarim.meta.functional.adapt_in_place`)."""
        c = self.config
        loss, _, masks = rollout_loss(self.actor, chunk, c, reset_memory=c.reset_memory, window=c.meta_window)
        adapt_in_place(self.actor, loss, self.inner_rates(), self.meta.partition, self._activity(masks))
        actor = dict(self.actor.named_parameters())
        if not all(torch.isfinite(actor[n]).all() for n in self.meta.partition.fast):
            raise FloatingPointError(
                f"the inner step made the fast weights non-finite at update {self.updates} (inner_lr="
                f"{c.inner_lr}, fast_params={c.fast_params!r}); lower --inner-lr (benchmarks/inner_lr.py)")

    def _activity(self, masks: torch.Tensor) -> torch.Tensor:
        """The ``(N,)`` activity of a chunk's ``(T, B, N)`` selection masks that its masked
        step uses: ``reduce_activity`` with ``selection`` (``k`` modules for ``"topk"``)."""
        return reduce_activity(masks, self.meta.reduction, k=self.meta.k)

    def inner_rates(self) -> float | dict[str, torch.Tensor]:
        """The inner step size: ``inner_lr``, or with ``learnable_lr`` the current
        per-element rates by fast parameter name (detached copies)."""
        rates = self.meta.learning_rates()
        if isinstance(rates, dict):
            return {n: r.detach().clone() for n, r in rates.items()}
        return rates

    @torch.no_grad()
    def _carry(self, before: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor]) -> None:
        r""":math:`\theta \gets \theta^{Adam} + (\theta_C - \theta_0)` on the fast parameters,
        with :math:`\theta_C` the online-adapted values of the collection pass."""
        params = dict(self.policy.named_parameters())
        for name, value in adapted.items():
            params[name].add_(value - before[name])

    def state_dict(self) -> dict[str, Any]:
        """Policy, optimiser, collector (envs included), episode window and, with
        ``learnable_lr``, the inner rates (``"inner_lrs"``)."""
        return {
            **super().state_dict(),
            **({"inner_lrs": self.inner_rates()} if self.meta.lrs is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        if (self.meta.lrs is not None) != ("inner_lrs" in state):
            raise ValueError("checkpoint and config disagree on learnable inner rates (learnable_lr); "
                             "resume with the run's own config")
        super().load_state_dict(state)
        if self.meta.lrs is not None:
            with torch.no_grad():
                for name, rate in zip(self.meta.partition.fast, self.meta.lrs):
                    rate.copy_(state["inner_lrs"][name])

    def close(self) -> None:
        """Closes the envs."""
        self.envs.close()
