"""What the RL engine needs of a vector env.

:class:`CheckpointableVecEnv` is the interface every :func:`~metarim.envs.make_vec_env`
backend returns (a gymnasium vector env with same-step autoreset, plus plain-data env
states for checkpoints); :class:`PipelinedVecEnv` adds slice-by-slice stepping, which
:class:`~metarim.rl.rollout.RolloutCollector` uses to overlap the policy and the envs.

:class:`ScheduledVecEnv` is what a training schedule (:mod:`metarim.tasks.schedule`) needs:
an env whose columns each follow their own task stream, switched phase by phase.

Implementations: :class:`~metarim.envs.minigrid.MinigridVecEnv`,
:class:`~metarim.envs.worker.WorkerVecEnv` (also pipelined) and
:class:`~metarim.envs.tensor.TensorGoToVecEnv`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["CheckpointableVecEnv", "PipelinedVecEnv", "ScheduledVecEnv"]


@runtime_checkable
class CheckpointableVecEnv(Protocol):
    """A vector env of ``num_envs`` envs whose state can be saved and restored.

    ``reset``/``step``/``close`` are gymnasium's (``step`` resets ended envs in the same
    step). ``get_states()`` returns one plain-data dict per env, the one
    :meth:`~metarim.envs.minigrid.TaskEnv.get_state` gives: ``{"rng": generator state,
    "episode_seed": int, "actions": [int, ...]}``, so the states of one backend restore
    the same episodes in another. ``set_states(states)`` rebuilds them mid-episode.
    """

    num_envs: int

    def reset(self, *, seed: Any = None, options: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Starts an episode in every env; returns ``(obs, info)``."""
        ...

    def step(self, actions: Any) -> tuple[dict[str, Any], Any, Any, Any, dict[str, Any]]:
        """Steps every env; returns ``(obs, reward, terminated, truncated, info)``."""
        ...

    def close(self) -> None:
        """Releases the envs (and any worker process)."""
        ...

    def get_states(self) -> list[dict[str, Any]]:
        """Each env's plain-data state."""
        ...

    def set_states(self, states: list[dict[str, Any]]) -> None:
        """Restores :meth:`get_states` (one state per env)."""
        ...


@runtime_checkable
class PipelinedVecEnv(CheckpointableVecEnv, Protocol):
    """A :class:`CheckpointableVecEnv` stepped one slice of envs at a time.

    ``slices`` splits ``range(num_envs)`` into contiguous slices. ``step_async(j,
    actions)`` starts stepping slice ``j``; ``step_wait()`` returns the oldest step in
    flight as ``(j, obs, reward, terminated, truncated)`` (answers come in order).
    """

    slices: list[slice]

    def step_async(self, j: int, actions: Any) -> None:
        """Starts stepping slice ``j`` with one action per env of the slice."""
        ...

    def step_wait(self) -> tuple[int, dict[str, Any], Any, Any, Any]:
        """The oldest slice step in flight."""
        ...


@runtime_checkable
class ScheduledVecEnv(CheckpointableVecEnv, Protocol):
    """A :class:`CheckpointableVecEnv` built with a schedule (``make_vec_env(...,
    schedule=)``): env ``b`` draws each episode's task from its
    :func:`~metarim.tasks.schedule.column_stream` before drawing the episode.

    ``set_phase(k)`` gives every env phase ``k``'s stream from its next episode on (the
    episode seeds continue; the caller resets to start the new phase at once);
    ``current_tasks()`` is the task of each env's current episode. ``get_states`` adds
    ``"phase"`` and the stream's state (``"tasks"``) to each env's state.
    """

    def set_phase(self, phase: int) -> None:
        """Switches every env's task stream to phase ``phase``."""
        ...

    def current_tasks(self) -> list[Any]:
        """The :class:`~metarim.tasks.task.Task` of each env's current episode."""
        ...
