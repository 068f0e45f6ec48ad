"""P-Tuning v2 / deep prompt tuning: a key/value prefix in the attention of every (chosen) layer."""
from __future__ import annotations

import torch
from torch import nn

from deepprompt.errors import ConfigError
from deepprompt.prompts.base import PromptMethod, PromptOutput
from deepprompt.registry import PROMPTS


def resolve_layers(layers: list[int] | None, num_layers: int) -> list[int]:
    """``prompt.layers`` -> sorted absolute layer indices (negative ones count from the top)."""
    if layers is None:
        return list(range(num_layers))
    out = []
    for i in layers:
        if not -num_layers <= i < num_layers:
            raise ConfigError(f"prompt.layers: layer {i} is out of range for a {num_layers}-layer backbone")
        out.append(i % num_layers)
    if len(set(out)) != len(out):
        raise ConfigError(f"prompt.layers: {layers} names the same layer twice")
    return sorted(out)


@PROMPTS.register("prefix")
class DeepPrefix(PromptMethod):
    """P x (layers) x 2 x kv_heads x head_dim (= hidden without grouped-query attention) trainable prefix values; optionally reparameterised through an MLP."""

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.layers = resolve_layers(cfg.layers, spec.num_layers)
        width = len(self.layers) * 2 * spec.kv_width
        if cfg.reparam:
            self.embedding = nn.Embedding(cfg.length, spec.hidden)
            self.reparam = nn.Sequential(nn.Linear(spec.hidden, cfg.reparam_hidden), nn.Tanh(),
                                         nn.Linear(cfg.reparam_hidden, width))
        else:
            self.embedding = nn.Embedding(cfg.length, width)
            self.reparam = None
        self.dropout = nn.Dropout(cfg.dropout)

    @staticmethod
    def num_params(cfg, spec) -> int:
        width = len(resolve_layers(cfg.layers, spec.num_layers)) * 2 * spec.kv_width
        if cfg.reparam:
            r = cfg.reparam_hidden
            return cfg.length * spec.hidden + (spec.hidden * r + r) + (r * width + width)
        return cfg.length * width

    def lr_scales(self) -> list[tuple[float, list[nn.Parameter]]]:
        """The MLP at train.lr x prompt.reparam_lr_scale (why: that key's docstring)."""
        return [] if self.reparam is None else [(self.cfg.reparam_lr_scale, list(self.reparam.parameters()))]

    def table(self) -> torch.Tensor:
        """[P, layers * 2 * kv_width]: row p holds token p's (layer, key/value, kv head, head_dim) values,
        after the reparameterisation if any (PEFT's ``prompt_embeddings`` layout, ``peft_export.py``)."""
        x = self.embedding(torch.arange(self.cfg.length, device=self.embedding.weight.device))
        return x if self.reparam is None else self.reparam(x)

    def forward(self, batch_size: int) -> PromptOutput:
        p, s = self.cfg.length, self.spec
        x = self.table()  # [P, width]
        # [B, P, layers, 2, kv_heads, head_dim]; dropout per example, as in the reference implementation
        x = self.dropout(x.unsqueeze(0).expand(batch_size, -1, -1))
        x = x.view(batch_size, p, len(self.layers), 2, s.num_kv_heads, s.head_dim).permute(2, 3, 0, 4, 1, 5)
        return PromptOutput(layer_kv={layer: (x[i, 0], x[i, 1]) for i, layer in enumerate(self.layers)})
