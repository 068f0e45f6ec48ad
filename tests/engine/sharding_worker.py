"""One rank of a sharding check, launched by tests/engine/test_sharding.py:

    deepspeed --num_gpus 2 tests/engine/sharding_worker.py MODEL_DIR DS_CONFIG OUT_DIR [key=value ...]

Builds the tiny model through ``ds_setup.build`` (the trainer's path), trains 3 steps on its own
share of each global batch, then counts what this process REALLY stores of the frozen backbone:
the gathered tensor of every parameter that is materialised now (``p.data``), plus its ZeRO-3
partitions (primary ``ds_tensor``, hpZ's secondary). Writes ``OUT_DIR/rank<r>.json``.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def stored(module: torch.nn.Module, frozen: bool) -> int:
    n = 0
    for p in module.parameters():
        if p.requires_grad == frozen:
            continue
        n += p.data.numel()  # 0 while partitioned (ZeRO-3 frees it), the whole tensor while gathered
        for part in (getattr(p, "ds_tensor", None), getattr(p, "ds_secondary_tensor", None)):
            n += 0 if part is None else part.numel()
    return n


def numel(p) -> int:
    return getattr(p, "ds_numel", p.numel())


def main(model_dir: str, ds_config: str, out_dir: str, *overrides: str) -> None:
    torch.set_num_threads(1)
    from deepprompt.engine import comm, layout
    from tests.tiny import build_zero3

    world = int(os.environ["WORLD_SIZE"])
    run, built, task = build_zero3(Path(model_dir), f"train.batch_size={4 * world}", *overrides, ds_config=ds_config)
    rank, feats, losses = comm.rank(), task.features("train"), []
    for step in range(3):
        start = 4 * world * step + 4 * rank
        loss = built.engine(task.collate(feats[start:start + 4]), task.name).loss
        built.engine.backward(loss)
        built.engine.step()
        losses.append(comm.all_reduce(loss.detach().double()).item() / world)
    backbone = built.model.backbone
    hidden = built.adapter.spec().hidden
    trainable = torch.nn.ModuleList([built.model.prompt, built.model.heads])
    held = layout.frozen_held(backbone)
    result = {
        "rank": rank, "losses": losses, "stored": stored(backbone, frozen=True),
        "held": {"shard": held.shard, "whole": held.whole},
        "frozen_total": sum(numel(p) for p in backbone.parameters()),
        "frozen_small": sum(numel(p) for p in backbone.parameters() if numel(p) <= 10 * hidden),
        "tensors": sum(1 for _ in backbone.parameters()),
        "threshold": built.ds_config["zero_optimization"].get("stage3_param_persistence_threshold"),
        "prompt_whole": all(p.data.numel() == numel(p) for p in trainable.parameters()),
        "largest_trainable": max(numel(p) for p in trainable.parameters()),
        "shard_group": layout.shard_group(backbone),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    from deepprompt.engine import comm

    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
    comm.barrier()
    comm.shutdown()  # as the trainer ends: no gloo thread left to race the interpreter's exit
