"""Decoder-only LLMs through transformers: Llama, Mistral, Qwen2, Qwen3, GLM/GLM-4 (one adapter).

Every one of these runs its attention through transformers' ``AttentionInterface``, after its own
rotary embedding and (grouped-query) key/value projections, so one attention function serves them
all: ``deepprompt_causal`` prepends the layer's prefix keys/values (``kv_heads`` heads of
``head_dim`` each, the shape of the layer's own keys) and runs transformers' SDPA attention, which
repeats the key/value heads for the query groups. The conventions:

* the prefix has no position: its keys are not rotated, and the real tokens keep rotary positions
  0..n-1 whatever the padding (``forward`` numbers them from the attention mask, so a left-padded
  and a right-padded batch give the same states for the real tokens);
* every query, padding included (its output is never read), sees every prefix column, except where
  a mixed-task batch's ``prefix_mask`` hides one; among the real tokens attention stays causal
  (transformers' own mask, which also hides padding keys);
* in generation the real tokens' keys/values live in transformers' ``DynamicCache`` and the prefix,
  computed once per generation, is prepended to them at every step (``engine/generate.py``).

The model is loaded with its LM head (``AutoModelForCausalLM``): ``lm_logits`` serves the ``lm``
and ``cloze`` heads and generation; the body alone gives the hidden states.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from deepprompt.models.backbones.base import PREFIX_ATTR, BackboneAdapter
from deepprompt.registry import BACKBONES
from deepprompt.spec import BackboneSpec

ATTN_IMPL = "deepprompt_causal"


def prefix_columns(mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor, p: int,
                   prefix_mask: torch.Tensor | None) -> torch.Tensor:
    """The attention mask over [prefix; keys]: ``p`` prefix columns visible to every query (but
    where ``prefix_mask`` [B, P] hides one), then the layer's own mask. transformers passes None for
    a causal mask without padding (SDPA's ``is_causal``): it is built here, aligned to the last key
    (the queries are the last ``q`` of ``k`` keys when a cache holds earlier tokens)."""
    b, q, k = query.shape[0], query.shape[2], key.shape[2]
    if mask is None:
        mask = torch.ones(q, k, dtype=torch.bool, device=query.device).tril(k - q)[None, None].expand(b, 1, q, k)
    elif mask.shape[0] != b:
        mask = mask.expand(b, *mask.shape[1:])
    cols = torch.ones(b, 1, mask.shape[2], p, dtype=torch.bool, device=mask.device)
    if prefix_mask is not None:
        cols = cols & prefix_mask[:, None, None, :]
    if mask.dtype != torch.bool:  # an additive mask
        cols = torch.zeros(cols.shape, dtype=mask.dtype, device=mask.device).masked_fill(
            ~cols, torch.finfo(mask.dtype).min)
    return torch.cat([cols, mask], dim=-1)


def causal_prefix_attention(module, query, key, value, attention_mask, **kwargs):
    prefix = getattr(module, PREFIX_ATTR, None)
    if prefix is not None and prefix[0].shape[2] > 0:
        pk, pv, prefix_mask = prefix  # [B, kv_heads, P, head_dim] x 2, [B, P] bool or None
        attention_mask = prefix_columns(attention_mask, query, key, pk.shape[2], prefix_mask)
        key = torch.cat([pk.to(key.dtype), key], dim=2)
        value = torch.cat([pv.to(value.dtype), value], dim=2)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTN_IMPL, causal_prefix_attention)
AttentionMaskInterface.register(ATTN_IMPL, sdpa_mask)


def real_positions(attention_mask: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """Rotary position of every token: its index among the real tokens of its row (padding gets 0),
    plus ``offset`` [B] (real tokens already in the cache)."""
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return pos if offset is None else pos + offset[:, None]


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B]: the index of each row's last real token, for right and left padding alike."""
    idx = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * (idx + 1)).argmax(-1)


@BACKBONES.register("decoder")
class DecoderAdapter(BackboneAdapter):
    model_types = ("llama", "mistral", "qwen2", "qwen3", "glm", "glm4")
    causal = True
    load_kwargs = {"attn_implementation": ATTN_IMPL}

    @classmethod
    def load_model(cls, path: str, dtype: torch.dtype, zero3_config: dict | None = None) -> nn.Module:
        from deepprompt.models.loading import load_hf_backbone
        return load_hf_backbone(path, dtype, zero3_config, cls.load_kwargs, causal_lm=True)

    def _install(self) -> None:
        self.model.set_attn_implementation(ATTN_IMPL)

    @property
    def body(self) -> nn.Module:
        """The decoder stack without the LM head (``model.model`` of a ``*ForCausalLM``)."""
        return getattr(self.model, "model", self.model)

    def spec(self) -> BackboneSpec:
        c = self.model.config
        heads = c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return BackboneSpec(family=self.family, num_layers=c.num_hidden_layers, hidden=c.hidden_size,
                            num_heads=heads, max_positions=self.max_positions(),
                            init_std=getattr(c, "initializer_range", 0.02),
                            kv_heads=getattr(c, "num_key_value_heads", None) or heads,
                            head_size=None if head_dim * heads == c.hidden_size else head_dim)

    def layers(self) -> list[nn.Module]:
        return list(self.body.layers)

    def attention_modules(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.layers()]

    @property
    def lm_head_loaded(self) -> bool:
        """False for a checkpoint saved without its LM head (``load_hf_backbone`` let it start random)."""
        return not getattr(self.model, "deepprompt_lm_head_missing", False)

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., vocab] from final hidden states, through the model's LM head
        (a module call: ZeRO-3 gathers its weight as in any forward)."""
        return self.model.get_output_embeddings()(hidden)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, cache=None,
                position_ids=None, **_ignored) -> torch.Tensor:
        """Last hidden states [B, L, hidden] (after the final norm); with ``cache`` (a
        ``DynamicCache``) the keys/values of these tokens are appended to it."""
        return self.forward_cached(input_ids, attention_mask, inputs_embeds, cache, position_ids)[0]

    def forward_cached(self, input_ids=None, attention_mask=None, inputs_embeds=None, cache=None,
                       position_ids=None):
        """(hidden [B, L, h], cache). ``attention_mask`` covers the cached tokens and these
        (as transformers expects); positions default to each token's index among its row's real
        tokens."""
        if attention_mask is None:
            ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        if position_ids is None:
            position_ids = real_positions(attention_mask)[:, -(input_ids if input_ids is not None
                                                             else inputs_embeds).shape[1]:]
        out = self.body(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                        position_ids=position_ids, cache=cache, use_cache=cache is not None)
        return out.last_hidden_state, out.cache
