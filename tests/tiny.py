"""Tiny random backbones saved to disk with a real (tiny) tokenizer, for end-to-end tests."""
from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


def fixture_words() -> list[str]:
    words = set()
    for f in (FIXTURES / "wnut16").iterdir():
        words |= {line.split("\t")[0].lower() for line in f.read_text().splitlines() if line.strip()}
    return sorted(words)


def save_tiny_bert(path: Path, num_layers: int = 2, hidden: int = 32, max_positions: int = 64) -> Path:
    """A random BERT (initializer_range 0.2, so frozen features are informative) + WordPiece tokenizer
    whose vocabulary covers the fixture words, saved as a from_pretrained directory."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + fixture_words() + ["##s", "##ing"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(path)
    import torch
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=num_layers, num_attention_heads=4,
                     intermediate_size=2 * hidden, max_position_embeddings=max_positions, initializer_range=0.2)
    BertModel(cfg).save_pretrained(path)
    return path
