"""Plain (no DeepSpeed) prompted models on tiny saved backbones, briefly trained, for artifact tests."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel

import deepprompt.models.backbones  # noqa: F401  (registers the families)
from deepprompt.config import RunConfig, load_config
from deepprompt.models.assembly import HeadSpec, assemble
from deepprompt.models.backbones.base import family_for_model_type
from deepprompt.models.loading import load_tokenizer_and_config
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.tasks import Task, build_task
from tests.tiny import FIXTURES


def run_config(path: Path, *overrides: str) -> RunConfig:
    return load_config(None, [f"model.path={path}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4",
                              "task.max_seq_length=32", "prompt.dropout=0.0", *overrides])


def plain_model(run: RunConfig, seed: int = 0) -> tuple[PromptedModel, Task]:
    """The PromptedModel ``ds_setup.build`` would make, without DeepSpeed, in eval mode."""
    tokenizer, config = load_tokenizer_and_config(run.model.path)
    task = build_task(run.task, tokenizer)
    family = family_for_model_type(config.model_type, run.model.family)
    backbone = AutoModel.from_pretrained(run.model.path, **family.load_kwargs)
    torch.manual_seed(seed)
    model = assemble(backbone, family(backbone), run.prompt, [HeadSpec(task.name, task.head, len(task.labels))])
    return model.eval(), task


def train_briefly(model: PromptedModel, task: Task, steps: int = 8, lr: float = 3e-2) -> None:
    """A few AdamW steps on the fixture data: prompt and head move away from their init."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    feats = task.features("train")
    model.train()
    for step in range(steps):
        batch = task.collate(feats[4 * step: 4 * step + 4])
        loss = model(batch, task.name).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def dev_batch(task: Task, n: int = 4) -> dict:
    return task.collate(task.features("dev")[:n])


TEST_TASK = "tiny-ner"


def register_test_task() -> str:
    """A second token task (a WNUT-16 reader with two entity types, so a narrower head) for serving
    several artifacts side by side; registered once per process."""
    from deepprompt.registry import TASKS
    from deepprompt.tasks.ner import Wnut16

    if TEST_TASK not in TASKS:
        @TASKS.register(TEST_TASK)
        class TinyNer(Wnut16):
            entity_types = ("person", "geo-loc")
    return TEST_TASK
