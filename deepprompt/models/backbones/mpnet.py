"""MPNet: its self-attention adds a shared relative-position bias and takes no past key/values, so
the prefix goes in through a replacement of ``MPNetSelfAttention.forward``.

A prefix key is a "virtual token" with content but no position: token->token scores keep MPNet's
q.k / sqrt(d) + relative-position bias exactly, token->prefix scores are q.pk / sqrt(d) with no bias,
and both compete in one softmax. Without a prefix the stock forward runs unchanged.
"""
from __future__ import annotations

import math
import types

import torch
from torch import nn

from deepprompt.models.backbones.base import (PREFIX_ATTR, BackboneAdapter, extend_mask_for_prefix,
                                              positions_after_padding)
from deepprompt.registry import BACKBONES


def prefixed_mpnet_attention(self, hidden_states, attention_mask=None, position_bias=None,
                             output_attentions=False, **kwargs):
    prefix = getattr(self, PREFIX_ATTR, None)
    if prefix is None:
        return type(self).forward(self, hidden_states, attention_mask, position_bias, output_attentions, **kwargs)
    pk, pv, prefix_mask = prefix  # [B, H, P, d] x 2, [B, P] bool (True = visible) or None
    b, length = hidden_states.shape[:2]

    def heads(x):
        return x.view(b, length, -1, self.attention_head_size).transpose(1, 2)

    q, k, v = heads(self.q(hidden_states)), heads(self.k(hidden_states)), heads(self.v(hidden_states))
    p = pk.shape[2]
    keys = torch.cat([pk.to(k.dtype), k], dim=2)
    values = torch.cat([pv.to(v.dtype), v], dim=2)
    scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
    if position_bias is not None:  # [B, H, L, L]; the prefix columns get none
        scores = scores + nn.functional.pad(position_bias, (p, 0))
    mask = extend_mask_for_prefix(attention_mask, p, prefix_mask, (length, length))
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool \
            else scores + mask
    probs = self.dropout(nn.functional.softmax(scores, dim=-1))
    ctx = torch.matmul(probs, values).transpose(1, 2).reshape(b, length, self.all_head_size)
    out = self.o(ctx)
    return (out, probs) if output_attentions else (out,)


@BACKBONES.register("mpnet")
class MPNetAdapter(BackboneAdapter):
    model_types = ("mpnet",)
    load_kwargs = {"add_pooling_layer": False}

    def max_positions(self) -> int:
        return positions_after_padding(self.model.config)

    def attention_modules(self) -> list[nn.Module]:
        return [layer.attention.attn for layer in self.model.encoder.layer]

    def _install(self) -> None:
        for module in self.attention_modules():
            module.forward = types.MethodType(prefixed_mpnet_attention, module)
