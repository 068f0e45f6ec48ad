"""GLM's shape and numerics as a small dataclass, the named presets, and the JSON file that
describes a GLM checkpoint directory (``glm_config.json``, see docs/glm.md)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from deepprompt.errors import ConfigError
from deepprompt.fileio import load_json, read_text

CONFIG_FILE = "glm_config.json"


@dataclass
class GLMConfig:
    vocab_size: int = 50304
    """Rows of the word embedding (= output projection); the original pads the tokenizer's count
    (text tokens + command tokens) up to a multiple of 128 (GPT-2 BPE: 50257 + 8 -> 50304)."""
    hidden_size: int = 4096
    """Model width h."""
    num_hidden_layers: int = 48
    """Transformer blocks."""
    num_attention_heads: int = 64
    """Attention heads (head_dim = h / heads)."""
    max_position_embeddings: int = 1024
    """Rows of both the position and the block-position embedding tables."""
    intermediate_size: int | None = None
    """MLP width; None = 4h, as in every released GLM."""
    layernorm_eps: float = 1e-5
    """LayerNorm epsilon of the original code."""
    hidden_dropout: float = 0.1
    """Dropout on the embeddings and after attention / MLP (the original's output_dropout_prob)."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    initializer_range: float = 0.02
    """Std of the normal init of a random model (weights of every linear layer and embedding)."""
    tokenizer: str = "gpt2"
    """``gpt2`` (vocab.json + merges.txt, English models) or ``spm`` (tokenizer.model, Chinese models)."""
    trust_pickle: bool = False
    """Allow full unpickling of ``mp_rank_*_model_states.pt`` when it holds more than tensors (old
    DeepSpeed checkpoints pickle argparse namespaces); only for files you trust."""
    model_type: str = "glm-original"
    """Fixed: tells deepprompt's adapter lookup this is the original GLM (HF's ``glm`` is GLM-4)."""

    @property
    def ffn_size(self) -> int:
        return self.intermediate_size or 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def num_params(self) -> int:
        h, f = self.hidden_size, self.ffn_size
        layer = 3 * h * h + 3 * h + h * h + h + 2 * h * f + f + h + 4 * h  # qkv, dense, mlp, two LNs
        return self.vocab_size * h + 2 * self.max_position_embeddings * h + self.num_hidden_layers * layer + 2 * h

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


PRESETS = {
    # GLM-Large (335M): the original uses BERT's WordPiece vocabulary (30522 + command tokens, padded
    # to 30592) and 512 positions; its weights load here, its WordPiece tokenizer does not (docs/glm.md).
    "glm-large": GLMConfig(vocab_size=30592, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           max_position_embeddings=512),
    "glm-xlarge": GLMConfig(vocab_size=50304, hidden_size=2048, num_hidden_layers=36, num_attention_heads=32,
                            max_position_embeddings=1024),  # GLM-2B, GPT-2 BPE
    "glm-xxlarge": GLMConfig(vocab_size=50304, hidden_size=4096, num_hidden_layers=48, num_attention_heads=64,
                             max_position_embeddings=1024),  # GLM-10B, GPT-2 BPE
}

# The hub copy's config.json (THUDM/glm-*) names the same things differently.
_HUB_KEYS = {"num_layers": "num_hidden_layers", "max_sequence_length": "max_position_embeddings",
             "output_dropout_prob": "hidden_dropout", "attention_dropout_prob": "attention_dropout",
             "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_attention_heads": "num_attention_heads"}


def config_from_dict(data: dict, where: str) -> GLMConfig:
    """A ``glm_config.json`` object: optionally ``"preset"`` plus any GLMConfig field overriding it."""
    data = dict(data)
    base = PRESETS.get(data.pop("preset", None) or "glm-xxlarge")
    if base is None:
        raise ConfigError(f"{where}: unknown preset (known: {', '.join(PRESETS)})")
    known = {f.name for f in fields(GLMConfig)}
    unknown = sorted(k for k in data if k not in known and not k.startswith("_"))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: preset, {', '.join(sorted(known))})")
    data.pop("model_type", None)
    cfg = replace(base, **{k: v for k, v in data.items() if k in known})
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(f"{where}: hidden_size {cfg.hidden_size} is not divisible by "
                          f"num_attention_heads {cfg.num_attention_heads}")
    if cfg.tokenizer not in ("gpt2", "spm"):
        raise ConfigError(f"{where}: tokenizer must be 'gpt2' or 'spm', got {cfg.tokenizer!r}")
    return cfg


def is_hub_glm_config(data: dict) -> bool:
    """The hub's config.json of the original GLM (model_type ``glm`` with ``num_layers``; GLM-4's has
    ``num_hidden_layers`` instead)."""
    return "num_layers" in data and "max_sequence_length" in data


def read_config(directory: str | Path) -> GLMConfig:
    """``glm_config.json`` if present, else a hub-layout ``config.json``."""
    d = Path(directory)
    for name in (CONFIG_FILE, "config.json"):
        path = d / name
        if not path.is_file():
            continue
        data = load_json(read_text(path, ConfigError), path, ConfigError)
        if name == CONFIG_FILE:
            return config_from_dict(data, str(path))
        if is_hub_glm_config(data):
            mapped = {ours: data[theirs] for theirs, ours in _HUB_KEYS.items() if theirs in data}
            mapped["preset"] = "glm-xxlarge"
            if data.get("tokenizer_class", "").lower().startswith("glmchinese"):
                mapped["tokenizer"] = "spm"
            return config_from_dict(mapped, str(path))
    raise ConfigError(f"model.path: {d} has neither {CONFIG_FILE} nor a GLM config.json")


def is_glm_dir(directory: str | Path) -> bool:
    d = Path(directory)
    if (d / CONFIG_FILE).is_file():
        return True
    if not (d / "config.json").is_file():
        return False
    try:  # a config.json that is not UTF-8 is one line here, not "not a GLM directory"
        return is_hub_glm_config(json.loads(read_text(d / "config.json", ConfigError)))
    except ValueError:
        return False
