"""GLM (the original, deepprompt's native implementation in ``deepprompt.models.glm``).

The prefix reaches each ``GLMAttention`` through ``PREFIX_ATTR`` like every family; GLM's attention
reads it itself (see ``glm/model.py``), so nothing needs patching. Positions are added at the
embeddings, so prefix keys/values carry none and never shift the tokens' 2-D positions.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deepprompt.models.backbones.base import BackboneAdapter
from deepprompt.registry import BACKBONES


@BACKBONES.register("glm")
class GLMAdapter(BackboneAdapter):
    model_types = ("glm-original",)

    def layers(self) -> list[nn.Module]:
        return list(self.model.transformer.layers)

    def attention_modules(self) -> list[nn.Module]:
        return [layer.attention for layer in self.layers()]

    def word_embeddings(self) -> nn.Module:
        return self.model.word_embeddings

    @classmethod
    def load_model(cls, path: str, dtype: torch.dtype, zero3_config: dict | None = None) -> nn.Module:
        from deepprompt.models.glm.checkpoint import build_glm
        from deepprompt.models.glm.config import PRESETS, read_config

        if path in PRESETS:
            model = build_glm(PRESETS[path], None, dtype, zero3_config)
        else:
            model = build_glm(read_config(path), Path(path), dtype, zero3_config)
        model.config._name_or_path = path  # what artifacts record as the backbone's path
        return model
