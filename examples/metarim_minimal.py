r"""Meta-RIM in one file: fast, masked adaptation of the RIM modules inside long
sequences, slow meta-learning of everything else (Madan et al., ICLR 2021).

Read it top to bottom, as CleanRL's ``ppo_atari_lstm.py``: the arguments, the setup
(tasks, envs, the RIM policy and its :class:`~metarim.meta.MaskedMAML` wrapper), then
one update (collection with online inner steps, GAE, the inner chain and the outer PPO
loss, Adam, the carry of the fast weights) and the training loop. It uses only the
public primitives: :class:`~metarim.rl.ActorCritic` with a RIM memory,
:class:`~metarim.meta.MaskedMAML` (its partition into fast and slow parameters and
``adapt``), :func:`~metarim.meta.reduce_activity`, :class:`~metarim.rl.RolloutCollector`,
:func:`~metarim.envs.make_vec_env`, :func:`~metarim.rl.gae` and
:func:`~metarim.rl.ppo_loss`. ``tests/test_minimal_example.py`` checks that its updates
equal :class:`metarim.algorithms.MetaRIM`'s (float64, same seed, exactly) with
``meta_window=0``: each chunk's chain runs whole here, where the learner's default
re-runs it in 4-step truncated windows from the stored memories (cheaper, same
learning: docs/results.md).

The update (the module docstring of :mod:`metarim.algorithms.meta_rim` gives the
reasons). Let :math:`\theta` be the fast parameters (the per-module recurrent weights of
the RIM mechanisms), :math:`\phi` the slow ones, ``C = num_steps // chunk_length`` the
chunks of one update and :math:`a_i \in \{0,1\}^N` the modules that the input attention
selected at some step of chunk :math:`i`; :math:`M(a)` masks the gradient blocks of the
other modules.

(1) Collection: chunk :math:`i` is collected by :math:`(\theta_i, \phi)`, with online
A2C steps :math:`\theta_{i+1} = \theta_i - \alpha\, M(a_i) \odot \nabla_\theta
L^{A2C}_i` (first order, :math:`\theta_0 = \theta`).

(2) GAE over the ``num_steps`` sequence of each env (only the last chunk bootstraps).

(3) For ``epochs`` × minibatches of env columns, from the current :math:`(\theta, \phi)`:

.. math::
    \theta_{i+1} = \theta_i - \alpha\, M(a_i) \odot \nabla_{\theta_i} L_i(\theta_i, \phi),
    \qquad \mathcal{L}_{outer} = \frac{1}{C} \sum_{i=0}^{C-1} L_i(\theta_i, \phi),
    \qquad (\theta, \phi) \gets \mathrm{Adam}(\nabla_{\theta,\phi} \mathcal{L}_{outer}),

with :math:`L_i` the clipped PPO loss of chunk :math:`i` and the gradient through every
inner step (second order unless ``--first-order``).

(4) Carry: :math:`\theta \gets \theta^{Adam} + (\theta_C - \theta_0)`, the inner progress
of the collection pass, so adaptation continues across updates.

    python examples/metarim_minimal.py --frames 200000 --env-backend tensor
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metarim.envs import make_vec_env
from metarim.meta import MaskedMAML, masked_update, reduce_activity
from metarim.rl import ActorCritic, Rollout, RolloutCollector, gae, ppo_loss
from metarim.tasks import Vocab, make_sampler


@dataclass
class Args:
    env: str = "BabyAI-GoToLocalS6N2-v0"
    """the BabyAI level"""
    env_backend: str = "minigrid"
    """``"minigrid"`` or ``"tensor"`` (the same episodes, batched in torch; GoTo levels)"""
    seed: int = 0
    """seed of torch, the task split and the envs"""
    frames: int = 200_000
    """frames to train for"""
    threads: int = 1
    """torch intra-op threads"""
    num_tasks: int = 20
    """tasks: disjoint seed ranges of the level"""
    held_out: float = 0.2
    """fraction of the tasks kept out of training"""
    num_envs: int = 16
    """envs, one training task each; each env is one long sequence of episodes"""
    num_steps: int = 64
    """steps per env per update (``C = num_steps // chunk_length`` chunks)"""
    chunk_length: int = 32
    """steps per chunk: one inner step per chunk"""
    epochs: int = 4
    """passes over the collected sequences per update"""
    batch_size: int = 256
    """frames per minibatch (whole sequences: ``batch_size // num_steps`` env columns)"""
    lr: float = 1e-3
    """outer (Adam) learning rate"""
    inner_lr: float = 10.0
    """inner step size alpha of the masked step"""
    first_order: bool = False
    """drop the second-order terms of the inner chain"""
    reset_memory: bool = True
    """zero the RIM memory at episode starts (the fast weights still carry over)"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    norm_adv: bool = True
    """normalise the advantages of each chunk (per minibatch)"""
    clip: float = 0.2
    """PPO clip range (policy ratio and value)"""
    value_coef: float = 0.5
    """value loss coefficient"""
    entropy_coef: float = 0.01
    """entropy bonus coefficient"""
    max_grad_norm: float = 0.5
    """outer gradient clipping"""
    hidden_size: int = 64
    """RIM memory size (over all modules)"""
    num_units: int = 4
    """RIM modules N"""
    k: int = 2
    """modules selected per step by the input attention"""
    combine: str = "heads"
    """how the mission meets the image code: ``"heads"`` (beside the memory output, read
    by the actor and critic), ``"film"`` or ``"concat"``"""
    mission_dim: int = 128
    """mission GRU size"""
    image_encoding: str = "raw"
    """the view's ids as float planes (``"raw"``) or one-hot (``"onehot"``)"""
    init: str = "kit"
    """linear layers outside the memory: the starter kit's unit-norm rows or ``"torch"``'s"""


def parse_args(argv: list[str] | None = None) -> Args:
    """:class:`Args` from the command line (``--num-envs 8``, ``--first-order``, ...)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type={"int": int, "float": float, "str": str}[f.type], default=f.default)
    args = Args(**vars(p.parse_args(argv)))
    if args.num_steps % args.chunk_length or args.num_steps // args.chunk_length < 2:
        p.error(f"--chunk-length {args.chunk_length} must divide --num-steps {args.num_steps} "
                "into at least 2 chunks")
    return args


@dataclass
class Run:
    """Everything that lives across updates."""

    envs: Any
    policy: ActorCritic
    """(θ, φ): the meta-parameters"""
    meta: MaskedMAML
    optimizer: torch.optim.Adam
    actor: ActorCritic
    """a plain copy holding (θ_i, φ) during collection"""
    collector: RolloutCollector
    episodes: deque
    frames: int = 0


def setup(args: Args) -> Run:
    """Tasks, envs, the RIM policy, its MaskedMAML wrapper, Adam, the actor and the collector."""
    torch.manual_seed(args.seed)
    # one training task (a range of episode seeds) per env column
    train_tasks, _ = make_sampler("seeds", level=args.env, num_tasks=args.num_tasks,
                                  seed=args.seed).split(args.held_out)
    tasks = [train_tasks.tasks[b % len(train_tasks.tasks)] for b in range(args.num_envs)]
    vocab = Vocab()
    envs = make_vec_env(tasks, args.num_envs, seed=args.seed, vocab=vocab, backend=args.env_backend)
    policy = ActorCritic(int(envs.single_action_space.n), vocab.max_size, memory="rim",
                         hidden_size=args.hidden_size, combine=args.combine, mission_dim=args.mission_dim,
                         image_encoding=args.image_encoding, init=args.init,
                         memory_kwargs={"num_units": args.num_units, "k": args.k})
    # fast θ = the RIM mechanisms' weights (by default), slow φ = everything else
    meta = MaskedMAML(policy, args.inner_lr, first_order=args.first_order)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.lr, eps=1e-5, foreach=True)
    actor = copy.deepcopy(policy)
    fast = set(meta.partition.fast)
    for name, p in actor.named_parameters():  # the online step differentiates θ_i only
        p.requires_grad_(name in fast)
    collector = RolloutCollector(envs, actor, args.chunk_length, reset_memory=args.reset_memory)
    return Run(envs, policy, meta, optimizer, actor, collector, deque(maxlen=100))


def replay(policy: Any, chunk: Rollout, cols: Any, args: Args) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Re-runs env columns ``cols`` of a chunk from its stored (detached) first memory.

    Returns ``log π(a_t | h_t)``, the entropy, ``V(h_t)`` (each ``(T, B)``) and the RIM
    selection masks ``(T, B, N)``.
    """
    obs = {"image": chunk.obs["image"][:, cols], "mission": chunk.obs["mission"][:, cols]}
    mem0 = tuple(m[:, cols][0] for m in chunk.memory)
    logits, values, _, masks = policy(obs, mem0, chunk.starts[:, cols] if args.reset_memory else None)
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, chunk.actions[:, cols].unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy, values, masks


def normalise(adv: Tensor, args: Args) -> Tensor:
    """``(A - mean A) / (std A + 1e-8)`` with ``--norm-adv``."""
    return (adv - adv.mean()) / (adv.std() + 1e-8) if args.norm_adv and adv.numel() > 1 else adv


def online_step(run: Run, chunk: Rollout, args: Args) -> None:
    r"""(1) θ_{i+1} = θ_i − α M(a_i) ⊙ ∇θ L^{A2C}_i on the actor, in place, first order.

    :math:`L^{A2C} = -\overline{\log\pi\, \hat A} + c_v \overline{(V - \hat R)^2} - c_H
    \overline{H}`, with GAE over this chunk alone (bootstrapped with its last value).
    """
    adv, ret = gae(chunk.rewards, chunk.values, chunk.ends, chunk.last_value,
                   gamma=args.gamma, lam=args.gae_lambda)
    adv = normalise(adv, args)
    logp, entropy, values, masks = replay(run.actor, chunk, slice(None), args)
    loss = (-(logp * adv.detach()).mean() + args.value_coef * ((values - ret) ** 2).mean()
            - args.entropy_coef * entropy.mean())
    params = dict(run.actor.named_parameters())
    names = run.meta.partition.fast
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    ref = params[names[0]]
    # M(a_i): a_n = 1 if module n was selected at some step of the chunk, in any env
    blocks = run.meta.partition.block_masks(reduce_activity(masks), dtype=ref.dtype, device=ref.device)
    masked_update({n: params[n] for n in names}, dict(zip(names, grads)), args.inner_lr, blocks, inplace=True)


def update(run: Run, args: Args) -> dict[str, float]:
    """One Meta-RIM update (module docstring, steps 1–4); returns metrics."""
    t0 = time.perf_counter()
    num_chunks = args.num_steps // args.chunk_length
    columns = max(1, args.batch_size // args.num_steps)

    # (1) collection: θ_0 ← θ in the actor (its values, and its dtype if the policy's
    # changed), then chunk i collected by (θ_i, φ) and followed by an online inner step
    start = {n: p.detach().clone() for n, p in run.policy.named_parameters()}
    dtype = next(run.policy.parameters()).dtype
    if next(run.actor.parameters()).dtype != dtype:
        run.actor.to(dtype)
    with torch.no_grad():
        for a, p in zip(run.actor.parameters(), run.policy.parameters()):
            a.copy_(p)
    chunks: list[Rollout] = []
    for _ in range(num_chunks):
        chunks.append(run.collector.collect())
        run.episodes.extend(chunks[-1].episodes)
        online_step(run, chunks[-1], args)  # the last one too: θ_C is carried (step 4)
    actor = dict(run.actor.named_parameters())
    online = {n: actor[n].detach().clone() for n in run.meta.partition.fast}

    # (2) GAE over each env's whole num_steps sequence, split back per chunk
    cat = lambda name: torch.cat([getattr(c, name) for c in chunks])  # noqa: E731
    adv, ret = gae(cat("rewards"), cat("values"), cat("ends"), chunks[-1].last_value,
                   gamma=args.gamma, lam=args.gae_lambda)
    advantages, returns = adv.split(args.chunk_length), ret.split(args.chunk_length)

    # (3) meta-training: epochs × minibatches of env columns, each through the inner chain
    outer_losses, inner_losses = [], []
    for _ in range(args.epochs):
        for cols in torch.randperm(args.num_envs).split(columns):
            learner = run.meta.clone()  # differentiable copy of (θ, φ)
            outer = []
            for i, chunk in enumerate(chunks):
                logp, entropy, values, masks = replay(learner, chunk, cols, args)
                # L_i(θ_i, φ): clipped PPO against the collection-time log-probs and values
                loss, _ = ppo_loss(logp, chunk.logprobs[:, cols], normalise(advantages[i][:, cols], args),
                                   values, chunk.values[:, cols], returns[i][:, cols], entropy,
                                   clip=args.clip, value_coef=args.value_coef,
                                   entropy_coef=args.entropy_coef)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()}")
                outer.append(loss)  # every chunk counts in the outer loss
                if i < num_chunks - 1:  # θ_{i+1} = θ_i − α M(a_i) ⊙ ∇θ_i L_i, kept in the graph
                    inner_losses.append(loss.item())
                    learner.adapt(loss, active=reduce_activity(masks), retain_graph=True)
            loss = torch.stack(outer).mean()  # L_outer = (1/C) Σ_i L_i(θ_i, φ)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # through every inner step into θ and φ
            norm = torch.nn.utils.clip_grad_norm_(run.policy.parameters(), args.max_grad_norm)
            if not torch.isfinite(norm):
                raise FloatingPointError("non-finite gradient norm")
            run.optimizer.step()
            outer_losses.append(loss.item())

    # (4) carry: θ ← θ^Adam + (θ_C − θ_0), the fast weights keep their inner progress
    with torch.no_grad():
        params = dict(run.policy.named_parameters())
        for n, value in online.items():
            params[n].add_(value - start[n])

    frames = sum(c.num_frames for c in chunks)
    run.frames += frames
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        "frames": float(run.frames),
        "rollout/success_rate": mean([e["success"] for e in run.episodes]),
        "rollout/return_mean": mean([e["return"] for e in run.episodes]),
        "losses/inner": mean(inner_losses),
        "losses/outer": mean(outer_losses),
        "time/fps": frames / (time.perf_counter() - t0),
    }


def main(argv: list[str] | None = None) -> int:
    """Trains for ``--frames`` frames, printing one line per update."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # learn2learn's clone reads .grad of non-leaf (cloned) GRU weights; harmless
    warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
    run = setup(args)
    try:
        while run.frames < args.frames:
            m = update(run, args)
            print(f"frames={int(m['frames'])} success={m['rollout/success_rate']:.3f} "
                  f"return={m['rollout/return_mean']:.3f} inner={m['losses/inner']:.4f} "
                  f"outer={m['losses/outer']:.4f} fps={m['time/fps']:.0f}", flush=True)
    finally:
        run.envs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
