"""A tiny BERT whose word-level vocabulary covers every SuperGLUE/GLUE fixture, so the fixtures
tokenise into real word pieces (no [UNK]) and the token-by-token checks can read them."""
from __future__ import annotations

import json
from pathlib import Path

from tests.tiny import BERT_SPECIALS, FIXTURES, save_bert

EXTRA = "what was the cause effect ? : * # - ."  # COPA's question, the span markers, ReCoRD's bullets


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def fixture_texts() -> list[str]:
    texts = [EXTRA]
    for f in sorted((FIXTURES / "superglue").glob("*/*.jsonl")):
        texts += [s for line in f.read_text().splitlines() if line.strip() for s in _strings(json.loads(line))]
    for f in sorted((FIXTURES / "glue").glob("*/*.tsv")):
        texts += [field for line in f.read_text(encoding="utf-8-sig").splitlines() for field in line.split("\t")]
    return texts


def vocabulary() -> list[str]:
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    norm, pre = BertNormalizer(lowercase=True, strip_accents=True), BertPreTokenizer()
    words = {w for t in fixture_texts() for w, _ in pre.pre_tokenize_str(norm.normalize_str(t))}
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words)


def save_sentence_bert(path: Path, num_layers: int = 2, hidden: int = 32, max_positions: int = 128) -> Path:
    """A random BERT + tokenizer covering the fixture words, saved as a from_pretrained directory."""
    return save_bert(path, vocabulary()[len(BERT_SPECIALS):], (), num_layers, hidden, max_positions)
