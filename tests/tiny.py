"""Tiny random backbones saved to disk with a real (tiny) tokenizer, for end-to-end tests."""
from __future__ import annotations

import string
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent
SHAPE = dict(num_attention_heads=4, initializer_range=0.2)  # 0.2: frozen random features a prompt can use


def fixture_words() -> list[str]:
    words = set()
    for f in (FIXTURES / "wnut16").iterdir():
        words |= {line.split("\t")[0].lower() for line in f.read_text().splitlines() if line.strip()}
    return sorted(words)


def _bert(path: Path, layers: int, hidden: int, positions: int):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + fixture_words() + ["##s", "##ing"]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, intermediate_size=2 * hidden,
                     max_position_embeddings=positions, **SHAPE)
    return tok, BertModel(cfg)


def _roberta(path: Path, layers: int, hidden: int, positions: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(fixture_words())] * 5, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(path))
    tok = RobertaTokenizerFast(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt"), add_prefix_space=True)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, intermediate_size=2 * hidden,
                        max_position_embeddings=positions + 2, pad_token_id=1, **SHAPE)
    return tok, RobertaModel(cfg)


def _deberta_v2(path: Path, layers: int, hidden: int, positions: int):
    from transformers import DebertaV2Config, DebertaV2Model, DebertaV2Tokenizer

    specials = [("[PAD]", 0.0), ("[UNK]", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[MASK]", 0.0)]
    pieces = [("\u2581" + w, -1.0) for w in fixture_words()] + [(c, -5.0) for c in string.ascii_lowercase]
    tok = DebertaV2Tokenizer(vocab=specials + pieces + [("\u2581", -3.0)], unk_id=1)
    cfg = DebertaV2Config(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, intermediate_size=2 * hidden,
                          max_position_embeddings=positions, relative_attention=True, pos_att_type=["c2p", "p2c"],
                          position_biased_input=False, position_buckets=16, max_relative_positions=-1, **SHAPE)
    return tok, DebertaV2Model(cfg)


BUILDERS = {"bert": _bert, "roberta": _roberta, "deberta-v2": _deberta_v2}


def save_tiny(family: str, path: Path, num_layers: int = 2, hidden: int = 32, max_positions: int = 64,
              dropout: float = 0.1) -> Path:
    """A random backbone of ``family`` + a tokenizer covering the fixture words, saved as a
    from_pretrained directory."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer, model = BUILDERS[family](path, num_layers, hidden, max_positions)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = dropout
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def save_tiny_bert(path: Path, **kw) -> Path:
    return save_tiny("bert", path, **kw)
