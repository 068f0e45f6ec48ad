"""FT baseline: no prompt, every backbone weight is trained."""
from __future__ import annotations

from deepprompt.prompts.base import PromptMethod, PromptOutput
from deepprompt.registry import PROMPTS


@PROMPTS.register("finetune")
class FineTune(PromptMethod):
    freezes_backbone = False

    @staticmethod
    def num_params(cfg, spec) -> int:
        return 0

    def forward(self, batch_size: int) -> PromptOutput:
        return PromptOutput()
