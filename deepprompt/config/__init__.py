"""Typed run configuration: a YAML/JSON file plus dotted ``key=value`` overrides.

A leaf of the package: it imports nothing of deepprompt but ``errors``, ``fileio`` and ``schedules``
(names that live in registries, ``prompt.method`` and ``task.name``, are checked where the registries
are used: ``engine/preflight.check_names``). ``sections.py``: the dataclasses; ``loading.py``: file +
overrides -> sections; ``docs.py``: the generated key reference (docs/config.md).
"""
from deepprompt.config.docs import field_docs, reference_markdown
from deepprompt.config.loading import (build_options, config_from_dict, entry_key, flatten, from_dict,
                                       load_config, parse_overrides, read_config_file)
from deepprompt.config.sections import (MIXER_POLICIES, MixerConfig, ModelConfig, PromptConfig, RunConfig, TaskConfig,
                                        TrainConfig)

__all__ = ["MIXER_POLICIES", "MixerConfig", "ModelConfig", "PromptConfig", "RunConfig", "TaskConfig", "TrainConfig",
           "build_options", "config_from_dict", "entry_key", "field_docs", "flatten", "from_dict", "load_config",
           "parse_overrides", "read_config_file", "reference_markdown"]
