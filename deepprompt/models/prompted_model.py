"""The ONE prompted model: frozen (or not) backbone + a prompt method + one head per task."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from deepprompt.errors import ConfigError
from deepprompt.models.backbones.base import BackboneAdapter
from deepprompt.models.heads import Head
from deepprompt.prompts.base import PromptMethod
from deepprompt.prompts.multi import MultiPrompt

_SEQ_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class Output(NamedTuple):
    logits: torch.Tensor | list[torch.Tensor]
    """[B, ...] for one task; a list of per-example tensors for a mixed batch (heads differ in width)."""
    loss: torch.Tensor | None


class PromptedModel(nn.Module):
    def __init__(self, backbone: nn.Module, adapter: BackboneAdapter, prompt: PromptMethod | MultiPrompt,
                 heads: dict[str, Head]):
        super().__init__()
        self.backbone = backbone
        self.prompt = prompt
        self.heads = nn.ModuleDict(heads)
        self.adapter = adapter
        for head in heads.values():
            head.bind(adapter)
        if prompt.freezes_backbone:
            backbone.requires_grad_(False)

    def forward(self, batch: dict, task: str | Sequence[str]) -> Output:
        """``task``: one task name for the whole batch, or one name per example (a mixed batch:
        each example gets its task's head and, with a ``MultiPrompt``, its task's prefix, in ONE
        backbone forward; ``logits`` is then a list of per-example tensors, since heads differ in width)."""
        seq = {k: batch[k] for k in _SEQ_KEYS if k in batch}
        ids = seq["input_ids"]
        per_example = 1
        if ids.dim() == 3:  # multiple choice: [B, C, L] -> [B*C, L]
            per_example = ids.shape[1]
            seq = {k: v.flatten(0, 1) for k, v in seq.items()}
            ids = seq["input_ids"]
        prompt = self.apply_prompt(ids.shape[0], task, ids.device, per_example)
        if prompt.input_embeds is None:
            hidden = self.adapter.forward(**seq)
        else:
            hidden = self._forward_with_input_prompt(seq, prompt.input_embeds)
        if not isinstance(task, str):
            return self._routed_heads(hidden, batch, list(task), per_example)
        head = self.heads[task]
        logits = head(hidden, batch)
        loss = head.loss(logits, batch) if _has_targets(batch) else None
        return Output(logits=logits, loss=loss)

    def apply_prompt(self, rows: int, task: str | Sequence[str], device, per_example: int = 1):
        """Run the prompt for ``rows`` sequences (``per_example`` per example of ``task``), hand its
        prefix to the backbone's attention, and return its ``PromptOutput`` (an input prompt's
        embeddings are the caller's to prepend). Generation calls this once per batch."""
        if isinstance(self.prompt, MultiPrompt):
            if isinstance(task, str):
                task = [task] * (rows // per_example)
            index = self.prompt.route(task, device).repeat_interleave(per_example)
            prompt = self.prompt(index)
        else:
            prompt = self.prompt(rows)
        self.adapter.set_prefix(prompt.layer_kv, prompt.prefix_mask)
        return prompt

    def _routed_heads(self, hidden: torch.Tensor, batch: dict, tasks: list[str], per_example: int) -> Output:
        """Each head on its own rows of the batch, scattered back to batch order. Every head runs,
        on zero rows if need be: under ZeRO-3 every rank must call the same modules."""
        unknown = sorted(set(tasks) - set(self.heads))
        if unknown:
            raise ConfigError(f"task {unknown[0]!r}: no head for it (heads: {', '.join(self.heads)})")
        b = len(tasks)
        per_row = hidden.unflatten(0, (b, per_example))  # [B, C, L, h] (C = 1 unless multiple choice)
        rows_out: list = [None] * b
        loss, with_targets = None, _has_targets(batch)
        for name, head in self.heads.items():
            rows = [i for i, t in enumerate(tasks) if t == name]
            idx = torch.tensor(rows, dtype=torch.long, device=hidden.device)
            sub = {k: v.index_select(0, idx) for k, v in batch.items()
                   if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == b}
            logits = head(per_row.index_select(0, idx).flatten(0, 1), sub)
            for j, i in enumerate(rows):
                rows_out[i] = logits[j]
            if with_targets and rows:  # the batch mean of per-task mean losses, weighted by examples
                part = head.loss(logits, sub) * (len(rows) / b)
                loss = part if loss is None else loss + part
        return Output(logits=rows_out, loss=loss)

    def _forward_with_input_prompt(self, seq: dict, prompt_embeds: torch.Tensor) -> torch.Tensor:
        """Prepend P prompt embeddings; return the states of the real tokens only."""
        ids = seq.pop("input_ids")
        embeds = self.adapter.word_embeddings()(ids)
        b, p = ids.shape[0], prompt_embeds.shape[1]
        seq["inputs_embeds"] = torch.cat([prompt_embeds.to(embeds.dtype), embeds], dim=1)
        if "attention_mask" in seq:
            seq["attention_mask"] = torch.cat([seq["attention_mask"].new_ones(b, p), seq["attention_mask"]], 1)
        if "token_type_ids" in seq:
            seq["token_type_ids"] = torch.cat([seq["token_type_ids"].new_zeros(b, p), seq["token_type_ids"]], 1)
        return self.adapter.forward(**seq)[:, p:]


def _has_targets(batch: dict) -> bool:
    return "labels" in batch or "start_positions" in batch
