r"""PPO and A2C over recurrent actor-critics.

One :meth:`PPO.step` collects a ``(T, B)`` rollout, computes GAE advantages
(:func:`~metarim.rl.losses.gae`), cuts every env's column into windows of
``recurrence`` steps that start from the stored (detached) memory, and runs ``epochs``
passes of minibatch Adam on the clipped loss (:func:`~metarim.rl.losses.ppo_loss`).
Each window is re-run by one batched call of the policy, so an update has no Python
loop over envs, only over the ``recurrence`` steps inside the memory core.

With ``window_shift`` (torch-ac 1.4.0), every other epoch of the run cuts the windows
``h = recurrence // 2`` steps later, at :math:`t = h + jR` for :math:`j < T/R - 1` (the
last window of a column would run past it and is dropped). With ``memory_refresh`` as
well, each re-run window also writes its memory at the step where a window of the
other offset starts (:math:`t + h` for an unshifted window, :math:`t + R - h` for a
shifted one) back into a copy of the rollout's stored memory, detached, so the next
epoch starts those windows from memories of the current parameters, as torch-ac's
``exps.memory[inds + i + 1] = memory.detach()`` (the other positions it writes are
never read). Such a window runs as two policy calls, split at that step, with the
gradient flowing through the split.

A2C is the same loop with one epoch, one batch and :func:`~metarim.rl.losses.a2c_loss`.

References:
    Schulman, Wolski, Dhariwal, Radford, Klimov. "Proximal Policy Optimization
    Algorithms". arXiv:1707.06347, 2017. torch-ac 1.4.0 ``algos/ppo.py``
    (https://github.com/lcswillems/torch-ac) for the window shift and memory refresh.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from metarim.algorithms.base import Learner, adam, build_policy, register_learner
from metarim.algorithms.common import EpisodeWindow, make_collector, make_envs
from metarim.algorithms.objectives import policy_terms
from metarim.config import TrainConfig
from metarim.rl.losses import a2c_loss, gae, ppo_loss
from metarim.rl.policy import unique_rows
from metarim.rl.rollout import Rollout
from metarim.tasks.task import Task

__all__ = ["A2C", "PPO", "distinct_obs", "windows"]

State = tuple[Tensor, ...]


def distinct_obs(obs: dict[str, Tensor]) -> dict[str, Tensor]:
    """``image (T, B, 7, 7, 3)`` and ``mission (T, B, L)`` → tables of their distinct rows
    and ``(T, B)`` indices into them, the form :meth:`ActorCritic.encode_indexed` reads.

    Views repeat a lot within a rollout (no-op actions, walls), missions even more, so a
    minibatch encodes each distinct row once instead of once per frame.
    """
    out = {}
    for key in ("image", "mission"):
        x = obs[key]
        table, index = unique_rows(x.reshape(x.shape[0] * x.shape[1], -1))
        out[key] = table.view(-1, *x.shape[2:])
        out[f"{key}_index"] = index.view(x.shape[:2])
    return out


def windows(x: Tensor, length: int) -> Tensor:
    """``(T, B, ...)`` → ``(length, T // length * B, ...)``; window ``i * B + b``."""
    steps, batch = x.shape[:2]
    y = x.reshape(steps // length, length, batch, *x.shape[2:]).transpose(0, 1)
    return y.reshape(length, steps // length * batch, *x.shape[2:])


@register_learner("ppo")
class PPO(Learner):
    """Proximal policy optimisation with GAE and a recurrence window (see module doc).

    Args:
        config: the run configuration (``num_envs``, ``num_steps``, ``epochs``, ...).
    """

    supports_env_worker = True
    supports_compile = True
    supports_window_shift = True

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        torch.manual_seed(config.seed)
        self.envs = make_envs(config, Task(config.env), config.num_envs, seed=config.seed, vocab=self.vocab,
                              worker=config.env_worker)
        self.policy = build_policy(config, int(self.envs.single_action_space.n), self.vocab)
        if config.compile and getattr(self.policy.memory, "compiles", True):  # in place: same state-dict keys
            self.policy.memory.compile(dynamic=False)
        # not fused=True: that kernel is 0.5 ms cheaper per step (~1.5 % of an update) but
        # rounds differently, and DoorKey-5x5 is chaotic enough that seed 0 then missed the
        # 150k-frame budget docs/results.md states (0.26 success at 150k, measured)
        self.optimizer = adam(self.policy.parameters(), config.lr, config.adam_eps)
        self.collector = make_collector(self.envs, self.policy, config.num_steps)
        self.recent = EpisodeWindow(trials=config.hidden_task)
        self.stateful = {"optimizer": self.optimizer, "collector": self.collector, "recent": self.recent}

    # -- one training step ---------------------------------------------------------
    def step(self, tasks: Any = None) -> dict[str, float]:
        """Collects one rollout and updates the policy on it."""
        t0 = time.perf_counter()
        rollout = self.collector.collect()
        t1 = time.perf_counter()
        losses = self.update(rollout)
        t2 = time.perf_counter()
        self.frames += rollout.num_frames
        self.updates += 1
        self.recent.extend(rollout.episodes)
        return {
            "frames": float(self.frames),
            **self.recent.metrics(),
            **{f"losses/{k}": v for k, v in losses.items()},
            "time/fps": rollout.num_frames / (t2 - t0),
            "time/collect_s": t1 - t0,
            "time/update_s": t2 - t1,
        }

    def _loss(self, b: dict[str, Tensor], split: int = 0) -> tuple[Tensor, dict[str, Tensor], State | None]:
        """The PPO loss of the minibatch of windows ``b``, its parts, and with ``split``
        (``0 < split < recurrence``) the memory before step ``split`` of each window: the
        windows then run as two policy calls around that step (same function)."""
        c = self.config
        obs = {k: b[k] for k in ("image", "mission", "image_index", "mission_index") if k in b}
        mid = None
        if split:
            def part(sl: slice) -> dict[str, Tensor]:  # the index tables are time-first
                return {k: (v[sl] if k.endswith("_index") else v) for k, v in obs.items()}

            first, second = slice(None, split), slice(split, None)
            logits_a, values_a, mid, _ = self.policy(part(first), b["memory"], b["starts"][first])
            logits_b, values_b, _, _ = self.policy(part(second), mid, b["starts"][second])
            logits, values = torch.cat([logits_a, logits_b]), torch.cat([values_a, values_b])
        else:
            logits, values, _, _ = self.policy(obs, b["memory"], b["starts"])
        logp, entropy = policy_terms(logits, b["actions"])
        adv = b["advantages"]
        if c.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        loss, parts = ppo_loss(
            logp, b["logprobs"], adv, values, b["values"], b["returns"], entropy,
            clip=c.clip, value_coef=c.value_coef, entropy_coef=c.entropy_coef,
        )
        return loss, parts, mid

    def update(self, rollout: Rollout) -> dict[str, float]:
        """``epochs`` passes of minibatch gradient steps on ``rollout``."""
        c = self.config
        adv, ret = gae(rollout.rewards, rollout.values, rollout.ends, rollout.last_value,
                       gamma=c.gamma, lam=c.gae_lambda)
        R = c.recurrence
        tables = distinct_obs(rollout.obs)
        steps = {
            "image_index": tables["image_index"], "mission_index": tables["mission_index"],
            "actions": rollout.actions, "logprobs": rollout.logprobs, "values": rollout.values,
            "starts": rollout.starts, "advantages": adv, "returns": ret}
        T, B = rollout.actions.shape[:2]
        half = R // 2
        # by epoch parity: (offset of the first window, the windows); parity 1 is shifted
        seqs = [(0, {k: windows(v, R) for k, v in steps.items()})]
        if c.window_shift:  # windows at half + j R, j < T/R - 1
            seqs.append((half, {k: windows(v[half : T - R + half], R) for k, v in steps.items()}))
        refresh = c.memory_refresh and half > 0
        memory = tuple(m.clone() for m in rollout.memory) if refresh else rollout.memory
        per_batch = c.batch_size // R
        sums: dict[str, float] = {}
        count = 0
        for epoch in range(self.epochs):
            h, seq = seqs[(self.updates * self.epochs + epoch) % len(seqs)]
            n_win = seq["actions"].shape[1]
            mem0 = tuple(m[h::R][: n_win // B].reshape(-1, *m.shape[2:]) for m in memory)
            split = (R - h if h else half) if refresh else 0  # where a window of the other offset starts
            order = torch.randperm(n_win)
            for i in range(0, n_win, per_batch):
                idx = order[i : i + per_batch]
                b = {k: v[:, idx] for k, v in seq.items()}
                b["memory"] = tuple(m[idx] for m in mem0)
                b["image"], b["mission"] = tables["image"], tables["mission"]
                loss, parts, mid = self._loss(b, split)
                if mid is not None:  # window j starts at step h + (j // B) R of column j % B
                    rows, cols = h + torch.div(idx, B, rounding_mode="floor") * R + split, idx % B
                    for m, m_mid in zip(memory, mid):
                        m[rows, cols] = m_mid.detach()
                grad_norm = self.optimizer_step(loss, self.optimizer)
                parts["grad_norm"] = grad_norm
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
        return {k: v / count for k, v in sums.items()}

    @property
    def epochs(self) -> int:
        """Passes over each rollout."""
        return self.config.epochs

    def close(self) -> None:
        """Closes the envs."""
        self.envs.close()


@register_learner("a2c")
class A2C(PPO):
    r"""Synchronous advantage actor-critic: one gradient step per rollout (no
    ``window_shift``/``memory_refresh``).

    .. math:: L = -\mathbb{E}[\log\pi(a|s) A] + c_v \mathbb{E}(V - R)^2 - c_H \mathbb{E}H
    """

    supports_window_shift = False

    @property
    def epochs(self) -> int:
        """One pass."""
        return 1

    def update(self, rollout: Rollout) -> dict[str, float]:
        """One gradient step on the whole rollout."""
        c = self.config
        adv, ret = gae(rollout.rewards, rollout.values, rollout.ends, rollout.last_value,
                       gamma=c.gamma, lam=c.gae_lambda)
        R = c.recurrence
        tables = distinct_obs(rollout.obs)
        obs = {"image": tables["image"], "mission": tables["mission"],
               "image_index": windows(tables["image_index"], R),
               "mission_index": windows(tables["mission_index"], R)}
        mem0 = tuple(m[::R].reshape(-1, *m.shape[2:]) for m in rollout.memory)
        logits, values, _, _ = self.policy(obs, mem0, windows(rollout.starts, R))
        logp, entropy = policy_terms(logits, windows(rollout.actions, R))
        loss, parts = a2c_loss(logp, windows(adv, R), values, windows(ret, R), entropy,
                               value_coef=c.value_coef, entropy_coef=c.entropy_coef)
        parts["grad_norm"] = self.optimizer_step(loss, self.optimizer)
        return {k: float(v) for k, v in parts.items()}
