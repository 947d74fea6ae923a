"""RL engine: actor-critic policy, memory cores, rollouts, GAE and PPO/A2C losses."""

from __future__ import annotations

from metarim.rl.losses import a2c_loss, gae, ppo_loss
from metarim.rl.memory import MEMORY_CORES, LSTMCore, make_memory, register_memory
from metarim.rl.policy import ActorCritic, MissionEncoder
from metarim.rl.rollout import Rollout, RolloutCollector, sample_actions

__all__ = [
    "MEMORY_CORES",
    "ActorCritic",
    "LSTMCore",
    "MissionEncoder",
    "Rollout",
    "RolloutCollector",
    "a2c_loss",
    "gae",
    "make_memory",
    "ppo_loss",
    "register_memory",
    "sample_actions",
]
