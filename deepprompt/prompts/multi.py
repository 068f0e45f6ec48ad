"""Several prefix prompts behind one module: one backbone forward serves a batch that mixes tasks.

``forward(index)`` gives example b the prefix of prompt ``index[b]``. Prompts may differ in length
and in depth (``prompt.layers``): every layer that any prompt has a prefix on gets keys/values
right-padded to the longest prefix P, and ``PromptOutput.prefix_mask`` hides, per layer and
example, the padding and the whole prefix of a layer that example's prompt has none on. A hidden
prefix column gets exactly zero attention, so each example computes what its own prompt alone
would give (up to float summation order).

Not a registered method: it is assembled from trained prompts for serving (``engine/serving.py``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepprompt.errors import ConfigError
from deepprompt.prompts.base import PromptMethod, PromptOutput


class MultiPrompt(nn.Module):
    freezes_backbone = True
    puts_prompt_at_input = False

    def __init__(self, prompts: Sequence[PromptMethod], task_to_prompt: Mapping[str, int]):
        super().__init__()
        if not prompts:
            raise ConfigError("mixed-task serving: no prompts given")
        for i, p in enumerate(prompts):
            if p.puts_prompt_at_input or not p.freezes_backbone:
                raise ConfigError(f"mixed-task serving: prompt {i} is method {p.cfg.method!r}; only key/value "
                                  f"prefix methods (prefix) can share one backbone forward")
        if len({p.spec for p in prompts}) != 1:
            raise ConfigError(f"mixed-task serving: prompts were made for different backbones "
                              f"({', '.join(sorted({str(p.spec) for p in prompts}))})")
        bad = {t: i for t, i in task_to_prompt.items() if not 0 <= i < len(prompts)}
        if bad:
            raise ConfigError(f"mixed-task serving: tasks {bad} point to no prompt (have {len(prompts)})")
        self.prompts = nn.ModuleList(prompts)
        self.task_to_prompt = dict(task_to_prompt)
        self.spec = prompts[0].spec

    def route(self, tasks: Sequence[str], device=None) -> torch.Tensor:
        """Per-example prompt index [B] for per-example task names."""
        unknown = sorted(set(tasks) - set(self.task_to_prompt))
        if unknown:
            raise ConfigError(f"task {unknown[0]!r}: no prompt serves it (known: {', '.join(sorted(self.task_to_prompt))})")
        return torch.tensor([self.task_to_prompt[t] for t in tasks], dtype=torch.long, device=device)

    def forward(self, index: torch.Tensor) -> PromptOutput:
        b = index.shape[0]
        # every prompt runs in every forward, whatever the batch holds: under ZeRO-3 every rank must
        # call the same modules
        outs = [prompt(b).layer_kv for prompt in self.prompts]
        p_max = max(k.shape[2] for kv in outs for k, _ in kv.values())
        positions = torch.arange(p_max, device=index.device)
        layer_kv, prefix_mask = {}, {}
        for layer in sorted({layer for kv in outs for layer in kv}):
            key = value = None
            visible = torch.zeros(b, p_max, dtype=torch.bool, device=index.device)
            for j, kv in enumerate(outs):
                if layer not in kv:
                    continue
                k, v = kv[layer]
                pad = (0, 0, 0, p_max - k.shape[2])  # right-pad the prefix-length dim of [B, H, P, d]
                k, v = F.pad(k, pad), F.pad(v, pad)
                rows = index == j
                if key is None:
                    key, value = torch.zeros_like(k), torch.zeros_like(v)
                key = torch.where(rows[:, None, None, None], k, key)
                value = torch.where(rows[:, None, None, None], v, value)
                visible = visible | (rows[:, None] & (positions < kv[layer][0].shape[2]))
            layer_kv[layer] = (key, value)
            prefix_mask[layer] = visible
        return PromptOutput(layer_kv=layer_kv, prefix_mask=prefix_mask)
