"""Distributed evaluation: each rank predicts its shard, rank 0 scores the gathered predictions.
A generative task (``task.generates``) predicts by generating (``engine/generate.py``)."""
from __future__ import annotations

import torch

from deepprompt.data.sampler import eval_shard
from deepprompt.engine import comm
from deepprompt.engine.generate import generate
from deepprompt.tasks import Task


@torch.no_grad()
def evaluate(engine, task: Task, split: str, batch_size: int) -> dict[str, float]:
    """Metrics of ``task`` on ``split``, identical on every rank."""
    features = task.features(split)
    world, rank = comm.world_size(), comm.rank()
    was_training = engine.module.training
    engine.eval()
    mine = []
    for idx in eval_shard(len(features), world, rank, batch_size):
        real = [i for i in idx if i >= 0]
        feats = [features[i] for i in (real or [0])]  # an all-padding batch still runs its forward
        if task.generates:  # every rank runs as many forwards (generate's sync)
            outputs = generate(engine, task.generation_prompts(feats), task.name, **task.generation_options())
        else:
            batch = {k: v.to(engine.device) for k, v in task.collate(feats).items()}
            outputs = engine(batch, task.name).logits.float().cpu()
        if real:
            mine += task.predict(outputs, feats)
    gathered = comm.all_gather_object(mine)
    result = None
    if rank == 0:
        predictions = [p for part in gathered for p in part]
        assert len(predictions) == len(features), (len(predictions), len(features))
        result = task.metrics(predictions, split)
    result = comm.broadcast_object(result)
    if was_training:
        engine.train()
    return result
