"""Evaluation and rendering of a trained run.

:func:`evaluate` runs a fixed number of episodes, split evenly over the envs in
advance (so that short episodes are not over-counted), and reports the success rate
with a Wilson interval and the mean return with a t interval. :func:`render` writes an
animated GIF of the agent with its mission as a caption, from minigrid's RGB renderer
(no display needed). Both act through :func:`metarim.rl.rollout.play` and close their
envs when done, also on error.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any

import numpy as np
import torch

from metarim.algorithms.base import build_policy
from metarim.checkpoint import CheckpointError, load_newest_checkpoint, read_run_config
from metarim.config import TrainConfig
from metarim.evaluation.stats import mean_ci, wilson_interval
from metarim.rl.policy import ActorCritic
from metarim.rl.rollout import play
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["evaluate", "load_run", "render"]


def load_run(run_dir: str | pathlib.Path) -> tuple[TrainConfig, ActorCritic, Vocab, dict[str, Any]]:
    """Reads a run folder: its config, the policy of its newest loadable checkpoint, the vocab.

    A damaged newer checkpoint is skipped with one line on stderr naming it.

    Raises:
        ValueError: the folder is not a run, its ``config.json`` is damaged, or it has
            no checkpoint that loads.
    """
    run = pathlib.Path(run_dir)
    saved = read_run_config(run)["config"]
    try:
        config = TrainConfig.from_dict(saved, legacy=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{run / 'config.json'}: {e}") from None
    found = load_newest_checkpoint(run)
    if found is None:
        raise CheckpointError(f"{run} has no checkpoint; train it first")
    ckpt, state, skipped = found
    if skipped:
        print(f"metarim: {'; '.join(str(e) for e in skipped)}; using {ckpt.name}", file=sys.stderr)
    if state.get("memory") != config.memory:
        raise CheckpointError(f"{ckpt} holds memory={state.get('memory')!r}, config says {config.memory!r}")
    vocab = Vocab.from_dict(state["vocab"])
    vocab.frozen = True
    policy = build_policy(config, int(state["num_actions"]), vocab)
    policy.load_state_dict(state["policy"])
    policy.eval()
    return config, policy, vocab, state


@torch.no_grad()
def evaluate(
    policy: ActorCritic,
    task: Task,
    vocab: Vocab,
    *,
    episodes: int = 100,
    num_envs: int = 16,
    seed: int = 1_000_003,
    greedy: bool = False,
    backend: str = "minigrid",
) -> dict[str, Any]:
    """Success rate and mean return over ``episodes`` episodes with 95 % intervals.

    ``backend`` names the env backend (:func:`metarim.envs.make_vec_env`); ``"tensor"``
    gives the same episodes as ``"minigrid"``, batched in torch, on its levels.
    """
    from metarim.envs import make_vec_env

    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    num_envs = min(num_envs, episodes)
    torch.manual_seed(seed)
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    envs = make_vec_env(task, num_envs, seed=seed, vocab=vocab, backend=backend)
    ret, length = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)
    done_count = np.zeros(num_envs, dtype=np.int64)
    results: list[tuple[float, float, int]] = []
    try:
        for step in play(policy, envs, greedy=greedy):
            end = step.done
            ret += step.reward
            length += 1
            for b in np.flatnonzero(end):
                if done_count[b] < quota[b]:
                    success = bool(step.terminated[b]) and step.reward[b] > 0
                    results.append((float(success), float(ret[b]), int(length[b])))
                done_count[b] += 1
            ret[end], length[end] = 0.0, 0
            if not (done_count < quota).any():
                break
    finally:
        envs.close()
    succ = [r[0] for r in results]
    rets = [r[1] for r in results]
    mean, lo, hi = mean_ci(rets)
    return {
        "env": task.level,
        "episodes": len(results),
        "success_rate": float(np.mean(succ)),
        "success_rate_ci95": list(wilson_interval(int(sum(succ)), len(succ))),
        "return_mean": mean,
        "return_mean_ci95": [lo, hi],
        "length_mean": float(np.mean([r[2] for r in results])),
        "seed": seed,
        "greedy": greedy,
    }


@torch.no_grad()
def render(
    policy: ActorCritic,
    task: Task,
    vocab: Vocab,
    path: str | pathlib.Path,
    *,
    episodes: int = 1,
    seed: int = 1_000_003,
    fps: int = 6,
    greedy: bool = False,
) -> int:
    """Writes a GIF of ``episodes`` episodes with the mission as caption; returns frames."""
    from PIL import Image, ImageDraw

    from metarim.envs.minigrid import make_env

    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    torch.manual_seed(seed)
    env = make_env(task, vocab, seed, render_mode="rgb_array")
    frames: list[Image.Image] = []

    def snap(caption: str) -> None:
        img = Image.fromarray(env.render())
        if img.width < 384:
            scale = -(-384 // img.width)
            img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        canvas = Image.new("RGB", (img.width, img.height + 24), "white")
        canvas.paste(img, (0, 24))
        ImageDraw.Draw(canvas).text((4, 6), caption, fill="black")
        frames.append(canvas)

    try:
        for ep in range(episodes):
            obs, _ = env.reset()
            snap(f"{ep + 1}/{episodes}: {env.mission}")  # each frame shows the state acted on
            ret = 0.0
            for step in play(policy, env, greedy=greedy, obs=obs):
                ret += float(step.reward[0])
                if not step.done[0]:
                    snap(f"{ep + 1}/{episodes}: {env.mission}")
            snap(f"{ep + 1}/{episodes}: {'success' if ret > 0 else 'failure'} (return {ret:.2f})")
    finally:
        env.close()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return len(frames)
