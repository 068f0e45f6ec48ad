"""Tiny random GLMs (and their GPT-2 BPE tokenizer files) for the GLM tests."""
from __future__ import annotations

from pathlib import Path

import torch

from deepprompt.models.glm.checkpoint import save_original
from deepprompt.models.glm.config import GLMConfig
from deepprompt.models.glm.model import GLMModel, init_weights
from tests.tiny import fixture_words


def tiny_config(**kw) -> GLMConfig:
    base = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0, initializer_range=0.2)
    return GLMConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> GLMModel:
    torch.manual_seed(seed)
    model = GLMModel(tiny_config(**kw))
    init_weights(model)
    return model.eval()


def write_gpt2_files(directory: Path) -> int:
    """vocab.json + merges.txt of a small byte-level BPE over the fixture words; returns its size."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator([" ".join(fixture_words())] * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    bpe.save_model(str(directory))
    return bpe.get_vocab_size()


def save_tiny_glm(directory: Path, mp: int = 1, seed: int = 0, **kw) -> tuple[Path, GLMModel]:
    """A tiny random GLM in the original layout (``mp`` model-parallel files) + tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    n_text = write_gpt2_files(directory)
    vocab = (n_text + 8 + 7) // 8 * 8  # text + 8 command tokens, padded like the original
    model = tiny_model(seed, vocab_size=vocab, **kw)
    save_original(model, directory, mp=mp)
    return directory, model
