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

:func:`play` is the acting loop without training data: it yields one :class:`Step` per
env step (evaluation, GIFs, module activity, failure analyses).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metarim.envs.protocols import CheckpointableVecEnv, PipelinedVecEnv

__all__ = ["Rollout", "RolloutCollector", "Step", "play", "sample_actions"]

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
    """Samples (or takes the argmax of) a categorical; returns ``(actions, log-probs)``.

    Raises:
        FloatingPointError: the logits are not finite (diverged parameters), instead of
            ``torch.multinomial``'s ``RuntimeError``.
    """
    logp_all = torch.log_softmax(logits, dim=-1)
    if greedy:
        actions = logits.argmax(-1)
    else:
        try:
            actions = torch.multinomial(logp_all.exp().reshape(-1, logits.shape[-1]), 1)
        except RuntimeError:
            if bool(torch.isfinite(logp_all).all()):
                raise
            raise FloatingPointError("the policy's action probabilities are not finite: its parameters "
                                     "diverged (Meta-RIM: lower --inner-lr, benchmarks/inner_lr.py)") from None
        actions = actions.view(logits.shape[:-1])
    return actions, logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


class RolloutCollector:
    """Collects :class:`Rollout` batches from ``envs`` with ``policy``.

    Args:
        envs: a vector env with same-step autoreset (``make_vec_env``); a
            :class:`~metarim.envs.protocols.PipelinedVecEnv` is stepped slice by slice,
            and :meth:`state_dict` needs a
            :class:`~metarim.envs.protocols.CheckpointableVecEnv`.
        policy: a module ``(obs, state, done) -> (logits, value, state, masks)``.
        num_steps: ``T``, steps per env per rollout.
        reset_memory: zero the memory at episode starts.
    """

    def __init__(
        self, envs: CheckpointableVecEnv, policy: nn.Module, num_steps: int, *,
        reset_memory: bool = True
    ) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps} must be >= 1")
        self.envs, self.policy, self.num_steps = envs, policy, num_steps
        self.piped = isinstance(envs, PipelinedVecEnv)
        self.reset_memory = reset_memory
        self.num_envs = envs.num_envs
        self.restart()

    def restart(self) -> None:
        """Starts a fresh episode in every env (``envs.reset()``, which continues each env's
        seeded stream), with the memory at its initial state and the episode counters at
        zero, as at construction; unfinished episodes are dropped (a task schedule's switch,
        :meth:`metarim.algorithms.base.Learner.set_phase`)."""
        n = self.num_envs
        obs, _ = self.envs.reset()
        self.obs = {k: np.asarray(v) for k, v in obs.items()}
        self.start = np.ones(n, dtype=bool)
        self.memory = self.policy.initial_state(n)
        self.ep_return = np.zeros(n)
        self.ep_length = np.zeros(n, dtype=np.int64)

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
        #
        # With a WorkerVecEnv the envs are stepped slice by slice in its process: slice j's
        # policy call for step t runs while the worker steps slice j - 1, so the policy
        # and the envs overlap. Each slice's memory, actions and values are kept apart and
        # joined along the batch axis at the end; with one slice this is the plain loop.
        T, B = self.num_steps, self.num_envs
        piped = self.piped
        slices = self.envs.slices if piped else [slice(0, B)]
        obs_buf = {k: np.empty((T, B, *v.shape[1:]), dtype=v.dtype) for k, v in self.obs.items()}
        starts, ends = np.empty((T, B), dtype=bool), np.empty((T, B), dtype=bool)
        rewards = np.empty((T, B), dtype=np.float32)
        memory = [tuple(m[s] for m in self.memory) for s in slices]
        mem_steps: list[list[State]] = [[] for _ in slices]
        actions, logprobs, values, masks = ([[] for _ in slices] for _ in range(4))
        episodes: list[dict[str, float]] = []

        def act(t: int, j: int) -> np.ndarray:
            s = slices[j]
            for k, v in self.obs.items():
                obs_buf[k][t, s] = v[s]
            starts[t, s] = self.start[s]
            mem_steps[j].append(memory[j])
            obs_t = {k: torch.from_numpy(v[t : t + 1, s]) for k, v in obs_buf.items()}
            done = torch.from_numpy(starts[t : t + 1, s]) if self.reset_memory else None
            logits, value, memory[j], mask = self.policy(obs_t, memory[j], done)
            a, logp = sample_actions(logits[0])
            actions[j].append(a)
            logprobs[j].append(logp)
            values[j].append(value[0])
            if mask is not None:
                masks[j].append(mask[0])
            return a.numpy()

        def record(t: int, s: slice, obs: dict[str, Any], rew: Any, term: Any, trunc: Any) -> None:
            end = np.logical_or(term, trunc)
            rewards[t, s] = rew
            ends[t, s] = end
            self.ep_return[s] += rew
            self.ep_length[s] += 1
            if end.any():
                for i in np.flatnonzero(end):
                    b = s.start + int(i)
                    episodes.append({
                        "return": float(self.ep_return[b]),
                        "length": int(self.ep_length[b]),
                        "success": float(bool(term[i]) and rew[i] > 0),
                        "env": b,
                    })
                    self.ep_return[b] = 0.0
                    self.ep_length[b] = 0
            for k, v in obs.items():
                self.obs[k][s] = v
            self.start[s] = end

        self.obs = {k: np.array(v) for k, v in self.obs.items()}  # own, writable copies
        self.start = np.array(self.start)
        if piped:
            for t in range(T):
                for j in range(len(slices)):
                    if t > 0:  # the answer to this slice's previous step (answers are FIFO)
                        jj, obs, rew, term, trunc = self.envs.step_wait()
                        record(t - 1, slices[jj], obs, rew, term, trunc)
                    self.envs.step_async(j, act(t, j))
            for _ in slices:
                jj, obs, rew, term, trunc = self.envs.step_wait()
                record(T - 1, slices[jj], obs, rew, term, trunc)
        else:
            for t in range(T):
                obs, rew, term, trunc, _ = self.envs.step(act(t, 0))
                record(t, slices[0], {k: np.asarray(v) for k, v in obs.items()}, rew, term, trunc)
        self.memory = memory[0] if len(memory) == 1 else tuple(torch.cat(ms) for ms in zip(*memory))
        obs_t = {k: torch.from_numpy(v).unsqueeze(0) for k, v in self.obs.items()}
        done = torch.from_numpy(self.start).unsqueeze(0) if self.reset_memory else None
        _, last_value, _, _ = self.policy(obs_t, self.memory, done)

        def join(xs: list[Any]) -> Tensor:  # per slice, a list over steps -> (T, B, ...)
            parts = [torch.stack(list(x)) for x in xs]
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

        return Rollout(
            obs={k: torch.from_numpy(v) for k, v in obs_buf.items()},
            actions=join(actions), logprobs=join(logprobs).float(),
            values=join(values).float(), rewards=torch.from_numpy(rewards),
            starts=torch.from_numpy(starts), ends=torch.from_numpy(ends),
            memory=tuple(join(ms) for ms in zip(*[list(zip(*steps)) for steps in mem_steps])),
            masks=join(masks) if masks[0] else None,
            last_value=last_value[0], episodes=episodes,
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: observation, memory, episode counters and env states."""
        env_states = self.envs.get_states()
        return {
            "obs": {k: torch.from_numpy(v.copy()) for k, v in self.obs.items()},
            "start": torch.from_numpy(self.start.copy()),
            "memory": [m.clone() for m in self.memory],
            "ep_return": torch.from_numpy(self.ep_return.copy()),
            "ep_length": torch.from_numpy(self.ep_length.copy()),
            "envs": env_states,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`, replaying each env's episode so far."""
        if len(state["envs"]) != self.num_envs:
            raise ValueError("collector state does not match these envs")
        self.envs.set_states(state["envs"])
        self.obs = {k: v.numpy().copy() for k, v in state["obs"].items()}
        self.start = state["start"].numpy().copy()
        self.memory = tuple(m.clone() for m in state["memory"])
        self.ep_return = state["ep_return"].numpy().copy()
        self.ep_length = state["ep_length"].numpy().copy()


@dataclass
class Step:
    """One step of :func:`play` over ``B`` envs (``B = 1`` for a single env)."""

    obs: dict[str, np.ndarray]
    """The observations acted on, ``(B, ...)`` per key."""
    actions: np.ndarray
    """``(B,)`` actions taken."""
    reward: np.ndarray
    """``(B,)`` rewards received."""
    terminated: np.ndarray
    """``(B,)`` bool: the episode ended (success or failure)."""
    truncated: np.ndarray
    """``(B,)`` bool: the episode hit its step limit."""
    masks: Tensor | None
    """``(B, N)`` RIM activity masks of this step, ``None`` for a memory without modules."""

    @property
    def done(self) -> np.ndarray:
        """``(B,)`` bool: ``terminated | truncated``."""
        return np.logical_or(self.terminated, self.truncated)


@torch.no_grad()
def play(
    policy: nn.Module, envs: Any, *, greedy: bool = False, reset_memory: bool = True,
    obs: dict[str, Any] | None = None,
) -> Iterator[Step]:
    r"""Acts with ``policy`` in ``envs``, one :class:`Step` per env step, without gradients.

    At each step the policy reads the observations :math:`o_t` and its memory
    :math:`h_t` (zeroed where an episode starts, when ``reset_memory``), and the action is
    :math:`a_t \sim \pi(\cdot \mid o_t, h_t)` (``argmax`` when ``greedy``), drawn by
    :func:`sample_actions` from torch's global generator: with the same seeds, the same
    episodes.

    Args:
        policy: a module ``(obs, state, done) -> (logits, value, state, masks)``.
        envs: a vector env with same-step autoreset (``make_vec_env``; it has
            ``num_envs``): the loop runs until the caller stops iterating. Or a single
            env (no ``num_envs``): the loop plays one episode and stops, leaving the
            env at the episode's last state (a caller may render or inspect it).
        greedy: take the most probable action instead of sampling.
        reset_memory: zero the memory where an episode starts (as in training).
        obs: the current observation (from ``envs.reset()`` by the caller, e.g. one
            with an explicit seed); default: ``envs.reset()`` here.

    The caller owns ``envs`` and closes it: a generator's ``finally`` runs only when the
    generator is closed or collected, which after a ``break`` is not a fixed point in
    time, so closing here would leave the envs open for an unknown while or close envs
    the caller still uses.

    Example:
        >>> import gymnasium as gym
        >>> from metarim.envs.minigrid import make_env
        >>> from metarim.rl.policy import ActorCritic
        >>> from metarim.tasks.task import Task
        >>> from metarim.tasks.vocab import Vocab
        >>> vocab = Vocab()
        >>> env = make_env(Task("BabyAI-GoToLocalS6N2-v0"), vocab, seed=0)
        >>> policy = ActorCritic(int(env.action_space.n), vocab.max_size, hidden_size=16)
        >>> steps = list(play(policy, env))
        >>> bool(steps[-1].done[0]) and not any(s.done[0] for s in steps[:-1])
        True
    """
    single = getattr(envs, "num_envs", None) is None
    if obs is None:
        obs, _ = envs.reset()
    num_envs = 1 if single else int(envs.num_envs)
    memory = policy.initial_state(num_envs)
    start = np.ones(num_envs, dtype=bool)
    while True:
        batch = {k: np.asarray(v)[None] if single else np.asarray(v) for k, v in obs.items()}
        o = {k: torch.from_numpy(v).unsqueeze(0) for k, v in batch.items()}
        done = torch.from_numpy(start).unsqueeze(0) if reset_memory else None
        logits, _, memory, masks = policy(o, memory, done)
        actions, _ = sample_actions(logits[0], greedy=greedy)
        a = actions.numpy()
        if single:
            obs, rew, term, trunc, _ = envs.step(int(a[0]))
            rew, term, trunc = np.array([rew], dtype=float), np.array([term]), np.array([trunc])
        else:
            obs, rew, term, trunc, _ = envs.step(a)
            rew, term, trunc = np.asarray(rew), np.asarray(term), np.asarray(trunc)
        step = Step(batch, a, rew, term.astype(bool), trunc.astype(bool), None if masks is None else masks[0])
        yield step
        start = step.done
        if single and start[0]:
            return
