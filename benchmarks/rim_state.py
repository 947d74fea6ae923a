"""How large a RIM memory gets: the largest ``|h|`` and ``|c|`` over rollouts of a trained
policy, under both readings of the communication attention (``--rim-comm``).

Loads a run's checkpoint (the newest, or ``--checkpoint``), then for each reading builds
the learner with the run's config and that ``rim_comm``, loads the same weights and
collector state, and collects ``--rollouts`` rollouts with no update in between. Prints
one JSON object: per reading, per rollout, ``[max |h|, max |c|]`` over every stored step
(``c`` only for LSTM modules).

With ``kept`` (metarim before issue 20) an inactive module's kept state already holds a
communication residual and is read again, so ``|h|`` can grow geometrically over long
episodes; with ``cells`` (the reference code's reading) every ``|h|`` is bounded by
``1 + max |communication output|`` (``tests/test_rim.py``). An LSTM's cell state ``c``
grows at most linearly under both.

    python benchmarks/rim_state.py --run runs/rim-s5 --checkpoint runs/rim-s5/checkpoints/ckpt-00000330.pt
"""

from __future__ import annotations

import argparse
import json
import pathlib

import torch


def peaks(run: pathlib.Path, checkpoint: pathlib.Path, reading: str, rollouts: int) -> list[list[float]]:
    """``[max |h|, max |c|]`` of each of ``rollouts`` rollouts under ``reading``."""
    from metarim.algorithms import make_learner, prepare_config
    from metarim.checkpoint import load_checkpoint
    from metarim.config import TrainConfig

    saved = json.loads((run / "config.json").read_text())["config"]
    config = prepare_config(TrainConfig.from_dict({**saved, "rim_comm": reading}, legacy=True))
    if config.memory != "rim":
        raise SystemExit(f"rim_state: {run} is not a RIM run (memory={config.memory!r})")
    learner = make_learner(config)
    try:
        learner.load_state_dict(load_checkpoint(checkpoint))
        if not hasattr(learner, "collector"):
            raise SystemExit(f"rim_state: algo {config.algo!r} has no single collector; use a ppo/a2c/metarim run")
        out = []
        with torch.no_grad():
            for _ in range(rollouts):
                memory = learner.collector.collect().memory
                out.append([round(float(m.abs().max()), 3) for m in memory])
        return out
    finally:
        learner.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=pathlib.Path, required=True, help="a run folder with memory='rim'")
    p.add_argument("--checkpoint", type=pathlib.Path, help="default: the run's newest checkpoint")
    p.add_argument("--rollouts", type=int, default=4)
    args = p.parse_args()
    from metarim.checkpoint import latest_checkpoint

    if not (args.run / "config.json").is_file():
        p.error(f"--run {args.run}: no config.json there; pass a run folder")
    checkpoint = args.checkpoint or latest_checkpoint(args.run)
    if checkpoint is None or not pathlib.Path(checkpoint).is_file():
        p.error(f"no checkpoint: pass --checkpoint or a run folder with checkpoints/ (got {checkpoint})")
    if args.rollouts < 1:
        p.error(f"--rollouts {args.rollouts} must be >= 1")
    torch.set_num_threads(1)
    result = {"run": str(args.run), "checkpoint": str(checkpoint),
              **{reading: peaks(args.run, pathlib.Path(checkpoint), reading, args.rollouts)
                 for reading in ("kept", "cells")}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
