"""The learner interface, its registry and the plumbing every learner shares.

Every learner is built from a :class:`~metarim.config.TrainConfig` and exposes

* ``step(tasks=None) -> dict[str, float]`` — one unit of training (a rollout and its
  update for PPO; a meta-batch for meta-learners), returning namespaced metrics that
  include ``"frames"`` (cumulative);
* ``state_dict()`` / ``load_state_dict()`` — plain data (tensors, numbers, strings,
  lists, dicts) that ``torch.load(weights_only=True)`` can read;
* ``policy`` (an :class:`~metarim.rl.ActorCritic`), ``vocab`` and ``frames``;
* ``close()``.

and declares its facts as class attributes: the rule that adapts it to a new task in
evaluation (:attr:`Learner.adaptation_rule`), its default inner step size
(:attr:`Learner.default_inner_lr`), which switches it supports
(:attr:`Learner.supports_env_worker`, :attr:`Learner.supports_compile`,
:attr:`Learner.supports_learnable_lr`, :attr:`Learner.supports_window_shift`) and its own config checks
(:meth:`Learner.check_config`). The CLI, the sweep and the evaluation read these, so
``@register_learner("name")`` is all a new learner needs.

Task schedules (``config.schedule``, :mod:`metarim.tasks.schedule`) live here too, once
for every learner: :meth:`Learner.follow_schedule` (the trainer calls it before each
step) switches the envs of :meth:`Learner.env_collectors` to the phase of the update
about to start (:meth:`Learner.set_phase`), and the phase is checkpointed.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from metarim.algorithms.common import EpisodeWindow
from metarim.config import TrainConfig
from metarim.rl.policy import ActorCritic
from metarim.rl.rollout import RolloutCollector
from metarim.tasks.schedule import Schedule
from metarim.tasks.vocab import Vocab

__all__ = [
    "LEARNERS",
    "Learner",
    "Stateful",
    "adam",
    "build_policy",
    "check_schedule",
    "learner_class",
    "make_learner",
    "prepare_config",
    "register_learner",
]

LEARNERS: dict[str, type[Learner]] = {}


def register_learner(name: str) -> Callable[[type[Learner]], type[Learner]]:
    """Class decorator registering a learner under ``name``."""

    def deco(cls: type[Learner]) -> type[Learner]:
        if name in LEARNERS:
            raise ValueError(f"learner {name!r} is already registered")
        LEARNERS[name] = cls
        cls.name = name
        return cls

    return deco


def learner_class(name: str) -> type[Learner]:
    """The learner registered as ``name``.

    Raises:
        ValueError: no learner has that name.
    """
    if name not in LEARNERS:
        raise ValueError(f"unknown algo {name!r}; choose one of {sorted(LEARNERS)}")
    return LEARNERS[name]


def prepare_config(config: TrainConfig) -> TrainConfig:
    """Completes and checks ``config`` for its learner; returns the same object.

    ``inner_lr=None`` becomes the learner's :attr:`~Learner.default_inner_lr` (in place,
    so that the ``config.json`` written from this object holds the value the run used),
    then :meth:`Learner.check_config` runs. Every place that builds a run config calls
    it: :class:`Learner` itself, the CLI and the sweep.

    Raises:
        ValueError: an unknown ``algo``, or a setting the learner does not support.

    Example:
        >>> prepare_config(TrainConfig(algo="metarim", memory="rim")).inner_lr
        10.0
        >>> prepare_config(TrainConfig(algo="maml", inner_lr=0.3)).inner_lr
        0.3
    """
    cls = learner_class(config.algo)
    if config.inner_lr is None:
        config.inner_lr = cls.default_inner_lr_of(config)
    cls.check_config(config)
    return config


def make_learner(config: TrainConfig) -> Learner:
    """Builds the learner named by ``config.algo`` (after :func:`prepare_config`)."""
    return learner_class(config.algo)(config)


def build_policy(config: TrainConfig, num_actions: int, vocab: Vocab) -> ActorCritic:
    """The actor-critic that ``config`` describes."""
    mem_kw: dict[str, Any] = {}
    if config.memory == "rim":
        mem_kw = {"num_units": config.num_units, "k": config.k}
        if config.rim_init != "zeros":  # the reset state (issue 19); zeros: as before
            mem_kw["init"] = config.rim_init
        mem_kw["comm_reads"] = config.rim_comm
    return ActorCritic(
        num_actions,
        vocab.max_size,
        memory=config.memory,
        hidden_size=config.hidden_size,
        combine=config.combine,
        mission_dim=config.mission_dim,
        memory_kwargs=mem_kw,
        image_encoding=config.image_encoding,
        init=config.init,
    )


def adam(params: Any, lr: float, eps: float = 1e-5) -> torch.optim.Adam:
    """The learners' Adam (``eps`` from ``TrainConfig.adam_eps``, 1e-5 by default), with
    the multi-tensor (``foreach``) update.

    On CPU torch defaults to the per-tensor loop, ~10 small ops per parameter tensor per
    step: 1.15 against 0.74 ms per step for the default LSTM policy's 25 tensors, 1.71
    against 1.27 ms for the RIM policy's 31 (idle machine, one thread), so ~4 % of a PPO
    update. ``foreach`` runs the same kernels in the same order over the tensor list, so
    the parameters are bitwise those of the loop (tested); ``fused=True`` would be
    cheaper still but rounds differently (see ``PPO.__init__``).
    """
    return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


def check_schedule(config: TrainConfig) -> None:
    """Raises a one-line ``ValueError`` when ``config.schedule`` is not a valid schedule
    (:meth:`~metarim.tasks.schedule.Schedule.from_dict`), names an unknown level or one
    the tensor env lacks (``env_backend="tensor"``), or meets ``hidden_task``."""
    from metarim.envs.minigrid import check_level
    from metarim.envs.tensor.layouts import check_supported

    schedule = Schedule.from_dict(config.schedule)
    if config.hidden_task:
        raise ValueError("schedule and hidden_task=True exclude each other; drop one")
    for level in schedule.levels():
        try:
            check_level(level)
            if config.env_backend == "tensor":
                check_supported(level)
        except ValueError as e:
            raise ValueError(f"schedule: {e}") from None


class Stateful(Protocol):
    """Anything a learner checkpoints through :attr:`Learner.stateful`."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any, /) -> Any: ...


def _names(flag: str) -> str:
    """The registered learners whose class attribute ``flag`` is true, for messages."""
    return ", ".join(sorted(n for n, c in LEARNERS.items() if getattr(c, flag)))


class Learner:
    """Base class: holds the config, a policy, a vocabulary, counters and the pieces
    of state listed in :attr:`stateful`.

    Subclasses set the class attributes below, build :attr:`policy` and fill
    :attr:`stateful` in ``__init__``, and implement :meth:`step`.

    Args:
        config: the run configuration; completed and checked by :func:`prepare_config`.
    """

    name: ClassVar[str] = "base"
    """Registry name (set by :func:`register_learner`)."""
    adaptation_rule: ClassVar[str] = "adam"
    """How evaluation adapts a trained policy to a new task
    (:class:`~metarim.evaluation.adaptation.Adapter`): ``"masked_sgd"``, ``"sgd"`` or
    ``"adam"``."""
    default_inner_lr: ClassVar[float] = 0.1
    """``inner_lr`` when the config leaves it ``None``: a step on every parameter."""

    supports_env_worker: ClassVar[bool] = False
    """Whether ``env_worker=True`` works (the learner has one vector env)."""
    supports_compile: ClassVar[bool] = False
    """Whether ``compile=True`` works (the acting policy is a plain module)."""
    supports_learnable_lr: ClassVar[bool] = False
    """Whether ``learnable_lr=True`` (Meta-SGD inner rates) means anything."""
    supports_window_shift: ClassVar[bool] = False
    """Whether ``window_shift`` and ``memory_refresh`` (torch-ac's PPO epochs) mean anything."""
    supports_selection: ClassVar[bool] = False
    """Whether ``selection`` (which modules a masked inner step adapts) means anything."""
    supports_fast_params: ClassVar[bool] = False
    """Whether ``fast_params`` (which parameters are fast) means anything."""
    supports_two_timescales: ClassVar[bool] = False
    """Whether ``fast_lr``, ``slow_lr`` and ``slow_every`` (two optimisers) mean anything."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = prepare_config(config)
        self.frames = 0
        self.updates = 0
        self.vocab = Vocab()
        self.schedule: Schedule | None = None if config.schedule is None else Schedule.from_dict(config.schedule)
        """The training schedule of ``config.schedule`` (:mod:`metarim.tasks.schedule`), or ``None``."""
        self.phase = 0
        """The schedule phase the envs are in (:meth:`follow_schedule`)."""
        self.policy: ActorCritic
        self.stateful: dict[str, Stateful] = {}
        """Checkpointed pieces by checkpoint key (``"optimizer"``, ``"collector"``,
        ``"recent"``, ...): :meth:`state_dict` and :meth:`load_state_dict` go through them
        in order."""

    @classmethod
    def default_inner_lr_of(cls, config: TrainConfig) -> float:
        """``inner_lr`` for ``config`` when it leaves it ``None`` (:attr:`default_inner_lr`;
        a learner whose step differs with the config overrides this)."""
        return cls.default_inner_lr

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Raises ``ValueError`` naming the first setting of ``config`` this learner does
        not support. Subclasses add their own checks and call this one."""
        if config.env_worker and not cls.supports_env_worker:
            raise ValueError(f"env_worker=True needs a learner with one vector env ({_names('supports_env_worker')}), "
                             f"not {cls.name!r}")
        if config.compile and not cls.supports_compile:
            raise ValueError(f"compile=True supports {_names('supports_compile')}, not {cls.name!r}; "
                             "drop --compile")
        if config.learnable_lr and not cls.supports_learnable_lr:
            raise ValueError(f"learnable_lr=True is Meta-RIM's (Meta-SGD on its masked step), not {cls.name!r}")
        if (config.window_shift or config.memory_refresh) and not cls.supports_window_shift:
            raise ValueError(f"window_shift/memory_refresh are PPO's epochs ({_names('supports_window_shift')}), "
                             f"not {cls.name!r}'s")
        cls._check_roles(config)
        if config.schedule is not None:
            check_schedule(config)

    @classmethod
    def _check_roles(cls, config: TrainConfig) -> None:
        """Issue 19's switches: module selection, fast/slow roles, two timescales."""
        if config.selection != "any" and not cls.supports_selection:
            raise ValueError(f"selection={config.selection!r} is for a masked inner step "
                             f"({_names('supports_selection')}), not {cls.name!r}")
        if config.fast_params != "modules" and not cls.supports_fast_params:
            raise ValueError(f"fast_params={config.fast_params!r} is for {_names('supports_fast_params')}, "
                             f"not {cls.name!r}")
        timescales = ("fast_lr", "slow_lr", "slow_every")
        default = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in timescales}
        if any(getattr(config, n) != default[n] for n in timescales) and not cls.supports_two_timescales:
            raise ValueError(f"fast_lr/slow_lr/slow_every are for {_names('supports_two_timescales')}, "
                             f"not {cls.name!r}")

    @classmethod
    def adaptation_rates(cls, state: Mapping[str, Any]) -> Mapping[str, Tensor] | None:
        """Per-element inner rates by fast parameter name that a checkpoint ``state``
        holds for evaluation's adaptation, or ``None``: adapt at ``inner_lr``."""
        return None

    # -- task schedules (issue 20) ---------------------------------------------------
    def env_collectors(self) -> list[RolloutCollector]:
        """The collectors whose envs a schedule switches (``self.collector`` if any)."""
        col = getattr(self, "collector", None)
        return [col] if col is not None else []

    def set_phase(self, phase: int) -> None:
        """Switches to schedule phase ``phase`` now: every env of every collector
        (:meth:`env_collectors`) takes the phase's task stream and starts a fresh episode
        of it (the unfinished episodes are dropped, uncounted), the memory starts from its
        initial state, and the episode window behind ``rollout/*`` is emptied, so the
        metrics after a switch are the new phase's only."""
        self.phase = phase
        for col in self.env_collectors():
            col.envs.set_phase(phase)
            col.restart()
        for part in self.stateful.values():
            if isinstance(part, EpisodeWindow):
                part.episodes.clear()

    def follow_schedule(self) -> bool:
        """Call before each :meth:`step`: switches to the phase of an update that starts
        at :attr:`frames` (:meth:`~metarim.tasks.schedule.Schedule.phase_at`) when it is
        not the current one; returns whether it switched (``False`` without a schedule)."""
        if self.schedule is None:
            return False
        phase = self.schedule.phase_at(self.frames)
        if phase == self.phase:
            return False
        if phase > self.phase + 1:
            names = ", ".join(f"{k} ({self.schedule.phases[k].name})" for k in range(self.phase + 1, phase))
            warnings.warn(f"schedule: phase(s) {names} ended before an update started in them and were skipped; "
                          f"make phases at least one update long", stacklevel=2)
        self.set_phase(phase)
        return True

    def step(self, tasks: Any = None) -> dict[str, float]:  # pragma: no cover - abstract
        """One unit of training; returns metrics including ``"frames"``."""
        raise NotImplementedError

    def clip_and_step(self, optimizer: torch.optim.Optimizer) -> Tensor:
        """Clips the policy's accumulated gradients to norm ``max_grad_norm`` and steps
        ``optimizer``; returns the norm before clipping (detached).

        Raises:
            FloatingPointError: the norm is not finite (nothing is stepped).
        """
        norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm,
                                              foreach=True)
        if not torch.isfinite(norm):
            raise FloatingPointError(f"non-finite gradient norm at update {self.updates}")
        optimizer.step()
        return norm.detach()

    def optimizer_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
        """Non-finite guard, ``zero_grad``, backward, clip, step (:meth:`clip_and_step`);
        returns the gradient norm before clipping.

        Raises:
            FloatingPointError: ``loss`` or the gradient norm is not finite; the
                parameters are then unchanged.
        """
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss ({loss.item()}) at update {self.updates}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return self.clip_and_step(optimizer)

    def state_dict(self) -> dict[str, Any]:
        """Algorithm name, counters, policy weights, vocabulary, torch RNG, then each
        entry of :attr:`stateful` under its key."""
        return {
            "algo": self.name,
            "memory": self.config.memory,
            "frames": self.frames,
            "updates": self.updates,
            "num_actions": int(self.policy.actor[-1].out_features),
            "policy": self.policy.state_dict(),
            "vocab": self.vocab.to_dict(),
            "torch_rng": torch.get_rng_state(),
            **({} if self.schedule is None else {"schedule_phase": self.phase}),
            **{key: part.state_dict() for key, part in self.stateful.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`; refuses another algorithm or memory."""
        if state.get("algo") != self.name or state.get("memory") != self.config.memory:
            raise ValueError(
                f"checkpoint is for algo={state.get('algo')!r} memory={state.get('memory')!r}, "
                f"not algo={self.name!r} memory={self.config.memory!r}"
            )
        self.frames, self.updates = int(state["frames"]), int(state["updates"])
        self.policy.load_state_dict(state["policy"])
        self.vocab.replace_with(Vocab.from_dict(state["vocab"]))
        torch.set_rng_state(state["torch_rng"])
        if self.schedule is not None:
            if "schedule_phase" not in state:
                raise ValueError("checkpoint has no schedule phase: it was trained without a schedule")
            self.phase = int(state["schedule_phase"])
        for key, part in self.stateful.items():
            part.load_state_dict(state[key])

    def close(self) -> None:
        """Releases envs and other resources."""
