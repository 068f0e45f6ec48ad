"""The backbone as the memory calculator (``memory.py``) sees it: parameter shapes only, read from
a GLM config, a preset or a built module (on the meta device: no weights)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    """What the calculator needs of a backbone: its shape and the size of every tensor."""

    name: str
    hidden: int
    layers: int
    heads: int
    tensors: tuple[int, ...]
    """Element count of every backbone tensor."""
    layer_tensors: tuple[int, ...]
    """Element counts of ONE transformer layer's tensors."""
    embedding_numel: int
    """Elements of the embedding tables (no matmul FLOPs, never re-gathered in backward)."""
    modules: tuple[tuple[int, ...], ...] = ()
    """The tensors of each module that owns some (ZeRO-3 fetches a module's tensors together)."""
    layer_modules: tuple[tuple[int, ...], ...] = ()
    """The same for ONE transformer layer."""

    @property
    def numel(self) -> int:
        return sum(self.tensors)

    @property
    def layer_numel(self) -> int:
        return sum(self.layer_tensors)

    input_projection_tensors: int = 1
    """How many tensors hold layer 0's Q, K and V weights (GLM: one fused; BERT-like: three)."""
    kv_width: int | None = None
    """Width of one layer's keys (and of its values): kv_heads x head_dim under grouped-query
    attention (decoders); None = ``hidden``. A prefix token holds 2 x kv_width values per layer."""

    @property
    def kv(self) -> int:
        return self.kv_width or self.hidden

    @property
    def input_projection(self) -> int:
        """Layer 0's Q, K and V weights (h·h + 2 h·kv): their input, the embeddings, needs no
        gradient, so ZeRO-3 never fetches them for the backward."""
        return self.hidden * self.hidden + 2 * self.hidden * self.kv


def glm_backbone(cfg, name: str = "glm") -> Backbone:
    """A GLM's tensors, read from the model built on the meta device (no memory)."""
    import torch

    from deepprompt.models.glm.model import GLMModel

    with torch.device("meta"):
        model = GLMModel(cfg)
    return module_backbone(model, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, name)


def module_backbone(module, hidden: int, layers: int, heads: int, name: str, kv_width: int | None = None) -> Backbone:
    """Any backbone module (ZeRO-3 partitioned or not): its transformer layers are the one
    ``ModuleList`` of ``layers`` entries."""
    from torch import nn

    def numel(p) -> int:
        return getattr(p, "ds_numel", p.numel())
    # a backbone whose layers are not one ModuleList gets no per-layer terms (working set, re-gathers)
    blocks = next((m for m in module.modules() if isinstance(m, nn.ModuleList) and len(m) == layers), [nn.Module()])
    embedding = sum(numel(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    square = sum(1 for p in blocks[0].parameters() if numel(p) == hidden * hidden)  # BERT: q, k, v, out

    def owners(m) -> tuple[tuple[int, ...], ...]:
        return tuple(sizes for sub in m.modules() if (sizes := tuple(numel(p) for p in sub.parameters(recurse=False))))
    return Backbone(name=name, hidden=hidden, layers=layers, heads=heads,
                    tensors=tuple(numel(p) for p in module.parameters()),
                    layer_tensors=tuple(numel(p) for p in blocks[0].parameters()), embedding_numel=embedding,
                    modules=owners(module), layer_modules=owners(blocks[0]),
                    input_projection_tensors=3 if square >= 4 or kv_width not in (None, hidden) else 1,
                    kv_width=kv_width)


def as_backbone(model) -> Backbone:
    return model if isinstance(model, Backbone) else glm_backbone(model, getattr(model, "name", "glm"))


def load_backbone(model: str) -> Backbone:
    """A GLM preset or GLM checkpoint directory, as a ``Backbone``."""
    from pathlib import Path

    from deepprompt.models.glm.config import PRESETS, read_config

    cfg = PRESETS[model] if model in PRESETS else read_config(Path(model))
    return glm_backbone(cfg, model)
