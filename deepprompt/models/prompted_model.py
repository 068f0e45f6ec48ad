"""The ONE prompted model: frozen (or not) backbone + a prompt method + one head per task."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from deepprompt.models.backbones.base import BackboneAdapter
from deepprompt.models.heads import Head
from deepprompt.prompts.base import PromptMethod

_SEQ_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class Output(NamedTuple):
    logits: torch.Tensor
    loss: torch.Tensor | None


class PromptedModel(nn.Module):
    def __init__(self, backbone: nn.Module, adapter: BackboneAdapter, prompt: PromptMethod,
                 heads: dict[str, Head]):
        super().__init__()
        self.backbone = backbone
        self.prompt = prompt
        self.heads = nn.ModuleDict(heads)
        self.adapter = adapter
        if prompt.freezes_backbone:
            backbone.requires_grad_(False)

    def forward(self, batch: dict, task: str) -> Output:
        seq = {k: batch[k] for k in _SEQ_KEYS if k in batch}
        ids = seq["input_ids"]
        if ids.dim() == 3:  # multiple choice: [B, C, L] -> [B*C, L]
            seq = {k: v.flatten(0, 1) for k, v in seq.items()}
            ids = seq["input_ids"]
        prompt = self.prompt(ids.shape[0])
        self.adapter.set_prefix(prompt.layer_kv)
        if prompt.input_embeds is None:
            hidden = self.adapter.forward(**seq)
        else:
            hidden = self._forward_with_input_prompt(seq, prompt.input_embeds)
        head = self.heads[task]
        logits = head(hidden, batch)
        loss = head.loss(logits, batch) if _has_targets(batch) else None
        return Output(logits=logits, loss=loss)

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
