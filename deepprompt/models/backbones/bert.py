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


def extend_mask_for_prefix(mask: torch.Tensor | None, p: int, prefix_mask: torch.Tensor | None = None,
                           lengths: tuple[int, int] | None = None) -> torch.Tensor | None:
    """Add ``p`` leading key columns for the prefix (bool or additive masks).

    Every valid query may see every prefix column, except where ``prefix_mask`` [B, P] (True =
    visible) hides one for that example. ``mask`` None means "all visible"; with a ``prefix_mask``
    a bool mask is then built, which needs ``lengths`` = (query length, key length without prefix).
    """
    if mask is None:
        if prefix_mask is None:
            return None
        q_len, k_len = lengths
        b = prefix_mask.shape[0]
        cols = prefix_mask[:, None, None, :].expand(b, 1, q_len, p)
        return torch.cat([cols, cols.new_ones(b, 1, q_len, k_len)], dim=-1)
    if prefix_mask is not None and mask.shape[0] != prefix_mask.shape[0]:
        mask = mask.expand(prefix_mask.shape[0], *mask.shape[1:])
    shape = (*mask.shape[:-1], p)
    if mask.dtype == torch.bool:
        visible = mask.any(dim=-1, keepdim=True).expand(shape)  # a fully masked query row stays so
        if prefix_mask is not None:
            visible = visible & prefix_mask[:, None, None, :]
        return torch.cat([visible, mask], dim=-1)
    cols = mask.new_zeros(shape)
    if prefix_mask is not None:
        hidden = torch.finfo(mask.dtype).min
        cols = cols.masked_fill(~prefix_mask[:, None, None, :], hidden)
    return torch.cat([cols, mask], dim=-1)


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
        # RoBERTa's positions start after padding_idx: 514 embeddings hold 512 tokens.
        c = self.model.config
        return c.max_position_embeddings - (c.pad_token_id or 0) - 1
