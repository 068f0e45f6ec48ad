"""Finding a backbone (preset, local directory or hub name) and reading its tokenizer and config."""
from __future__ import annotations

from pathlib import Path

from deepprompt import assets
from deepprompt.errors import ConfigError
from deepprompt.models.backbones.base import family_for_model_type


def resolve_model_path(path: str) -> str:
    if path in assets.ASSETS and assets.ASSETS[path].kind == "backbone":
        return str(assets.require_asset(path, "model.path"))
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"model.path: {p} has no config.json (not a transformers checkpoint directory)")
        return str(p)
    if p.exists() or path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise ConfigError(f"model.path: {path} does not exist (a local checkpoint directory, a preset "
                          f"({', '.join(n for n, a in assets.ASSETS.items() if a.kind == 'backbone')}) "
                          f"or a hub name like org/model)")
    return path  # a hub name; from_pretrained will say if it cannot be reached


def load_tokenizer_and_config(path: str, family: str = "auto"):
    """The tokenizer and the HF config (no weights): enough to read data and check the run."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path)
        adapter = family_for_model_type(config.model_type, family)
        tokenizer = AutoTokenizer.from_pretrained(path, **adapter.tokenizer_kwargs)
    except OSError as e:
        raise ConfigError(f"model.path: cannot load {path!r}: {str(e).splitlines()[0]}") from None
    return tokenizer, config
