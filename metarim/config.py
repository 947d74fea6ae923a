"""Run configuration as a dataclass, one docstring per field.

The CLI turns :class:`TrainConfig` into flags; ``--config FILE`` reads a JSON object
with the same keys. :meth:`TrainConfig.from_dict` refuses unknown keys and wrong types
with a ``ValueError`` that names them. The checks here do not depend on the learner;
each learner checks the settings it does not support itself
(:meth:`metarim.algorithms.Learner.check_config`), and fills ``inner_lr=None`` with its
default (:func:`metarim.algorithms.base.prepare_config`).

Example:
    >>> cfg = TrainConfig.from_dict({"env": "MiniGrid-DoorKey-5x5-v0", "frames": 4096})
    >>> cfg.frames, cfg.memory
    (4096, 'lstm')
    >>> TrainConfig.from_dict({"frame": 1})
    Traceback (most recent call last):
    ...
    ValueError: unknown config key 'frame'; did you mean 'frames'?
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

__all__ = ["TrainConfig"]

REMOVED_KEYS = ("algo_options",)
"""Keys that configs written by earlier versions hold and :meth:`TrainConfig.from_dict`
drops when their value is empty (``algo_options``, always ``{}`` in a saved run: no
learner read it); a non-empty value is refused."""


@dataclass
class TrainConfig:
    """Everything that defines a training run."""

    algo: str = "ppo"
    """Learner name in the registry (``metarim.algorithms.LEARNERS``)."""
    memory: str = "lstm"
    """Memory core name (``metarim.rl.MEMORY_CORES``): ``lstm`` or ``rim``."""
    env: str = "MiniGrid-DoorKey-5x5-v0"
    """Gymnasium level id."""
    env_backend: str = "minigrid"
    """``minigrid`` or ``tensor`` (batched torch GoTo levels, ``metarim.envs``; same episodes)."""
    env_worker: bool = False
    """``minigrid`` envs in a background process, stepped half at a time while the policy
    acts on the other half (:class:`~metarim.envs.worker.WorkerVecEnv`): uses a second core,
    same episodes; the actions are sampled per half, so a seed's trajectories differ from
    the in-process env's. Learners with one vector env only (``ppo``, ``a2c``, ``metarim``;
    ``Learner.supports_env_worker``)."""
    compile: bool = False
    """``torch.compile`` the memory core (inductor, one graph per batch shape and grad
    mode; the first update of a run compiles, ~20-30 s per graph with a cold cache).
    Same function up to float rounding; the RIM core runs ~2x faster forward+backward.
    ``ppo``/``a2c``: collection and update (the RIM core; the LSTM core, already fused
    kernels and slower compiled, stays eager); ``metarim``: its collection pass (the
    meta-gradient goes through a differentiable clone, which stays eager). Not for
    ``maml``/``reptile``, whose clones are the acting policies
    (``Learner.supports_compile``)."""
    frames: int = 100_000
    """Total environment frames to train for."""
    seed: int = 0
    """Seed of Python, NumPy, torch and the envs."""
    num_envs: int = 16
    """Parallel envs (``B``)."""
    num_steps: int = 128
    """Steps per env per rollout (``T``)."""
    epochs: int = 4
    """PPO epochs per rollout."""
    batch_size: int = 256
    """Frames per PPO minibatch; divides ``T * B`` and is a multiple of ``recurrence``."""
    recurrence: int = 4
    """Backprop-through-time window (steps); divides ``num_steps``."""
    lr: float = 5e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE λ."""
    clip: float = 0.2
    """PPO ratio and value clip ε."""
    value_coef: float = 0.5
    """Value-loss weight."""
    entropy_coef: float = 0.001
    """Entropy-bonus weight."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    hidden_size: int = 64
    """Memory size (total over RIM modules)."""
    num_units: int = 4
    """RIM modules ``N``."""
    k: int = 2
    """Active RIM modules per step."""
    combine: str = "film"
    """How the mission meets the image: ``film`` or ``concat``."""
    threads: int = 1
    """``torch.set_num_threads``."""
    checkpoint_every: int = 10
    """Updates between checkpoints (one is always written at the end)."""
    # --- meta-learning (metarim, maml, reptile; ignored by ppo/a2c) -----------------
    # Defaults and the measurements behind them: docs/meta_learners.md.
    inner_lr: float | None = None
    """Inner SGD step size α (Meta-RIM masked step, MAML step, evaluation adaptation).
    ``None``: the learner's measured default (``Learner.default_inner_lr``), 10 for
    ``metarim`` (a masked step on the module weights only) and 0.1 otherwise (a step on
    every parameter), filled in when the run is built, so ``config.json`` holds the
    number; ``benchmarks/inner_lr.py`` and docs/meta_learners.md give the measurement."""
    inner_steps: int = 1
    """Inner updates per task: MAML SGD steps, Reptile Adam steps (each on fresh rollouts)."""
    chunk_length: int = 32
    """Meta-RIM: steps per chunk; ``num_steps // chunk_length`` chunks, one inner step each."""
    meta_batch: int = 4
    """MAML/Reptile: tasks per meta-update."""
    learnable_lr: bool = False
    """Meta-RIM: Meta-SGD (Li et al. 2017), one inner rate per element of each fast tensor,
    initialised at ``inner_lr`` and meta-learned by the outer loss with its own Adam step
    size ``inner_lr_lr``; checkpointed, and used by ``metarim eval --adapt-steps``."""
    inner_lr_lr: float = 0.01
    """Adam step size of the learnable inner rates: at 16 Adam steps per 1,024 frames (the
    Meta-RIM defaults) a rate moves by at most ~1.6 per 10k frames, against a start of 10."""
    first_order: bool = False
    """Drop second-order terms of the meta-gradient (Meta-RIM, MAML)."""
    fast_weights: str = "carry"
    """Meta-RIM fast weights after an outer step: ``carry`` the adapted values or ``reset``."""
    reset_memory: bool = True
    """Meta-RIM: zero the recurrent state at episode starts inside a long sequence."""
    meta_step: float = 1.0
    """Reptile outer step ε in θ ← θ + ε·mean(θ̃ − θ)."""
    task_sampler: str = "seeds"
    """Task sampler (``metarim.tasks.SAMPLERS``): ``seeds`` or ``missions``."""
    num_tasks: int = 20
    """``seeds`` sampler: number of disjoint seed ranges of ``env``."""
    held_out: float = 0.2
    """Fraction of tasks held out for fast-adaptation evaluation."""
    outer_chunks: str = "all"
    """Meta-RIM outer loss over ``all`` chunks (0..C-1: chunk 0 under the unadapted weights,
    each later one under the weights adapted on the chunks before it) or only the
    ``adapted`` ones (1..C-1, the MAML split). docs/results.md gives the measurements
    behind the ``all`` default."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ``ValueError`` naming the first bad field (checks that hold for every
        learner; the learner's own come from ``Learner.check_config``)."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            want = {"int": int, "float": (int, float), "str": str, "bool": bool,
                    "float | None": (int, float)}.get(str(f.type))
            if v is None and str(f.type).endswith("| None"):
                continue
            if want is not None and (not isinstance(v, want) or (want is not bool and isinstance(v, bool))):
                raise ValueError(f"{f.name}={v!r} must be of type {f.type}")
        for name in ("frames", "num_envs", "num_steps", "epochs", "batch_size", "recurrence",
                     "hidden_size", "num_units", "k", "threads", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if not 0 <= self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise ValueError("gamma and gae_lambda must be in [0, 1]")
        if self.num_steps % self.recurrence:
            raise ValueError(f"recurrence={self.recurrence} must divide num_steps={self.num_steps}")
        if self.batch_size % self.recurrence or (self.num_steps * self.num_envs) % self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of recurrence={self.recurrence} "
                f"and divide num_steps*num_envs={self.num_steps * self.num_envs}"
            )
        if self.k > self.num_units:
            raise ValueError(f"k={self.k} must be in 1..num_units={self.num_units}")
        if self.memory == "rim" and self.hidden_size % self.num_units:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_units={self.num_units}")
        if self.env_backend not in ("minigrid", "tensor"):
            raise ValueError(f"env_backend={self.env_backend!r} must be 'minigrid' or 'tensor'")
        if self.env_worker and self.env_backend != "minigrid":
            raise ValueError(f"env_worker=True needs env_backend='minigrid', not {self.env_backend!r}")
        if self.combine not in ("film", "concat"):
            raise ValueError(f"combine={self.combine!r} must be 'film' or 'concat'")
        self._validate_meta()

    def _validate_meta(self) -> None:
        """Checks the meta-learning block."""
        for name in ("inner_steps", "chunk_length", "meta_batch", "num_tasks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.inner_lr is not None and not self.inner_lr >= 0:
            raise ValueError(f"inner_lr={self.inner_lr} must be >= 0")
        if not self.inner_lr_lr > 0:
            raise ValueError(f"inner_lr_lr={self.inner_lr_lr} must be > 0")
        if not 0 < self.meta_step <= 1:
            raise ValueError(f"meta_step={self.meta_step} must be in (0, 1]")
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out={self.held_out} must be in (0, 1)")
        if self.fast_weights not in ("reset", "carry"):
            raise ValueError(f"fast_weights={self.fast_weights!r} must be 'reset' or 'carry'")
        if self.outer_chunks not in ("adapted", "all"):
            raise ValueError(f"outer_chunks={self.outer_chunks!r} must be 'adapted' or 'all'")
        if self.task_sampler not in ("seeds", "missions"):
            raise ValueError(f"task_sampler={self.task_sampler!r} must be 'seeds' or 'missions'")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Builds a config, refusing unknown keys; drops the empty :data:`REMOVED_KEYS`
        of configs saved by earlier versions.

        Example:
            >>> TrainConfig.from_dict({"frames": 64, "algo_options": {}}).frames
            64
        """
        if not isinstance(d, dict):
            raise ValueError("a config must be a JSON object")
        d = dict(d)
        for key in REMOVED_KEYS:
            if key in d and d.pop(key):
                raise ValueError(f"config key {key!r} is no longer supported (no learner read it); remove it")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown config key {key!r}{hint}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return dataclasses.asdict(self)
