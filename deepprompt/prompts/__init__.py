"""Prompt methods; importing this package registers them all."""
from deepprompt.prompts import finetune, input_prompt, prefix  # noqa: F401
from deepprompt.prompts.multi import MultiPrompt  # noqa: F401
from deepprompt.prompts.base import PromptMethod, PromptOutput  # noqa: F401
