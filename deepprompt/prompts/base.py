"""The contract between a prompt method and the generic prompted model."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import nn

from deepprompt.config import PromptConfig
from deepprompt.spec import BackboneSpec


class PromptOutput(NamedTuple):
    """A NamedTuple (not a dataclass) so ZeRO-3's hooks can see the tensors inside for backward."""

    input_embeds: torch.Tensor | None = None
    """[B, P, hidden]: prepended to the word embeddings (Lester prompt, P-Tuning v1)."""
    layer_kv: Mapping[int, tuple[torch.Tensor, torch.Tensor]] = MappingProxyType({})
    """layer index -> (key, value), each [B, heads, P, head_dim]: prepended inside attention."""
    prefix_mask: Mapping[int, torch.Tensor] = MappingProxyType({})
    """layer index -> [B, P] bool (True = visible) for layers whose prefix some examples must not
    see: padding of a shorter prefix, or a layer that example's prompt has no prefix on (mixed-task
    batches, ``prompts/multi.py``). Per layer, because prompts of different depth share a batch.
    A layer absent here has an all-visible prefix (the single-prompt path never sets it)."""


class PromptMethod(nn.Module):
    """A prompt method owns its trainable prompt parameters and says whether the backbone is frozen.

    ``forward(batch_size)`` is the ONLY place prompt parameters are read: under ZeRO-3 a module's
    parameters are gathered just for its own forward, so reading them anywhere else sees empty shards.
    """

    freezes_backbone: bool = True
    puts_prompt_at_input: bool = False

    def __init__(self, cfg: PromptConfig, spec: BackboneSpec):
        super().__init__()
        self.cfg = cfg
        self.spec = spec

    @staticmethod
    def num_params(cfg: PromptConfig, spec: BackboneSpec) -> int:
        """Trainable prompt parameters by formula (tests hold the modules to it)."""
        raise NotImplementedError

    def lr_scales(self) -> list[tuple[float, list[nn.Parameter]]]:
        """(factor of train.lr, parameters) for those of this method's parameters that must train at
        another rate than train.lr; the optimizer gives each its own group. Default: none."""
        return []

    def forward(self, batch_size: int) -> PromptOutput:  # pragma: no cover - interface
        raise NotImplementedError
