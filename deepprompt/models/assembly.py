"""The one assembly of a prompted model: (backbone, prompt, task head specs) -> ``PromptedModel``.

Training (``engine/ds_setup.build``), serving (``engine/serving.py``), the benchmarks and the tests
all build their model here, so the positions check and the order in which the prompt and the heads
are created (which fixes their random init for a given seed) are the same everywhere."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from deepprompt.config import PromptConfig
from deepprompt.errors import ConfigError
from deepprompt.models.backbones.base import BackboneAdapter
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.registry import HEADS, PROMPTS


@dataclass(frozen=True)
class HeadSpec:
    """What a task asks of its head: the task's name, a registered head, the label count."""

    task: str
    head: str
    num_labels: int
    dropout: float = 0.1
    max_seq_length: int | None = None
    """The task's ``max_seq_length`` (None: not checked against the backbone's positions)."""
    key: str = "task.max_seq_length"
    """The config key that sets ``max_seq_length`` (named by the positions check)."""


def head_specs(tasks: Sequence, multi: bool | None = None) -> list[HeadSpec]:
    """The head specs of built tasks (``Task``: ``name``, ``head``, ``labels``, ``cfg``); keys
    ``tasks[i].max_seq_length`` for a multi-task run."""
    multi = len(tasks) > 1 if multi is None else multi
    return [HeadSpec(t.name, t.head, len(t.labels), t.cfg.head_dropout, t.cfg.max_seq_length,
                     f"tasks[{i}].max_seq_length" if multi else "task.max_seq_length") for i, t in enumerate(tasks)]


def check_positions(prompt: PromptConfig, lengths: Sequence[tuple[str, int]], positions: int,
                    model: str = "", input_prompt: bool | None = None) -> None:
    """Every (key, max_seq_length), plus ``prompt.length`` for a method that puts the prompt at the
    input, fits the backbone's ``positions``; a one-line ConfigError naming the key otherwise. Left
    to the model, a too-long example is an index error deep inside transformers."""
    if input_prompt is None:
        input_prompt = PROMPTS.get(prompt.method, "prompt.method").puts_prompt_at_input
    extra = prompt.length if input_prompt else 0
    for key, length in lengths:
        if length + extra <= positions:
            continue
        if extra:
            raise ConfigError(f"prompt.length: {extra} prompt tokens + {key} {length} = {length + extra} exceeds the "
                              f"backbone's {positions} positions (method {prompt.method!r} puts the prompt at the input)")
        raise ConfigError(f"{key}: {length} exceeds the backbone's {positions} positions ({model}); set it to at "
                          f"most {positions}")


def assemble(backbone: nn.Module, adapter: BackboneAdapter, prompt: PromptConfig | nn.Module,
             heads: Sequence[HeadSpec]) -> PromptedModel:
    """The prompt (built from its config, or given built, e.g. a ``MultiPrompt``) and one head per
    spec on ``backbone``; created in this order (prompt, then heads in spec order), so a seed set
    before the call fixes their init."""
    spec = adapter.spec()
    if isinstance(prompt, PromptConfig):
        cfg = prompt
        prompt = PROMPTS.get(cfg.method, "prompt.method")(cfg, spec)
        check_positions(cfg, [(h.key, h.max_seq_length) for h in heads if h.max_seq_length is not None],
                        spec.max_positions, input_prompt=prompt.puts_prompt_at_input)
    modules = {h.task: HEADS.get(h.head, "head")(spec.hidden, h.num_labels, dropout=h.dropout) for h in heads}
    return PromptedModel(backbone, adapter, prompt, modules)
