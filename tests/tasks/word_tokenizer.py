"""A tiny BERT word-piece tokenizer whose vocabulary is given, so alignment tests see real splits."""
from __future__ import annotations

from pathlib import Path


def bert_tokenizer(path: Path, words: list[str], pieces: tuple[str, ...] = ("##s", "##ed")):
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w.lower() for w in words}) + list(pieces)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
