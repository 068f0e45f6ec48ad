"""Finding a backbone (preset, local directory or hub name) and reading its tokenizer and config;
building a transformers backbone (partitioned under ZeRO-3). GLM has its own loader
(``deepprompt.models.glm.checkpoint``), reached through ``GLMAdapter.load_model``."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from deepprompt import assets
from deepprompt.errors import ConfigError
from deepprompt.fileio import first_broken_safetensors, read_text
from deepprompt.models.backbones.base import family_for_model_type
from deepprompt.models.glm.config import PRESETS as GLM_PRESETS
from deepprompt.models.glm.config import is_glm_dir

log = logging.getLogger("deepprompt")


def resolve_model_path(path: str) -> str:
    if path in assets.ASSETS and assets.ASSETS[path].kind == "backbone":
        return str(assets.require_asset(path, "model.path"))
    if path in GLM_PRESETS:
        return path
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file() and not is_glm_dir(p):
            raise ConfigError(f"model.path: {p} has no config.json (not a transformers checkpoint directory) "
                              f"and no glm_config.json (not a GLM checkpoint directory)")
        return str(p)
    if p.is_file():
        raise ConfigError(f"model.path: {p} is a file; it must be a checkpoint directory (config.json, tokenizer and "
                          f"weights, as save_pretrained writes them), a preset or a hub name")
    if p.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        presets = [n for n, a in assets.ASSETS.items() if a.kind == "backbone"] + list(GLM_PRESETS)
        raise ConfigError(f"model.path: {path} does not exist (a local checkpoint directory, a preset "
                          f"({', '.join(presets)}) or a hub name like org/model)")
    return path  # a hub name; from_pretrained will say if it cannot be reached


def is_glm(path: str) -> bool:
    return path in GLM_PRESETS or (Path(path).is_dir() and is_glm_dir(path))


def load_model_config(path: str):
    """The backbone's config, no weights: deepprompt's GLM reads ``glm_config.json``, every other
    family transformers' ``config.json``."""
    if is_glm(path):
        from deepprompt.models.glm.config import read_config
        return read_config(path)
    from transformers import AutoConfig

    if (Path(path) / "config.json").is_file():  # transformers would only say "not a valid JSON file"
        read_text(Path(path) / "config.json", ConfigError)
    try:
        return AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ConfigError(f"model.path: cannot load {path!r}: {str(e).splitlines()[0]}") from None


@dataclass(frozen=True)
class Backbone:
    """A backbone resolved once, before any weights load: where it is, its config, its adapter family."""

    path: str
    """The resolved path (a directory, a GLM preset or a hub name)."""
    config: object
    """Its config (transformers' ``PretrainedConfig`` or deepprompt's ``GLMConfig``)."""
    family: type
    """The ``BackboneAdapter`` class (``model.family``, or the one listing the config's ``model_type``)."""

    @property
    def family_name(self) -> str:
        return self.family.registered_name()

    @property
    def max_positions(self) -> int:
        return self.family.positions_of(self.config)


def resolve_backbone(path: str, family: str = "auto") -> Backbone:
    """``model.path`` and ``model.family`` -> the resolved path, its config and adapter class (no
    weights); a wrong explicit ``model.family`` fails here, in one line."""
    return backbone_at(resolve_model_path(path), family)


def backbone_at(resolved: str, family: str = "auto") -> Backbone:
    """``resolve_backbone`` of a path ``resolve_model_path`` already resolved."""
    config = load_model_config(resolved)
    return Backbone(resolved, config, family_for_model_type(config.model_type, family))


def load_tokenizer(backbone: Backbone):
    """The backbone's tokenizer (no weights): enough to read data and check the run."""
    path = backbone.path
    _refuse_preset(path)
    if is_glm(path):
        from deepprompt.models.glm.tokenizer import load_tokenizer as load_glm_tokenizer

        return load_glm_tokenizer(path, backbone.config.tokenizer)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, **backbone.family.tokenizer_kwargs)
    except OSError as e:
        raise ConfigError(f"model.path: cannot load {path!r}: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:  # transformers names no file: find it
        for f in sorted(Path(path).glob("*.json")) + sorted(Path(path).glob("*.txt")) if Path(path).is_dir() else []:
            read_text(f, ConfigError)
        raise


def _refuse_preset(path: str) -> None:
    if path in GLM_PRESETS:
        raise ConfigError(f"model.path: {path} is a shape preset without a tokenizer; point model.path at a "
                          f"directory with glm_config.json {{\"preset\": \"{path}\"}} and the tokenizer files "
                          f"(docs/glm.md)")


def load_tokenizer_and_config(path: str, family: str = "auto"):
    """The tokenizer and the config of an already resolved ``path`` (no weights); tools and tests."""
    _refuse_preset(path)
    config = load_model_config(path)
    return load_tokenizer(Backbone(path, config, family_for_model_type(config.model_type, family))), config


def lm_head_keys(model) -> set[str]:
    """The state-dict keys of a ``*ForCausalLM``'s LM head (its output embeddings)."""
    head = model.get_output_embeddings()
    if head is None:
        return set()
    name = next((n for n, m in model.named_modules() if m is head), None)
    return {f"{name}.{p}" for p, _ in head.named_parameters()} if name else set()


def load_hf_backbone(path: str, dtype: torch.dtype, zero3_config: dict | None, load_kwargs: dict,
                     causal_lm: bool = False):
    """``AutoModel.from_pretrained`` (``AutoModelForCausalLM`` for a decoder: its LM head is kept);
    under ZeRO-3 (``HfDeepSpeedConfig`` alive) built partitioned."""
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from safetensors import SafetensorError

    hf_ds = HfDeepSpeedConfig(zero3_config) if zero3_config is not None else None
    try:
        auto = AutoModelForCausalLM if causal_lm else AutoModel
        model, info = auto.from_pretrained(path, dtype=dtype, output_loading_info=True, **load_kwargs)
    except OSError as e:
        raise ConfigError(f"model.path: cannot load {path!r}: {str(e).splitlines()[0]}") from None
    except SafetensorError as e:  # a truncated or corrupt weight file; transformers does not say which
        broken = first_broken_safetensors(path)
        raise ConfigError(f"model.path: {broken or f'{path}: a weight file is not readable ({e})'}") from None
    finally:
        if hf_ds is not None:  # transformers keeps it in a global: later models are not ours to partition
            unset_hf_deepspeed_config()
    # transformers fills a weight the files lack with a random init and only logs it; frozen, it stays random
    # (keys it does not use, e.g. a pooler that is dropped, are harmless: ``unexpected_keys``)
    missing = sorted(info.get("missing_keys") or ())
    if missing and causal_lm and set(missing) <= lm_head_keys(model):
        # a decoder saved without its LM head (e.g. an embedding model saved as ``*Model``): classification,
        # NER, QA... never use the head; the heads that do (lm, a decoder's cloze) refuse it when they bind
        log.warning("model.path: %s has no LM head weights (%s): usable for heads of their own, not for "
                    "generation or verbalizer scoring", path, ", ".join(missing))
        model.deepprompt_lm_head_missing = True
        return model
    if missing:
        raise ConfigError(f"model.path: {path}: {len(missing)} weight(s) of {type(model).__name__} are not in its "
                          f"checkpoint files (e.g. {', '.join(missing[:3])}) and would start random, then stay frozen; "
                          f"the files are of another architecture or saved under other names")
    return model
