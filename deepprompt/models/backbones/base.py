"""What the generic prompted model needs from a backbone family, and nothing more.

An adapter knows (a) the shape of the backbone (``spec``), (b) its layers and the attention module
of each, and (c) how a per-layer key/value prefix reaches that attention. The prefix is handed to
the attention modules as an attribute just before the backbone's forward, so the backbone keeps its
own mask building and position ids: the prefix never shifts positions, and a layer without a prefix
runs exactly the code it runs without deepprompt. Activation checkpointing is switched on here too,
per layer and alike for every family (``enable_checkpointing``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from deepprompt.errors import ConfigError
from deepprompt.registry import BACKBONES
from deepprompt.spec import BackboneSpec

PREFIX_ATTR = "_deepprompt_prefix"


class BackboneAdapter:
    model_types: ClassVar[tuple[str, ...]] = ()
    """HF ``config.model_type`` values this family handles (for ``model.family=auto``)."""
    tokenizer_kwargs: ClassVar[dict] = {}
    """Extra ``AutoTokenizer.from_pretrained`` kwargs (byte-level BPE needs a prefix space for pre-split words)."""
    load_kwargs: ClassVar[dict] = {}
    """Extra ``from_pretrained`` kwargs (e.g. drop an unused pooler, whose weights would get no grad)."""

    def __init__(self, model: nn.Module):
        self.model = model  # a plain reference; the prompted model owns the module
        self.family = self.registered_name()
        self._install()

    @classmethod
    def registered_name(cls) -> str:
        """The family name this adapter class is registered under (``model.family``)."""
        return next(n for n, c in BACKBONES.items() if c is cls)

    @classmethod
    def load_model(cls, path: str, dtype: torch.dtype, zero3_config: dict | None = None) -> nn.Module:
        """The backbone with its pretrained weights; with a ZeRO-3 DeepSpeed config it is built
        partitioned, so no rank ever holds the full weights. Default: transformers' ``AutoModel``."""
        from deepprompt.models.loading import load_hf_backbone
        return load_hf_backbone(path, dtype, zero3_config, cls.load_kwargs)

    # ---- shape
    def spec(self) -> BackboneSpec:
        c = self.model.config
        return BackboneSpec(family=self.family, num_layers=c.num_hidden_layers, hidden=c.hidden_size,
                            num_heads=c.num_attention_heads, max_positions=self.max_positions(),
                            init_std=getattr(c, "initializer_range", 0.02))

    def max_positions(self) -> int:
        return self.model.config.max_position_embeddings

    # ---- structure
    def attention_modules(self) -> list[nn.Module]:
        """The self-attention module of every layer, bottom to top."""
        return [layer.attention.self for layer in self.model.encoder.layer]

    def layers(self) -> list[nn.Module]:
        """The repeated transformer blocks, bottom to top; ``attention_modules()[i]`` lives in ``layers()[i]``."""
        return list(self.model.encoder.layer)

    def word_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def _install(self) -> None:
        """Make the attention modules read ``PREFIX_ATTR``; called once per model."""

    # ---- per forward
    def set_prefix(self, layer_kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]],
                   prefix_mask: Mapping[int, torch.Tensor] | None = None) -> None:
        """Hand each layer's attention ``(key, value, mask)`` (or None): key/value [B, heads, P, d],
        mask [B, P] bool (True = visible) or None for an all-visible prefix."""
        masks = prefix_mask or {}
        for i, module in enumerate(self.attention_modules()):
            kv = layer_kv.get(i)
            setattr(module, PREFIX_ATTR, None if kv is None else (kv[0], kv[1], masks.get(i)))

    def forward(self, **inputs) -> torch.Tensor:
        """Last hidden states [B, L, hidden] for input_ids or inputs_embeds + masks."""
        return self.model(**inputs).last_hidden_state

    # ---- activation checkpointing (train.activation_checkpointing)
    def enable_checkpointing(self) -> None:
        """Recompute every layer's activations in the backward instead of keeping them: per layer,
        NON-reentrant. The prefix reaches attention through ``PREFIX_ATTR``, not as an input of
        the layer, and reentrant checkpointing only differentiates a block's inputs: it would run
        the forward without a graph and silently give the prefix no gradient. The non-reentrant
        form keeps the forward's graph (so the prefix's edges) and only recomputes the tensors the
        backward needs, with the forward's RNG state (dropout masks are the same).

        One wrapper for every family rather than transformers' ``activation_checkpointing_enable``:
        MPNet has none; it also makes the frozen embeddings' output require grad, so the backward
        (and its recompute) would run through every layer even when only the top layers carry a
        prefix; and it reads the prefix attribute again in the backward (see below)."""
        for layer, attention in zip(self.layers(), self.attention_modules(), strict=True):
            layer.forward = _checkpointed_forward(layer, attention)

    def disable_checkpointing(self) -> None:
        for layer in self.layers():
            layer.__dict__.pop("forward", None)  # back to the class's forward

    def checkpointing_enabled(self) -> bool:
        return all("forward" in layer.__dict__ for layer in self.layers())


def _checkpointed_forward(layer: nn.Module, attention: nn.Module) -> Callable:
    """``layer``'s own forward, checkpointed when a backward may follow. It replaces ``forward``,
    not ``__call__``, so the layer's module hooks (ZeRO-3's gather/release) stay outside the
    checkpoint, as they do for transformers' own checkpointed layers."""
    forward = type(layer).forward

    def run(*args, **kwargs):
        if not torch.is_grad_enabled():  # evaluation: nothing to recompute
            return forward(layer, *args, **kwargs)
        # the recompute runs in the backward, after later forwards may have set another prefix
        # (two forwards, one backward): it must see the prefix of THIS forward
        prefix = getattr(attention, PREFIX_ATTR, None)

        def recomputable(*a, **kw):
            current = getattr(attention, PREFIX_ATTR, None)
            setattr(attention, PREFIX_ATTR, prefix)
            try:
                return forward(layer, *a, **kw)
            finally:
                setattr(attention, PREFIX_ATTR, current)

        return checkpoint(recomputable, *args, use_reentrant=False, **kwargs)

    return run


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


def positions_after_padding(config) -> int:
    """Tokens a RoBERTa-style position table holds: positions start after ``padding_idx``, so 514
    embeddings with pad id 1 hold 512 tokens."""
    return config.max_position_embeddings - (config.pad_token_id or 0) - 1


def family_for_model_type(model_type: str, family: str = "auto") -> type[BackboneAdapter]:
    """The adapter class for ``model.family`` (``auto``: the one that lists this ``model_type``)."""
    if family != "auto":
        return BACKBONES.get(family, "model.family")
    for _, cls in BACKBONES.items():
        if model_type in cls.model_types:
            return cls
    raise ConfigError(f"model.family: no adapter for model_type {model_type!r} "
                      f"(families: {', '.join(BACKBONES.names())}); set model.family explicitly")


def adapter_for(model: nn.Module, family: str = "auto") -> BackboneAdapter:
    return family_for_model_type(getattr(model.config, "model_type", None), family)(model)
