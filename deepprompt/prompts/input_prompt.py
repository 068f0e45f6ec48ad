"""Prompts that enter at the input embeddings: Lester et al. soft prompt and P-Tuning v1."""
from __future__ import annotations

import torch
from torch import nn

from deepprompt.prompts.base import PromptMethod, PromptOutput
from deepprompt.registry import PROMPTS


@PROMPTS.register("prompt")
class SoftPrompt(PromptMethod):
    """Lester et al. (2021): P free embeddings prepended to the input."""

    puts_prompt_at_input = True

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        self.embedding = nn.Embedding(cfg.length, spec.hidden)
        nn.init.normal_(self.embedding.weight, std=spec.init_std)
        self.dropout = nn.Dropout(cfg.dropout)

    @staticmethod
    def num_params(cfg, spec) -> int:
        return cfg.length * spec.hidden

    def _tokens(self) -> torch.Tensor:
        return self.embedding(torch.arange(self.cfg.length, device=self.embedding.weight.device))

    def forward(self, batch_size: int) -> PromptOutput:
        x = self._tokens().unsqueeze(0).expand(batch_size, -1, -1)
        return PromptOutput(input_embeds=self.dropout(x))


@PROMPTS.register("ptuning")
class PTuningV1(SoftPrompt):
    """P-Tuning v1 (Liu et al. 2021): prompt embeddings through a 2-layer bi-LSTM and an MLP."""

    def __init__(self, cfg, spec):
        super().__init__(cfg, spec)
        enc = self._encoder_hidden(cfg, spec)
        self.lstm = nn.LSTM(spec.hidden, enc // 2, num_layers=2, bidirectional=True, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(enc, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.hidden))

    @staticmethod
    def _encoder_hidden(cfg, spec) -> int:
        enc = cfg.encoder_hidden or spec.hidden
        return enc - enc % 2

    @staticmethod
    def num_params(cfg, spec) -> int:
        h, e = spec.hidden, PTuningV1._encoder_hidden(cfg, spec)
        d = e // 2
        lstm = 2 * (4 * d * h + 4 * d * d + 8 * d) + 2 * (4 * d * e + 4 * d * d + 8 * d)
        return cfg.length * h + lstm + (e * h + h) + (h * h + h)

    def _tokens(self) -> torch.Tensor:
        x = super()._tokens().unsqueeze(0)  # [1, P, h]
        x, _ = self.lstm(x)
        return self.mlp(x).squeeze(0)
