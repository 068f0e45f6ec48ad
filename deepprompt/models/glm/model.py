"""The original GLM (Du et al. 2022) as a plain torch module, with the original parameter names.

Pre-LayerNorm blocks with a fused query_key_value, tanh-GeLU MLP of width 4h, a final LayerNorm and
an output projection tied to the word embeddings. Positions are 2-D: every token adds a position
embedding and a block-position embedding. Part A (the context, tokens before ``sep``) is attended
bidirectionally; part B (the span being filled, from ``sep`` on) causally. Numerics as the original:
LayerNorm eps 1e-5, scores scaled by 1/sqrt(head_dim), and a masked key gets exactly zero weight
(the original's masked score ``s * M - 65504 * (1 - M)`` under an fp32 softmax); attention runs
through ``scaled_dot_product_attention`` with a bool mask (docs/glm.md, "Attention kernel").

A deep prompt reaches attention through ``PREFIX_ATTR`` on each ``GLMAttention`` (set by the
adapter): its keys/values are prepended after the projection, so they carry no position and the
tokens' 2-D positions are exactly those of an unprompted forward; every token sees every prefix
column (unless the per-example prefix mask hides one).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from deepprompt.models.backbones.base import PREFIX_ATTR
from deepprompt.models.glm.config import GLMConfig

class GLMOutput(NamedTuple):
    last_hidden_state: torch.Tensor


def glm_attention_mask(length: int, sep: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, 1, L, L] bool, True = visible: query i sees key j if j < sep (part A, bidirectional) or
    j <= i (part B, causal), and j is a real token (``key_valid`` [B, L], 1 = real).

    A real query always sees a real key (itself, or the first token). A padding query may see
    none (an all-padding row, or left padding before part B): such a row sees every key instead,
    so no kernel meets a fully masked row (NaN on some; a NaN in a padding row's output would
    reach real rows through 0 * NaN in the next layer's weighted sum). Its output is never read."""
    pos = torch.arange(length, device=sep.device)
    visible = (pos[None, None, :] < sep[:, None, None]) | (pos[None, None, :] <= pos[None, :, None])
    if key_valid is not None:
        visible = visible & key_valid.bool()[:, None, :]
        visible = visible | ~visible.any(dim=-1, keepdim=True)
    return visible[:, None]


class TiedEmbedding(nn.Embedding):
    """Word embeddings that also serve as the output projection. Going through ``forward`` either way
    matters under ZeRO-3: its hooks gather the partitioned weight only for a module's forward."""

    def forward(self, input_ids: torch.Tensor | None = None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        if hidden is not None:
            return F.linear(hidden, self.weight)  # LM logits over the vocabulary
        return super().forward(input_ids)


class GLMAttention(nn.Module):
    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.query_key_value = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attention_dropout = cfg.attention_dropout  # SDPA's dropout_p while training
        self.output_dropout = nn.Dropout(cfg.hidden_dropout)
        setattr(self, PREFIX_ATTR, None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` [B, 1, L, L] bool, True = visible, with at least one visible key per row
        (``glm_attention_mask``); prefix columns are only ever added in front of it."""
        b, length, _ = x.shape
        # fused [Q; K; V] along the output features, heads contiguous inside each
        q, k, v = self.query_key_value(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        prefix = getattr(self, PREFIX_ATTR)
        if prefix is not None:
            pk, pv, prefix_mask = prefix  # [B, heads, P, d] x 2, [B, P] bool (True = visible) or None
            k = torch.cat([pk.to(k.dtype), k], dim=2)
            v = torch.cat([pv.to(v.dtype), v], dim=2)
            # the kernel keeps q for backward: as a view it would keep the whole fused QKV output
            # alive, whose K and V the cats above have already copied
            q = q.contiguous()
            cols = mask.new_ones(b, 1, length, pk.shape[2])
            if prefix_mask is not None:
                cols = cols & prefix_mask[:, None, None, :]
            mask = torch.cat([cols.expand(b, 1, length, -1), mask.expand(b, 1, length, -1)], dim=-1)
        # One fused kernel over [prefix; part A; part B]. The original's s*M - 65504*(1-M) with an
        # fp32 softmax gives a hidden key exactly zero weight, as a bool mask does (the fused
        # kernels accumulate the softmax in fp32), on every row that sees a key; the mask never
        # has a row that sees none (on some kernels that row would be NaN).
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 / math.sqrt(self.head_dim),
                                             dropout_p=self.attention_dropout if self.training else 0.0)
        return self.output_dropout(self.dense(ctx.transpose(1, 2).reshape(b, length, -1)))


class GLMMLP(nn.Module):
    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.hidden_size, cfg.ffn_size)
        self.dense_4h_to_h = nn.Linear(cfg.ffn_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate="tanh")))


class GLMLayer(nn.Module):
    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.attention = GLMAttention(cfg)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.mlp = GLMMLP(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.input_layernorm(x), mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class GLMTransformer(nn.Module):
    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.block_position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.embedding_dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(GLMLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.final_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)


class GLMModel(nn.Module):
    """``forward`` returns the final-LayerNorm states; ``lm_logits`` applies the tied projection."""

    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.config = cfg
        self.word_embeddings = TiedEmbedding(cfg.vocab_size, cfg.hidden_size)
        self.transformer = GLMTransformer(cfg)

    def get_input_embeddings(self) -> nn.Module:
        return self.word_embeddings

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, sep: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **_ignored) -> GLMOutput:
        """``position_ids`` [B, 2, L] (positions, block positions; default arange / zeros);
        ``sep`` [B]: index where the causal part B starts (default: no part B);
        ``attention_mask`` [B, L]: 1 on real tokens, 0 on padding (``token_type_ids`` are ignored)."""
        x = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        b, length = x.shape[:2]
        if position_ids is None:
            pos = torch.arange(length, device=x.device).expand(b, length)
            position_ids = torch.stack([pos, torch.zeros_like(pos)], dim=1)
        t = self.transformer
        x = x + t.position_embeddings(position_ids[:, 0]) + t.block_position_embeddings(position_ids[:, 1])
        x = t.embedding_dropout(x)
        if sep is None:
            sep = torch.full((b,), length, dtype=torch.long, device=x.device)
        mask = glm_attention_mask(length, sep, attention_mask)
        for layer in t.layers:
            x = layer(x, mask)
        return GLMOutput(t.final_layernorm(x))

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., vocab_size]: the output projection tied to the word embeddings (no bias)."""
        return self.word_embeddings(hidden=hidden)


@torch.no_grad()
def init_weights(model: GLMModel) -> None:
    """Random init of a plain (not partitioned) model: normal(0, initializer_range) weights and
    embeddings, zero biases, unit LayerNorms."""
    std = model.config.initializer_range
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.normal_(0.0, std)
        if isinstance(module, nn.Linear):
            module.bias.zero_()
        if isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
