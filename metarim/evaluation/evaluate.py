"""Evaluation and rendering of a trained run.

:func:`evaluate` runs a fixed number of episodes, split evenly over the envs in
advance (so that short episodes are not over-counted), and reports the success rate
with a Wilson interval and the mean return with a t interval. :func:`render` writes an
animated GIF of the agent with its mission as a caption, from minigrid's RGB renderer
(no display needed).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import torch

from metarim.algorithms.base import build_policy
from metarim.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from metarim.config import TrainConfig
from metarim.evaluation.stats import mean_ci, wilson_interval
from metarim.rl.policy import ActorCritic
from metarim.rl.rollout import sample_actions
from metarim.tasks.task import Task
from metarim.tasks.vocab import Vocab

__all__ = ["evaluate", "load_run", "render"]


def load_run(run_dir: str | pathlib.Path) -> tuple[TrainConfig, ActorCritic, Vocab, dict[str, Any]]:
    """Reads a run folder: its config, the policy of its latest checkpoint, the vocab.

    Raises:
        ValueError: the folder is not a run, or its checkpoint is missing or corrupt.
    """
    run = pathlib.Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"{run} is not a metarim run (no config.json)")
    try:
        config = TrainConfig.from_dict(json.loads(cfg_path.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_path} is corrupt ({type(e).__name__})") from None
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise CheckpointError(f"{run} has no checkpoint; train it first")
    state = load_checkpoint(ckpt)
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
) -> dict[str, Any]:
    """Success rate and mean return over ``episodes`` episodes with 95 % intervals."""
    from metarim.envs.minigrid import make_vec_env

    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1")
    num_envs = min(num_envs, episodes)
    torch.manual_seed(seed)
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    envs = make_vec_env(task, num_envs, seed=seed, vocab=vocab)
    obs, _ = envs.reset()
    memory = policy.initial_state(num_envs)
    start = torch.ones(num_envs, dtype=torch.bool)
    ret, length = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)
    done_count = np.zeros(num_envs, dtype=np.int64)
    results: list[tuple[float, float, int]] = []
    while (done_count < quota).any():
        o = {k: torch.from_numpy(np.asarray(obs[k])).unsqueeze(0) for k in ("image", "mission")}
        logits, _, memory, _ = policy(o, memory, start.unsqueeze(0))
        act, _ = sample_actions(logits[0], greedy=greedy)
        obs, rew, term, trunc, _ = envs.step(act.numpy())
        end = np.logical_or(term, trunc)
        ret += rew
        length += 1
        for b in np.flatnonzero(end):
            if done_count[b] < quota[b]:
                results.append((float(bool(term[b]) and rew[b] > 0), float(ret[b]), int(length[b])))
            done_count[b] += 1
        ret[end], length[end] = 0.0, 0
        start = torch.from_numpy(end)
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

    for ep in range(episodes):
        obs, _ = env.reset()
        memory, start, done = policy.initial_state(1), torch.ones(1, 1, dtype=torch.bool), False
        ret = 0.0
        while not done:
            snap(f"{ep + 1}/{episodes}: {env.mission}")
            o = {k: torch.from_numpy(np.asarray(obs[k]))[None, None] for k in ("image", "mission")}
            logits, _, memory, _ = policy(o, memory, start)
            act, _ = sample_actions(logits[0], greedy=greedy)
            obs, rew, term, trunc, _ = env.step(int(act))
            ret += float(rew)
            done, start = bool(term or trunc), torch.zeros(1, 1, dtype=torch.bool)
        snap(f"{ep + 1}/{episodes}: {'success' if ret > 0 else 'failure'} (return {ret:.2f})")
    env.close()
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return len(frames)
