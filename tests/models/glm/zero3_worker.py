"""One rank of a ZeRO-3 GLM check (run in-process as 1 rank, or by the DeepSpeed launcher as 2):
load a GLM checkpoint partitioned, gather it back, and run a prefix + cloze-head model through a
DeepSpeed engine; every rank writes what it saw to ``out_dir/rank<r>.pt``.

    deepspeed --num_gpus 2 tests/models/glm/zero3_worker.py MODEL_DIR OUT_DIR
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from deepprompt.config import load_config
from deepprompt.engine import comm, ds_setup
from deepprompt.models.backbones.glm import GLMAdapter
from deepprompt.models.assembly import HeadSpec, assemble
from deepprompt.models.prompted_model import PromptedModel

REPO = Path(__file__).resolve().parents[3]


def fixed_batch() -> dict:
    g = torch.Generator().manual_seed(3)
    return {"input_ids": torch.randint(0, 300, (4, 9), generator=g), "attention_mask": torch.ones(4, 9, dtype=torch.long),
            "mask_positions": torch.tensor([1, 4, 8, 2]), "candidate_ids": torch.randint(0, 300, (4, 3), generator=g),
            "labels": torch.tensor([0, 1, 2, 1])}


def prompted(backbone) -> PromptedModel:
    """Prefix (P=3, dropout 0) + a cloze head, seeded: identical with and without ZeRO-3."""
    adapter = GLMAdapter(backbone)
    cfg = load_config(None, ["prompt.length=3", "prompt.dropout=0"]).prompt
    torch.manual_seed(1)
    return assemble(backbone, adapter, cfg, [HeadSpec("t", "cloze", 0)])


def run(model_dir: str, out_dir: str, ds_config: str = "ds_configs/zero3.json") -> dict:
    import deepspeed

    comm.init_distributed()
    world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
    run_cfg = load_config(None, [f"train.batch_size={4 * world}", "train.micro_batch_size=4"])
    ds = ds_setup.resolve_ds_config(ds_setup.read_ds_config(str(REPO / ds_config)), run_cfg, world, 32)
    backbone = GLMAdapter.load_model(model_dir, torch.float32, ds_setup.public(ds))
    local = sum(p.ds_tensor.numel() for p in backbone.parameters())
    with deepspeed.zero.GatheredParameters(list(backbone.parameters())):
        state = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = prompted(backbone)
    trainable = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(trainable, lr=1e-2),
                                      config=ds_setup.public(ds))
    out = engine(fixed_batch(), "t")
    engine.backward(out.loss)
    engine.step()
    after = engine(fixed_batch(), "t")
    result = {"state": state, "local_numel": local, "logits": out.logits.detach(), "loss": out.loss.item(),
              "logits_after_step": after.logits.detach(), "world": world}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
    comm.barrier()
    comm.shutdown()  # as the trainer ends: no gloo thread left to race the interpreter's exit
