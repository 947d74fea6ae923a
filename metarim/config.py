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
import json
import pathlib
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_CHANGES", "LEGACY", "TrainConfig"]

REMOVED_KEYS = ("algo_options",)
"""Keys that configs written by earlier versions hold and :meth:`TrainConfig.from_dict`
drops when their value is empty (``algo_options``, always ``{}`` in a saved run: no
learner read it); a non-empty value is refused."""

LEGACY: dict[str, Any] = {
    # issue 20: task schedules
    "schedule": None,
    # issue 20: hidden-task trials
    "hidden_task": False,
    "trial_episodes": 4,
    # issue 19: Meta-RIM's truncated windows; module selection, fast/slow roles, two
    # timescales, reset tie
    "meta_window": 0,
    "selection": "any",
    "fast_params": "modules",
    "fast_lr": None,
    "slow_lr": None,
    "slow_every": 8,
    "rim_init": "zeros",
    # issue 20: what the communication attention reads of an inactive module
    "rim_comm": "kept",
    # issue 18: the starter kit's switches
    "adam_eps": 1e-5,
    "image_encoding": "onehot",
    "mission_dim": 64,
    "init": "torch",
    "window_shift": False,
    "memory_refresh": False,
}
"""For every field added after commit f898eb9, the value that reproduces what a run
saved before the field existed did. A saved run's ``config.json`` lacks such a key, and
``TrainConfig.from_dict(d, legacy=True)`` (used wherever a run's ``config.json`` is read:
``--resume``, evaluation, the sweep's comparison of a folder with its run) fills it from
here, not from the field's default, so the run resumes and evaluates as it was trained
even after the default changes. A new field goes here with its value of today, which
must be its default at the time it is added (``tests/test_kit_options.py`` checks that
every field missing from f898eb9's runs is listed, and that each value is the field's
default or, for a default changed since, its :data:`DEFAULT_CHANGES` old value)."""


DEFAULT_CHANGES: dict[str, tuple[Any, Any, str]] = {
    # field: (old default, new default, why), issue 18 (docs/rl.md, "Sample efficiency
    # against the starter kit": the ablation behind each, with its command)
    "lr": (5e-4, 1e-3, "issue 18: the starter kit's rate"),
    "entropy_coef": (0.001, 0.01, "issue 18: the starter kit's weight"),
    "combine": ("film", "heads", "issue 18: the mission read by the heads, not the memory"),
    "mission_dim": (64, 128, "issue 18: the starter kit's mission GRU size"),
    "image_encoding": ("onehot", "raw", "issue 18: the starter kit's integer-id planes"),
    "init": ("torch", "kit", "issue 18: rl-starter-files' init_params"),
    "meta_window": (0, 4, "issue 19: Meta-RIM learns as well in 4-step windows, 3.4-3.7x faster"),
    "k": (2, 3, "issue 18: PPO+RIM to return 0.8 in 1.07x PPO+LSTM's frames (1.34x at k=2)"),
    "rim_comm": ("kept", "cells", "issue 20: the reference's reading; kept states grow without bound"),
}
"""Defaults that changed after they were first released, with the old value. A saved
run's ``config.json`` holds every field it had, so a changed default never changes a
saved run; a field that is also in :data:`LEGACY` (added after f898eb9, so missing from
older runs) keeps its *old* value there. ``benchmarks/behaviour.py --check`` against
``tests/data/f898eb9/behaviour_values.json`` differs from these changes on; ``--legacy`` runs
the old defaults."""


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
    kernels and slower compiled, stays eager); ``metarim``: its collection pass and its
    meta-gradient, computed as one compiled ``torch.func`` function instead of autograd
    through a differentiable clone (:mod:`metarim.algorithms.meta_chain`; not with
    ``learnable_lr``, which keeps the autograd chain; a cold compile takes ~5 minutes,
    inductor's on-disk cache makes a later run's ~10 s). Not for
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
    lr: float = 1e-3
    """Adam learning rate (5e-4 until issue 18, :data:`DEFAULT_CHANGES`)."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE λ."""
    clip: float = 0.2
    """PPO ratio and value clip ε."""
    value_coef: float = 0.5
    """Value-loss weight."""
    entropy_coef: float = 0.01
    """Entropy-bonus weight (0.001 until issue 18)."""
    max_grad_norm: float = 0.5
    """Gradient-norm clip."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    hidden_size: int = 64
    """Memory size (total over RIM modules)."""
    num_units: int = 4
    """RIM modules ``N``."""
    k: int = 3
    """Active RIM modules per step (2 until issue 18's PPO+RIM measurement: with 3 of 4,
    PPO+RIM reaches return 0.8 as early as PPO+LSTM; docs/rl.md)."""
    combine: str = "heads"
    """How the mission meets the image: ``film`` (the mission modulates the image code),
    ``concat`` (``[image, mission]`` is the memory's input) or ``heads`` (the starter
    kit's layout: the memory reads the image code only, and the actor and critic read
    ``[memory output, mission code]``)."""
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
    # --- Meta-RIM: truncated backprop windows inside each chunk (issue 19) ----------
    meta_window: int = 4
    """Meta-RIM: steps per truncated-backprop window of a chunk's loss (inner, outer and
    the collection pass's step): the chunk is re-run as ``chunk_length // meta_window``
    windows per env column, each from its stored (detached) collection-time memory, in one
    batched policy call (as PPO's ``recurrence``), so the chain's sequential depth is
    ``meta_window`` steps per chunk. ``0``: the whole chunk, one window (the default until
    issue 19; :data:`DEFAULT_CHANGES`). Must divide ``chunk_length``."""
    # --- sample efficiency (issue 18): the starter kit's choices as switches ----------
    # rl-starter-files + torch-ac 1.4.0; docs/rl.md lists the kit's value of each.
    adam_eps: float = 1e-5
    """Adam's ε of every learner's optimiser (``algorithms.base.adam``; also evaluation's
    ``adam`` adaptation). torch-ac uses 1e-8."""
    image_encoding: str = "raw"
    """The 7×7×3 view's input to the first convolution: ``onehot`` (11 + 6 + 3 planes, one
    per object, colour and state id) or ``raw`` (the three integer ids as floats, the
    kit's ``Conv2d(3, 16, 2)``)."""
    mission_dim: int = 128
    """Mission code size (the GRU's hidden size); the kit's is 128."""
    init: str = "kit"
    """Initialisation of the policy's ``nn.Linear`` layers outside the memory core (actor,
    critic, FiLM): ``torch`` (PyTorch's defaults; the actor's last layer orthogonal with
    gain 0.01, bias 0) or ``kit`` (rl-starter-files' ``init_params``: weights ~ N(0, 1),
    each row scaled to unit L2 norm, bias 0, the actor's last layer included).
    Convolutions, embedding, GRU and memory core keep PyTorch's defaults either way."""
    window_shift: bool = False
    """PPO: every other epoch, the recurrence windows start ``recurrence // 2`` steps later
    (the last window of each env column is dropped), as torch-ac 1.4.0; the parity
    counts epochs over the whole run. ``ppo`` only."""
    memory_refresh: bool = False
    """PPO: when a minibatch re-runs a window, the memory it computes at the step where a
    window of the other offset starts is written back (detached) into the rollout's
    stored memory, so later epochs start those windows from memories of the current
    parameters (torch-ac's ``exps.memory[inds + i + 1] = memory.detach()``). Only the
    other offset's windows read written memories, so it needs ``window_shift``."""
    # --- module selection, fast/slow roles, two timescales, reset tie (issue 19) -----
    selection: str = "any"
    """Meta-RIM: which modules a masked inner step adapts, from the chunk's ``(T, B, N)``
    selection masks (``metarim.meta.partition.reduce_activity``), in the collection pass
    and in the inner chain: ``any`` (every module selected at least once; with the
    default fast set a no-op, docs/adaptation.md), ``topk`` (the ``k`` modules selected
    most often) or ``mean`` (a soft mask, each module's step scaled by its usage)."""
    fast_params: str = "modules"
    """Which parameters are fast (``metarim.meta.partition.FAST_PRESETS``), for ``metarim``
    (its inner step) and ``fastslow`` (its fast optimiser): ``modules`` (the RIM
    mechanisms) or ``attention`` (the input and communication attentions: the paper's
    reversed roles). Encoders and heads are slow either way."""
    fast_lr: float | None = None
    """``fastslow``: Adam step size of the fast parameters, stepped every minibatch;
    ``None``: ``lr``."""
    slow_lr: float | None = None
    """``fastslow``: Adam step size of the slow parameters, stepped once per ``slow_every``
    minibatches on the mean of their gradients; ``None``: ``lr``."""
    slow_every: int = 8
    """``fastslow``: minibatch updates per slow step; at the PPO defaults (128 × 16 frames in
    minibatches of 256, 4 epochs) 8 is one slow step per epoch, 32 one per rollout."""
    rim_init: str = "zeros"
    """The state a RIM memory reset starts from (``memory="rim"``): ``zeros`` (the
    reference; every input-attention score then ties at the first step of an episode and
    the same modules are chosen, whatever the observation) or ``learned`` (a learned
    initial state per module, ``RIMCell(init="learned")``)."""
    rim_comm: str = "cells"
    """What a RIM's communication attention reads of an inactive module
    (``RIMCell(comm_reads=...)``): ``cells`` (the reference code's reading: every module's
    new cell output, the inactive ones' with their gradient blocked; the state stays
    bounded) or ``kept`` (its kept state, metarim before issue 20, whose state can grow
    without bound over long episodes: docs/adaptation_benchmarks.md). Ignored without
    ``memory="rim"``."""

    # --- issue 20: hidden-task trials ------------------------------------------------
    hidden_task: bool = False
    """Hidden-task trials (docs/trials.md, :mod:`metarim.envs.hidden`): the mission is
    withheld (the mission slot holds ``hidden``, or, at the first step of each episode of a
    trial after the first, ``found``/``missed``: whether the previous episode reached its
    target); each env column plays trials of ``trial_episodes`` episodes of one target (a
    colour and an object type, a ``missions`` task of ``env``) drawn from the training
    split, and only a trial's end is an episode end to the learner (memory reset, GAE cut).
    Needs ``task_sampler="missions"``; ``rollout/*`` metrics are over the trials' episodes."""
    trial_episodes: int = 4
    """``hidden_task``: episodes per trial :math:`K`."""
    # --- issue 20: task schedules --------------------------------------------------------
    schedule: dict[str, Any] | None = None
    """A training schedule (docs/schedules.md, :mod:`metarim.tasks.schedule`): phases of
    task distributions with their lengths in frames, or the periodic mode (each env column
    switches task every M episodes). The envs' levels follow it, phase by phase;
    ``env`` stays the evaluation default and the level of the learners' seed-range or
    mission-family splits. A string is read as the path of a JSON file, and the run's
    config holds the file's content. ``None``: train on ``env`` throughout."""

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
        if self.combine not in ("film", "concat", "heads"):
            raise ValueError(f"combine={self.combine!r} must be 'film', 'concat' or 'heads'")
        self._validate_kit()
        self._validate_meta()
        self._validate_roles()
        self._validate_trials()
        self._validate_schedule()

    def _validate_kit(self) -> None:
        """Checks the sample-efficiency block (issue 18)."""
        if not self.adam_eps > 0:
            raise ValueError(f"adam_eps={self.adam_eps} must be > 0")
        if self.mission_dim < 1:
            raise ValueError(f"mission_dim={self.mission_dim} must be >= 1")
        if self.image_encoding not in ("onehot", "raw"):
            raise ValueError(f"image_encoding={self.image_encoding!r} must be 'onehot' or 'raw'")
        if self.init not in ("torch", "kit"):
            raise ValueError(f"init={self.init!r} must be 'torch' or 'kit'")
        if self.window_shift and self.num_steps < 2 * self.recurrence:
            raise ValueError(f"window_shift=True needs num_steps={self.num_steps} >= 2 * recurrence={self.recurrence}")
        if self.memory_refresh and not self.window_shift:
            raise ValueError("memory_refresh=True needs window_shift=True (without the shift no window "
                             "starts where another wrote)")

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
        if self.meta_window < 0:
            raise ValueError(f"meta_window={self.meta_window} must be >= 0 (0: the whole chunk)")
        if not 0 < self.held_out < 1:
            raise ValueError(f"held_out={self.held_out} must be in (0, 1)")
        if self.fast_weights not in ("reset", "carry"):
            raise ValueError(f"fast_weights={self.fast_weights!r} must be 'reset' or 'carry'")
        if self.outer_chunks not in ("adapted", "all"):
            raise ValueError(f"outer_chunks={self.outer_chunks!r} must be 'adapted' or 'all'")
        if self.task_sampler not in ("seeds", "missions"):
            raise ValueError(f"task_sampler={self.task_sampler!r} must be 'seeds' or 'missions'")

    def _validate_roles(self) -> None:
        """Checks the selection / roles / two-timescale / reset block (issue 19)."""
        if self.selection not in ("any", "topk", "mean"):
            raise ValueError(f"selection={self.selection!r} must be 'any', 'topk' or 'mean'")
        if self.fast_params not in ("modules", "attention"):
            raise ValueError(f"fast_params={self.fast_params!r} must be 'modules' or 'attention'")
        for name in ("fast_lr", "slow_lr"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0 (or None: lr)")
        if self.slow_every < 1:
            raise ValueError(f"slow_every={self.slow_every} must be >= 1")
        if self.rim_init not in ("zeros", "learned"):
            raise ValueError(f"rim_init={self.rim_init!r} must be 'zeros' or 'learned'")
        if self.rim_init != "zeros" and self.memory != "rim":
            raise ValueError(f"rim_init={self.rim_init!r} needs memory='rim', not {self.memory!r}")
        if self.rim_comm not in ("cells", "kept"):
            raise ValueError(f"rim_comm={self.rim_comm!r} must be 'cells' or 'kept'")

    def _validate_trials(self) -> None:
        """Checks the hidden-task block (issue 20)."""
        if self.trial_episodes < 1:
            raise ValueError(f"trial_episodes={self.trial_episodes} must be >= 1")
        if self.hidden_task and self.task_sampler != "missions":
            raise ValueError(f"hidden_task=True needs task_sampler='missions' (a task is a colour and an object "
                             f"type), not {self.task_sampler!r}; add --task-sampler missions")
        if self.hidden_task and self.env_worker:
            raise ValueError("hidden_task=True needs the envs in this process; drop --env-worker")

    def _validate_schedule(self) -> None:
        """Checks the schedule block (issue 20): a path becomes the file's content; the
        content itself is checked by ``Learner.check_config`` (``Schedule.from_dict``)."""
        if isinstance(self.schedule, str):
            path = self.schedule
            try:
                text = pathlib.Path(path).read_text()
            except OSError as e:
                raise ValueError(f"cannot read schedule file {path}: {e.strerror}") from None
            try:
                self.schedule = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"schedule file {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
        if self.schedule is not None and not isinstance(self.schedule, dict):
            raise ValueError(f"schedule must be a JSON object (docs/schedules.md) or a file holding one, "
                             f"not {type(self.schedule).__name__}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, legacy: bool = False) -> TrainConfig:
        """Builds a config, refusing unknown keys; drops the empty :data:`REMOVED_KEYS`
        of configs saved by earlier versions.

        Args:
            d: config keys and values; a missing key takes the field's default, or,
                with ``legacy``, its :data:`LEGACY` value when it has one.
            legacy: ``d`` is a saved run's config (its ``config.json``): keys added
                since it was written take the value that reproduces the old behaviour.

        Example:
            >>> TrainConfig.from_dict({"frames": 64, "algo_options": {}}).frames
            64
            >>> TrainConfig.from_dict({}, legacy=True).adam_eps
            1e-05
        """
        if not isinstance(d, dict):
            raise ValueError("a config must be a JSON object")
        d = dict(d)
        if legacy:
            d = {**LEGACY, **d}
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
