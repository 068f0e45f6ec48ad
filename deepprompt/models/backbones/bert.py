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

from deepprompt.models.backbones.base import (PREFIX_ATTR, BackboneAdapter, extend_mask_for_prefix,
                                              positions_after_padding)
from deepprompt.registry import BACKBONES

ATTN_IMPL = "deepprompt"


def prefix_attention(module, query, key, value, attention_mask, **kwargs):
    prefix = getattr(module, PREFIX_ATTR, None)
    if prefix is not None:
        pk, pv, prefix_mask = prefix  # [B, heads, P, head_dim] x 2, [B, P] bool or None
        attention_mask = extend_mask_for_prefix(attention_mask, pk.shape[2], prefix_mask,
                                                (query.shape[2], key.shape[2]))
        key = torch.cat([pk.to(key.dtype), key], dim=2)
        value = torch.cat([pv.to(value.dtype), value], dim=2)
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
        return positions_after_padding(self.model.config)
