"""BERT and RoBERTa: their attention goes through transformers' AttentionInterface.

We register one attention function, ``deepprompt``, that prepends the layer's prefix keys/values
(and all-visible mask columns for them) and then runs transformers' own SDPA attention. The model
is loaded with ``attn_implementation="deepprompt"`` and builds its masks as SDPA would.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from deepprompt.models.backbones.base import PREFIX_ATTR, BackboneAdapter
from deepprompt.registry import BACKBONES

ATTN_IMPL = "deepprompt"


def extend_mask_for_prefix(mask: torch.Tensor | None, p: int) -> torch.Tensor | None:
    """Add ``p`` leading key columns that every valid query may see (bool or additive masks)."""
    if mask is None:
        return None
    shape = (*mask.shape[:-1], p)
    if mask.dtype == torch.bool:
        visible = mask.any(dim=-1, keepdim=True).expand(shape)  # a fully masked query row stays so
        return torch.cat([visible, mask], dim=-1)
    return torch.cat([mask.new_zeros(shape), mask], dim=-1)


def prefix_attention(module, query, key, value, attention_mask, **kwargs):
    prefix = getattr(module, PREFIX_ATTR, None)
    if prefix is not None:
        pk, pv = prefix  # [B, heads, P, head_dim]
        key = torch.cat([pk.to(key.dtype), key], dim=2)
        value = torch.cat([pv.to(value.dtype), value], dim=2)
        attention_mask = extend_mask_for_prefix(attention_mask, pk.shape[2])
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTN_IMPL, prefix_attention)
AttentionMaskInterface.register(ATTN_IMPL, sdpa_mask)


@BACKBONES.register("bert")
class BertAdapter(BackboneAdapter):
    model_types = ("bert",)
    load_kwargs = {"add_pooling_layer": False, "attn_implementation": ATTN_IMPL}

    def _install(self) -> None:
        self.model.set_attn_implementation(ATTN_IMPL)


@BACKBONES.register("roberta")
class RobertaAdapter(BertAdapter):
    model_types = ("roberta", "xlm-roberta", "camembert")
    tokenizer_kwargs = {"add_prefix_space": True}

    def max_positions(self) -> int:
        # RoBERTa's positions start after padding_idx: 514 embeddings hold 512 tokens.
        c = self.model.config
        return c.max_position_embeddings - (c.pad_token_id or 0) - 1
