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


BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def save_bert(path: Path, words, pieces=(), num_layers: int = 2, hidden: int = 32, max_positions: int = 64,
              dropout: float = 0.1) -> Path:
    """THE tiny BERT of the tests (every test's BERT comes from here): random weights (seed 0) and a
    word-level word-piece tokenizer whose vocabulary is the specials + ``words`` (in this order) +
    ``pieces`` (e.g. ``##s``), saved as a from_pretrained directory."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = [*BERT_SPECIALS, *words, *pieces]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab=str(path / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=num_layers,
                     intermediate_size=2 * hidden, max_position_embeddings=max_positions,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **SHAPE)
    model = BertModel(cfg)
    tok.save_pretrained(path)
    model.save_pretrained(path)
    return path


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


def _mpnet(path: Path, layers: int, hidden: int, positions: int):
    from transformers import MPNetConfig, MPNetModel, MPNetTokenizer

    vocab = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"] + fixture_words() + ["##s", "##ing"]
    tok = MPNetTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    cfg = MPNetConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, intermediate_size=2 * hidden,
                      max_position_embeddings=positions + 2, pad_token_id=1, **SHAPE)
    return tok, MPNetModel(cfg)


BUILDERS = {"roberta": _roberta, "deberta-v2": _deberta_v2, "mpnet": _mpnet}


def save_tiny(family: str, path: Path, num_layers: int = 2, hidden: int = 32, max_positions: int = 64,
              dropout: float = 0.1) -> Path:
    """A random backbone of ``family`` + a tokenizer covering the fixture words, saved as a
    from_pretrained directory."""
    if family == "bert":
        return save_bert(path, fixture_words(), ("##s", "##ing"), num_layers, hidden, max_positions, dropout)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tokenizer, model = BUILDERS[family](path, num_layers, hidden, max_positions)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = dropout
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def save_tiny_bert(path: Path, **kw) -> Path:
    return save_tiny("bert", path, **kw)


def build_zero3(model_dir: Path, *overrides: str, ds_config: str = "ds_configs/zero3.json"):
    """(run config, ds_setup.Built, task): the tiny model on the fixture NER data under ZeRO-3, in
    this process (one rank), through the same ``ds_setup.build`` the trainer uses (``setup.build_for``)."""
    from deepprompt.config import load_config
    from deepprompt.engine import comm, setup
    from deepprompt.models.loading import load_tokenizer, resolve_backbone
    from deepprompt.tasks import build_task

    comm.init_distributed()
    run = load_config(None, [f"model.path={model_dir}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4",
                             "task.max_seq_length=32", "train.batch_size=4", "train.micro_batch_size=4", *overrides])
    backbone = resolve_backbone(str(model_dir))
    task = build_task(run.task, load_tokenizer(backbone))
    built = setup.build_for(run, str(REPO / ds_config), [task], backbone)
    return run, built, task


def train_steps(built, task, steps: int, batch: int = 4) -> None:
    """``steps`` optimizer steps over consecutive fixture batches (wrapping around)."""
    feats = task.features("train")
    for step in range(steps):
        i = batch * step % (len(feats) - batch)
        loss = built.engine(task.collate(feats[i:i + batch]), task.name).loss
        built.engine.backward(loss)
        built.engine.step()


def free_port() -> int:
    """A TCP port free on the loopback interface right now (a launched run's master port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict:
    """The environment for a run launched from a test: none of this process's process-group
    variables (each launched run makes its own), one thread per rank, this checkout first."""
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
