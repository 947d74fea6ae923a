"""Rollouts over vector envs with recurrent memory.

:class:`RolloutCollector` steps ``B`` envs for ``T`` steps and returns a time-major
:class:`Rollout`. Each column ``b`` is one env's experience in order, so it is a long
sequence of concatenated episodes; ``starts[t, b]`` marks the observations that begin
an episode (where the memory is reset, unless ``reset_memory=False``, as Meta-RIM's
cross-episode sequences may want) and ``ends[t, b]`` the actions after which one ended.
The memory *before* each step and the RIM activity masks are stored, so a learner can
re-run any window of the sequence from its stored (detached) memory.

The collector keeps its envs, last observation and memory between calls; its
:meth:`~RolloutCollector.state_dict` is plain data, so a run resumes bit-for-bit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Rollout", "RolloutCollector", "sample_actions"]

State = tuple[Tensor, ...]


@dataclass
class Rollout:
    """A ``(T, B)`` batch of experience (see module docstring for the masks)."""

    obs: dict[str, Tensor]
    actions: Tensor
    logprobs: Tensor
    values: Tensor
    rewards: Tensor
    starts: Tensor
    ends: Tensor
    memory: State
    masks: Tensor | None
    last_value: Tensor
    episodes: list[dict[str, float]] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        """``T * B``."""
        return self.actions.numel()


def sample_actions(logits: Tensor, *, greedy: bool = False) -> tuple[Tensor, Tensor]:
    """Samples (or takes the argmax of) a categorical; returns ``(actions, log-probs)``."""
    logp_all = torch.log_softmax(logits, dim=-1)
    if greedy:
        actions = logits.argmax(-1)
    else:
        actions = torch.multinomial(logp_all.exp().reshape(-1, logits.shape[-1]), 1)
        actions = actions.view(logits.shape[:-1])
    return actions, logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


class RolloutCollector:
    """Collects :class:`Rollout` batches from ``envs`` with ``policy``.

    Args:
        envs: a gymnasium vector env with same-step autoreset (``make_vec_env``).
        policy: a module ``(obs, state, done) -> (logits, value, state, masks)``.
        num_steps: ``T``, steps per env per rollout.
        reset_memory: zero the memory at episode starts.
    """

    def __init__(
        self, envs: Any, policy: nn.Module, num_steps: int, *, reset_memory: bool = True
    ) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps} must be >= 1")
        self.envs, self.policy, self.num_steps = envs, policy, num_steps
        self.reset_memory = reset_memory
        self.num_envs = envs.num_envs
        obs, _ = envs.reset()
        self.obs = {k: np.asarray(v) for k, v in obs.items()}
        self.start = np.ones(self.num_envs, dtype=bool)
        self.memory = policy.initial_state(self.num_envs)
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)

    @torch.no_grad()
    def collect(self) -> Rollout:
        """Steps every env ``num_steps`` times and returns the batch."""
        with contextlib.ExitStack() as stack:
            for m in self.policy.modules():
                if hasattr(m, "cached"):  # mission codes are constant during a rollout
                    stack.enter_context(m.cached())
            return self._collect()

    def _collect(self) -> Rollout:
        # Per step, only the policy call and the env step touch torch or the envs; the
        # rest is NumPy writes into preallocated arrays and list appends, stacked once at
        # the end (each small torch op costs a few microseconds of dispatch).
        T, B = self.num_steps, self.num_envs
        obs_buf = {k: np.empty((T, B, *v.shape[1:]), dtype=v.dtype) for k, v in self.obs.items()}
        starts, ends = np.empty((T, B), dtype=bool), np.empty((T, B), dtype=bool)
        rewards = np.empty((T, B), dtype=np.float32)
        mem_steps: list[State] = []
        actions, logprobs, values, masks = [], [], [], []
        episodes: list[dict[str, float]] = []
        for t in range(T):
            for k, v in self.obs.items():
                obs_buf[k][t] = v
            starts[t] = self.start
            mem_steps.append(self.memory)
            obs_t = {k: torch.from_numpy(v[t : t + 1]) for k, v in obs_buf.items()}
            done = torch.from_numpy(starts[t : t + 1]) if self.reset_memory else None
            logits, value, self.memory, mask = self.policy(obs_t, self.memory, done)
            act, logp = sample_actions(logits[0])
            actions.append(act)
            logprobs.append(logp)
            values.append(value[0])
            if mask is not None:
                masks.append(mask[0])
            obs, rew, term, trunc, _ = self.envs.step(act.numpy())
            end = np.logical_or(term, trunc)
            rewards[t] = rew
            ends[t] = end
            self.ep_return += rew
            self.ep_length += 1
            if end.any():
                for b in np.flatnonzero(end):
                    episodes.append({
                        "return": float(self.ep_return[b]),
                        "length": int(self.ep_length[b]),
                        "success": float(bool(term[b]) and rew[b] > 0),
                        "env": int(b),
                    })
                self.ep_return[end] = 0.0
                self.ep_length[end] = 0
            self.obs = {k: np.asarray(v) for k, v in obs.items()}
            self.start = end
        obs_t = {k: torch.from_numpy(v).unsqueeze(0) for k, v in self.obs.items()}
        done = torch.from_numpy(self.start).unsqueeze(0) if self.reset_memory else None
        _, last_value, _, _ = self.policy(obs_t, self.memory, done)
        return Rollout(
            obs={k: torch.from_numpy(v) for k, v in obs_buf.items()},
            actions=torch.stack(actions), logprobs=torch.stack(logprobs).float(),
            values=torch.stack(values).float(), rewards=torch.from_numpy(rewards),
            starts=torch.from_numpy(starts), ends=torch.from_numpy(ends),
            memory=tuple(torch.stack(m) for m in zip(*mem_steps)),
            masks=torch.stack(masks) if masks else None,
            last_value=last_value[0], episodes=episodes,
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: observation, memory, episode counters and env states."""
        if not hasattr(self.envs, "envs"):
            raise RuntimeError("only synchronous vector envs can be checkpointed")
        return {
            "obs": {k: torch.from_numpy(v.copy()) for k, v in self.obs.items()},
            "start": torch.from_numpy(self.start.copy()),
            "memory": [m.clone() for m in self.memory],
            "ep_return": torch.from_numpy(self.ep_return.copy()),
            "ep_length": torch.from_numpy(self.ep_length.copy()),
            "envs": [e.get_state() for e in self.envs.envs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`, replaying each env's episode so far."""
        if not hasattr(self.envs, "envs") or len(state["envs"]) != self.num_envs:
            raise ValueError("collector state does not match these envs")
        for env, s in zip(self.envs.envs, state["envs"]):
            env.set_state(s)
        self.obs = {k: v.numpy().copy() for k, v in state["obs"].items()}
        self.start = state["start"].numpy().copy()
        self.memory = tuple(m.clone() for m in state["memory"])
        self.ep_return = state["ep_return"].numpy().copy()
        self.ep_length = state["ep_length"].numpy().copy()
