"""What one masked inner step does, as a function of the inner learning rate.

Loads a trained run, collects ``--pairs`` pairs of consecutive 32-step chunks of 16 envs
with its policy, takes on each pair one masked first-order inner step (``MaskedMAML.adapt``, the same A2C/PPO loss
Meta-RIM uses, GAE over both chunks) on chunk 0 for each learning rate, and reports

* ``loss0_before`` / ``loss0_after``: the loss of chunk 0 itself (does the step do
  anything?),
* ``loss1_before`` / ``loss1_after``: the loss of chunk 1 under the adapted weights
  (Meta-RIM's outer loss: does the step help, or hurt, on what comes next?),
* ``max_dp`` / ``mean_dp``: the change of the action probabilities on chunk 1,
* ``step_norm``: the norm of the change of the fast weights,

each the mean over the pairs.

    python benchmarks/inner_lr.py --run results/gotolocal/runs/metarim-s0

``--rule all`` takes MAML's step instead: plain SGD on every parameter (learn2learn
``MAML``) with the A2C loss, as ``metarim.algorithms.maml`` does.

    python benchmarks/inner_lr.py --run results/gotolocal/runs/maml-s0 --rule all

``--fast-params attention`` steps the attentions instead of the mechanisms (the reversed
roles).

Prints one JSON object. The run's ``inner_lr`` is not used; ``--rates`` are.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch


def _loss(module, chunks, targets, config, kind: str, i: int) -> float:
    """Chunk ``i``'s loss under ``module``, no gradient."""
    from metarim.algorithms.objectives import rollout_loss

    with torch.no_grad():
        return rollout_loss(module, chunks[i], config, kind=kind, targets=targets[i])[0].item()


def _probs(module, chunk) -> torch.Tensor:
    """Action probabilities of ``module`` over ``chunk``, re-run from its stored memory."""
    with torch.no_grad():
        logits = module({"image": chunk.obs["image"], "mission": chunk.obs["mission"]},
                        tuple(m[0] for m in chunk.memory), chunk.starts)[0]
    return logits.softmax(-1)


def measure(meta, chunks, targets, config, kind: str, unadapted: tuple[float, torch.Tensor]) -> dict[str, float]:
    """One inner step of ``meta`` (``MaskedMAML`` or learn2learn ``MAML``) on ``chunks[0]``;
    its effect on both chunks. ``unadapted``: chunk 1's loss and action probabilities
    under the unadapted policy (the same for every rate, so computed once per pair)."""
    from metarim.algorithms.objectives import rollout_loss
    from metarim.meta.backends import quiet_nonleaf_grad
    from metarim.meta.partition import reduce_activity

    masked = hasattr(meta, "partition")
    with quiet_nonleaf_grad():
        learner = meta.clone(first_order=True) if masked else meta.clone()
        loss, _, masks = rollout_loss(learner, chunks[0], config, kind=kind, targets=targets[0])
        before = {n: t.detach().clone() for n, t in learner.module.named_parameters()}
        if masked:
            learner.adapt(loss, active=reduce_activity(masks))
        else:
            learner.adapt(loss)
    step = sum((t.detach() - before[n]).square().sum() for n, t in learner.module.named_parameters())
    loss1, probs1 = unadapted
    dp = (_probs(learner, chunks[1]) - probs1).abs()
    return {"loss0_before": loss.item(), "loss0_after": _loss(learner, chunks, targets, config, kind, 0),
            "loss1_before": loss1, "loss1_after": _loss(learner, chunks, targets, config, kind, 1),
            "max_dp": dp.max().item(), "mean_dp": dp.mean().item(), "step_norm": float(step) ** 0.5}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a trained run folder (any RIM-memory learner)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.1, 1, 3, 10, 30, 100])
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--chunk-length", type=int, default=32)
    p.add_argument("--rule", choices=("masked", "all"), default="masked",
                   help="masked: Meta-RIM's masked step on the fast weights; all: MAML's step on every parameter")
    p.add_argument("--fast-params", choices=("modules", "attention"), default="modules",
                   help="the masked step's fast set (metarim.meta.partition.FAST_PRESETS): the RIM "
                        "mechanisms, or the attentions (the paper's reversed roles)")
    p.add_argument("--pairs", type=int, default=4, help="chunk pairs averaged over")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--env-backend", choices=("minigrid", "tensor"), default="tensor")
    args = p.parse_args(argv)

    import learn2learn as l2l

    from metarim.algorithms.objectives import sequence_targets
    from metarim.envs import make_vec_env
    from metarim.evaluation.evaluate import load_run
    from metarim.meta.maml import MaskedMAML
    from metarim.rl.rollout import RolloutCollector
    from metarim.tasks import Task

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    config, policy, vocab, _ = load_run(pathlib.Path(args.run))
    if args.rule == "masked" and config.memory != "rim":
        raise SystemExit(f"error: {args.run} has memory={config.memory!r}; the masked step needs a RIM run")
    envs = make_vec_env(Task(config.env), args.num_envs, seed=args.seed, vocab=vocab, backend=args.env_backend)
    collector = RolloutCollector(envs, policy, args.chunk_length)
    if args.rule == "masked":  # Meta-RIM's step and loss
        kind, make = "ppo", lambda lr: MaskedMAML(policy, lr, first_order=True, fast=args.fast_params)
    else:  # MAML's
        kind, make = "a2c", lambda lr: l2l.algorithms.MAML(policy, lr=lr, first_order=True)
    rows: dict[float, list[dict[str, float]]] = {lr: [] for lr in args.rates}
    for _ in range(args.pairs):
        chunks = [collector.collect() for _ in range(2)]
        targets = sequence_targets(chunks, config)
        unadapted = (_loss(policy, chunks, targets, config, kind, 1), _probs(policy, chunks[1]))
        for lr in args.rates:
            rows[lr].append(measure(make(lr), chunks, targets, config, kind, unadapted))
    envs.close()
    table = [{"inner_lr": lr, **{k: sum(r[k] for r in rs) / len(rs) for k in rs[0]}} for lr, rs in rows.items()]
    fast = MaskedMAML(policy, 1.0, fast=args.fast_params).partition.fast if args.rule == "masked" else dict(policy.named_parameters())
    fast_norm = sum(t.detach().square().sum() for n, t in policy.named_parameters() if n in fast) ** 0.5
    print(json.dumps({"benchmark": "inner_lr", "run": str(args.run), "rule": args.rule,
                      "fast_params": args.fast_params,
                      "adapted_weight_norm": float(fast_norm),
                      "pairs": args.pairs, "frames_per_chunk": args.num_envs * args.chunk_length,
                      "rows": table}, indent=1))


if __name__ == "__main__":
    main()
