r"""Easy → hard transfer: a policy trained on a small level, measured on a larger one.

For a trained run and a target level, :func:`transfer` reports success and mean return
on the target **zero-shot** (``k = 0``, no update) and after ``k = 1, 2, 5``
**adaptation steps** on it, each learner with its own adaptation rule
(:attr:`~metarim.algorithms.base.Learner.adaptation_rule`: Meta-RIM's masked SGD on the
active modules' weights, SGD for MAML, Adam for Reptile and PPO). It is
:func:`~metarim.evaluation.adaptation.fast_adaptation` on the task ``Task(target)``
(the whole level, every episode seed): step ``k`` is one update on a fresh on-policy
rollout of the target (``num_steps × num_envs`` frames; ``chunk_length × num_envs`` for
Meta-RIM), updates are cumulative, and each ``k`` is evaluated on the same
``episodes`` episodes (env seed ``seed + 1``, ``eval_envs`` envs at once) with
:func:`~metarim.evaluation.evaluate.evaluate`.

The families of :data:`TRANSFER_FAMILIES` pair a small level with its larger versions.

**Env backend.** ``backend="auto"`` (the default) runs the target on the tensor env
when :data:`metarim.envs.tensor.SUPPORTED_LEVELS` holds it (the same episodes as
minigrid, step for step, and much faster on the long episodes of the 16×16 levels),
on minigrid otherwise; ``"minigrid"`` or ``"tensor"`` forces one.

**Unknown words.** The target's missions are encoded with a frozen copy of the run's
vocabulary (as :func:`~metarim.evaluation.evaluate.load_run` loads it): a word the run
never saw becomes ``<unk>`` (id 1) and no id is ever added, so the encoding of a
mission does not depend on which missions came before it. The families' targets share
their source level's mission grammar (MiniGrid missions are one fixed sentence per
level), so no ``<unk>`` arises within a family.

From the shell::

    metarim transfer --run runs/doorkey5 --level MiniGrid-DoorKey-8x8-v0 --adapt-steps 0 1 2 5

prints one JSON object (:func:`transfer_report`).

Example:
    >>> TRANSFER_FAMILIES["doorkey"].targets
    ('MiniGrid-DoorKey-8x8-v0', 'MiniGrid-DoorKey-16x16-v0')
    >>> family_of("MiniGrid-Empty-5x5-v0")
    'empty'
    >>> resolve_backend("MiniGrid-Empty-16x16-v0"), resolve_backend("BabyAI-BossLevel-v0")
    ('tensor', 'minigrid')
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from metarim.config import TrainConfig
from metarim.evaluation.adaptation import fast_adaptation
from metarim.rl.policy import ActorCritic
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = [
    "BACKENDS",
    "TRANSFER_FAMILIES",
    "TransferFamily",
    "family_of",
    "resolve_backend",
    "transfer",
    "transfer_report",
]

BACKENDS = ("auto", "minigrid", "tensor")
"""Values of ``backend``: ``auto`` picks ``tensor`` on its levels, else ``minigrid``."""


@dataclass(frozen=True)
class TransferFamily:
    """A small training level and the larger levels it is measured on."""

    source: str
    """The level trained on."""
    targets: tuple[str, ...]
    """The levels transferred to, easier first."""


TRANSFER_FAMILIES: dict[str, TransferFamily] = {
    "gotolocal": TransferFamily("BabyAI-GoToLocalS6N2-v0", ("BabyAI-GoToLocalS8N7-v0", "BabyAI-GoToLocal-v0")),
    "doorkey": TransferFamily("MiniGrid-DoorKey-5x5-v0", ("MiniGrid-DoorKey-8x8-v0", "MiniGrid-DoorKey-16x16-v0")),
    "multiroom": TransferFamily("MiniGrid-MultiRoom-N2-S4-v0", ("MiniGrid-MultiRoom-N4-S5-v0",)),
    "empty": TransferFamily("MiniGrid-Empty-5x5-v0", ("MiniGrid-Empty-16x16-v0",)),
}
"""The easy → hard families of issue 20, by name: GoToLocal (6×6 room, 2 objects → 8×8
with 7 objects, and 8×8 with 8 objects), DoorKey 5×5 → 8×8 / 16×16, MultiRoom (2 rooms
of at most 4 cells → 4 rooms of at most 5), Empty 5×5 → 16×16."""


def family_of(level: str) -> str | None:
    """The name of the family whose source is ``level`` (``None``: no family)."""
    return next((name for name, f in TRANSFER_FAMILIES.items() if f.source == level), None)


def resolve_backend(level: str, backend: str = "auto") -> str:
    """The env backend that measures ``level``: ``backend``, or for ``"auto"`` the tensor
    env where it implements the level and minigrid elsewhere.

    Raises:
        ValueError: ``backend`` is not one of :data:`BACKENDS`, or is ``"tensor"`` for a
            level the tensor env does not implement.
    """
    from metarim.envs.tensor import SUPPORTED_LEVELS, check_supported

    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} must be one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "tensor" if level in SUPPORTED_LEVELS else "minigrid"
    if backend == "tensor":
        check_supported(level)
    return backend


def transfer(
    policy: ActorCritic,
    config: TrainConfig,
    vocab: Vocab,
    target: str,
    *,
    steps: Sequence[int] = (0, 1, 2, 5),
    episodes: int = 64,
    seed: int = 5_000_011,
    backend: str = "auto",
    eval_envs: int | None = 128,
    rates: Mapping[str, torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Success and return on ``target`` after each number of adaptation steps in ``steps``.

    Args:
        policy: the trained policy (left unchanged).
        config: its run config: ``config.algo`` picks the adaptation rule, and its rates,
            rollout sizes and loss coefficients are the adaptation's.
        vocab: the run's vocabulary (a frozen copy encodes the target's missions).
        target: the level id to transfer to.
        steps: numbers of adaptation steps (``0``: zero-shot); adaptation is cumulative.
        episodes: evaluation episodes per entry of ``steps``.
        seed: env seed of the adaptation rollouts; ``seed + 1`` is the evaluation's.
        backend: ``"auto"``, ``"minigrid"`` or ``"tensor"`` (:func:`resolve_backend`).
        eval_envs: envs stepped at once by each evaluation (at most ``episodes``; ``None``:
            the run's ``num_envs``). Many envs make the long episodes of a large level
            cheap on the tensor env; the adaptation rollouts keep the run's ``num_envs``.
        rates: per-element inner rates of a Meta-SGD run (its checkpoint's ``inner_lrs``).
        log: optional progress callback.

    Returns:
        ``{k: evaluate(...) result}`` with ``adapt_loss`` (the loss of the last update,
        NaN for ``k = 0``) and ``backend`` added to each result.

    Raises:
        ValueError: ``target`` is not a registered level, ``backend`` does not fit it,
            ``episodes < 1`` or a negative step.
    """
    from metarim.envs.minigrid import check_level

    check_level(target)
    backend = resolve_backend(target, backend)
    frozen = Vocab.from_dict(vocab.to_dict())
    frozen.frozen = True
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    if eval_envs is not None and eval_envs < 1:
        raise ValueError(f"eval_envs={eval_envs} must be >= 1")
    out = fast_adaptation(policy, config, Task(target), frozen, steps=steps, episodes=episodes, seed=seed,
                          log=log, rates=rates, backend=backend, eval_envs=eval_envs)
    for res in out.values():
        res["backend"] = backend
    return out


def transfer_report(
    run_dir: str | pathlib.Path,
    targets: Sequence[str] | None = None,
    *,
    steps: Sequence[int] = (0, 1, 2, 5),
    episodes: int = 64,
    seed: int = 5_000_011,
    backend: str = "auto",
    eval_envs: int | None = 128,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Transfer of a run folder's newest checkpoint to each of ``targets``, as JSON data.

    Args:
        run_dir: a run folder of ``metarim train``.
        targets: level ids; default: the targets of the family whose source the run
            was trained on (:data:`TRANSFER_FAMILIES`).
        steps, episodes, seed, backend, eval_envs, log: as for :func:`transfer`.

    Returns:
        ``{"run", "frames", "algo", "adaptation_rule", "source", "family", "transfer":
        {target: {"k": result}}}``.

    Raises:
        ValueError: the folder is not a loadable run, ``targets`` is empty and the run's
            level is no family's source, or a target is unknown.
    """
    from metarim.algorithms import learner_class
    from metarim.envs.minigrid import check_level
    from metarim.evaluation.evaluate import load_run

    config, policy, vocab, state = load_run(run_dir)
    family = family_of(config.env)
    if not targets:
        if family is None:
            raise ValueError(f"{config.env} (the run's level) is the source of no transfer family "
                             f"({', '.join(f.source for f in TRANSFER_FAMILIES.values())}); name the target levels")
        targets = TRANSFER_FAMILIES[family].targets
    for level in targets:  # every target checked before any is measured
        check_level(level)
        resolve_backend(level, backend)
    cls = learner_class(config.algo)
    rates = cls.adaptation_rates(state)
    results = {lv: {str(k): r for k, r in transfer(policy, config, vocab, lv, steps=steps, episodes=episodes,
                                                   seed=seed, backend=backend, eval_envs=eval_envs, rates=rates,
                                                   log=log).items()}
               for lv in targets}
    return {"run": str(run_dir), "frames": int(state["frames"]), "algo": config.algo,
            "adaptation_rule": cls.adaptation_rule, "source": config.env, "family": family, "transfer": results}
