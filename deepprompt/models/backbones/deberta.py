"""DeBERTa-v2/v3: disentangled attention with relative positions, so the prefix needs its own math.

A prefix key is a "virtual token" with content but no position. Token->token scores keep DeBERTa's
full form (content->content + content->position + position->content over the tokens' relative
positions, unchanged by the prefix); token->prefix scores are content->content only, with the same
1/sqrt(d * scale_factor) scaling. So the tokens' relative geometry is exactly what the pretrained
model saw, and the prefix competes in the same softmax.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from deepprompt.models.backbones.base import PREFIX_ATTR, BackboneAdapter
from deepprompt.registry import BACKBONES


def _split_heads(module, x: torch.Tensor) -> torch.Tensor:
    return module.transpose_for_scores(x, module.num_attention_heads)  # [B*H, L, d]


def prefixed_disentangled_attention(self, hidden_states, attention_mask, output_attentions=False,
                                    query_states=None, relative_pos=None, rel_embeddings=None):
    prefix = getattr(self, PREFIX_ATTR, None)
    if prefix is None:
        return type(self).forward(self, hidden_states, attention_mask, output_attentions,
                                  query_states, relative_pos, rel_embeddings)
    q_in = hidden_states if query_states is None else query_states
    q = _split_heads(self, self.query_proj(q_in))
    k = _split_heads(self, self.key_proj(hidden_states))
    v = _split_heads(self, self.value_proj(hidden_states))
    heads = self.num_attention_heads
    bh, length, d = q.shape
    scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = torch.sqrt(torch.tensor(d, dtype=torch.float) * scale_factor).to(q.dtype)

    scores = torch.bmm(q, k.transpose(-1, -2) / scale)
    if self.relative_attention:
        scores = scores + self.disentangled_attention_bias(
            q, k, relative_pos, self.pos_dropout(rel_embeddings), scale_factor)
    pk, pv, prefix_mask = prefix  # [B, H, P, d] x 2, [B, P] bool (True = visible) or None
    p = pk.shape[2]
    pk = pk.reshape(bh, p, d).to(q.dtype)
    pv = pv.reshape(bh, p, d).to(v.dtype)
    scores = torch.cat([torch.bmm(q, pk.transpose(-1, -2) / scale), scores], dim=-1)
    scores = scores.view(-1, heads, length, p + length)

    mask = attention_mask.bool()  # [B, 1, L, L]
    visible = mask.any(dim=-1, keepdim=True).expand(*mask.shape[:-1], p)
    if prefix_mask is not None:  # padding of a shorter prefix, or no prefix on this layer for that example
        visible = visible & prefix_mask[:, None, None, :]
    mask = torch.cat([visible, mask], dim=-1)
    scores = scores.masked_fill(~mask, torch.finfo(q.dtype).min)
    probs = self.dropout(nn.functional.softmax(scores, dim=-1))
    ctx = torch.bmm(probs.view(bh, length, p + length), torch.cat([pv, v], dim=1))
    ctx = ctx.view(-1, heads, length, d).permute(0, 2, 1, 3).reshape(-1, length, heads * d)
    return (ctx, probs if output_attentions else None)


@BACKBONES.register("deberta-v2")
class DebertaV2Adapter(BackboneAdapter):
    model_types = ("deberta-v2",)
    tokenizer_kwargs = {"add_prefix_space": True}

    def max_positions(self) -> int:
        c = self.model.config
        # relative-position DeBERTa has no absolute position table to overflow
        return c.max_position_embeddings if getattr(c, "position_biased_input", False) else 1 << 30

    def _install(self) -> None:
        for module in self.attention_modules():
            module.forward = types.MethodType(prefixed_disentangled_attention, module)
