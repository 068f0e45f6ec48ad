"""GLM's tokenizers as transformers fast tokenizers (word_ids for token tasks), from local files.

English models: GPT-2 byte-level BPE (``vocab.json`` + ``merges.txt``, 50257 tokens) plus GLM's
command tokens at the ids of the original ``GPT2BPETokenizer(add_block_symbols, add_task_mask)``:
pad = eos = ``<|endoftext|>`` (50256), then from N = len(vocab.json): ``<|startofpiece|>`` N,
``<|endofpiece|>`` N+1, ``[CLS]`` N+2, ``[MASK]`` N+3, ``[SEP]`` N+4, ``[UNK]`` N+5, ``[gMASK]`` N+6,
``[sMASK]`` N+7 (50257..50264 for the real vocabulary).

Chinese models: a sentencepiece model (``tokenizer.model``) of N pieces plus the command tokens of
the original ``ChineseSPTokenizer`` (GLM-Large-Chinese layout): ``<|endoftext|>`` N, ``[SEP]`` N+1,
``[CLS]`` N+2, ``[MASK]`` N+3, ``[UNK]`` N+4, ``<|startofpiece|>`` N+6, ``<|endofpiece|>`` N+7,
``[sMASK]`` N+8, ``[gMASK]`` N+9 (N+5 is unused in the original; it is a placeholder here).

Encoding a text gives ``[CLS] text <|endoftext|>`` (a pair: ``[CLS] a [SEP] b <|endoftext|>``), the
input format of GLM's fine-tuning code; pre-split words get a leading space, as in running text.
"""
from __future__ import annotations

from pathlib import Path

from deepprompt.errors import ConfigError
from deepprompt.fileio import load_json, read_text

COMMANDS = ("<|startofpiece|>", "<|endofpiece|>", "[CLS]", "[MASK]", "[SEP]", "[UNK]", "[gMASK]", "[sMASK]")
EOT = "<|endoftext|>"


def gpt2_command_ids(n_text: int) -> dict[str, int]:
    return {tok: n_text + i for i, tok in enumerate(COMMANDS)}


def spm_command_ids(n_text: int) -> dict[str, int]:
    return {EOT: n_text, "[SEP]": n_text + 1, "[CLS]": n_text + 2, "[MASK]": n_text + 3, "[UNK]": n_text + 4,
            "<|unused|>": n_text + 5, "<|startofpiece|>": n_text + 6, "<|endofpiece|>": n_text + 7,
            "[sMASK]": n_text + 8, "[gMASK]": n_text + 9}


def _wrap(tok, ids: dict[str, int]):
    """Mark the command tokens special, add GLM's [CLS] ... <|endoftext|> template, wrap for transformers."""
    from tokenizers import AddedToken
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    specials = [AddedToken(t, special=True, lstrip=t in ("[MASK]", "[gMASK]", "[sMASK]"), normalized=False)
                for t in ids]
    tok.add_special_tokens(specials)
    for t, want in ids.items():
        if tok.token_to_id(t) != want:  # the vocabulary already held the name elsewhere
            raise ConfigError(f"model.path: tokenizer gives {t} id {tok.token_to_id(t)}, GLM expects {want}")
    cls, sep, eot = ids["[CLS]"], ids["[SEP]"], ids.get(EOT, tok.token_to_id(EOT))
    tok.post_processor = TemplateProcessing(
        single=f"[CLS] $A {EOT}", pair=f"[CLS] $A [SEP] $B {EOT}",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep), (EOT, eot)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", unk_token="[UNK]",
        pad_token=EOT, eos_token=EOT, additional_special_tokens=["[gMASK]", "[sMASK]", "<|startofpiece|>",
                                                                 "<|endofpiece|>"])


def gpt2_tokenizer(vocab_file: str | Path, merges_file: str | Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = load_json(read_text(vocab_file, ConfigError), vocab_file, ConfigError)
    if EOT not in vocab:
        raise ConfigError(f"{vocab_file}: no {EOT} token (not a GPT-2 vocabulary)")
    ids = gpt2_command_ids(len(vocab))
    vocab.update(ids)  # the command tokens at their original ids
    merges = [tuple(line.split()) for line in read_text(merges_file, ConfigError).splitlines()
              if line and not line.startswith("#version")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok, ids)


def spm_tokenizer(model_file: str | Path):
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    n = sp.get_piece_size()
    ids = spm_command_ids(n)
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(n)] + [(t, 0.0) for t in ids]
    tok = Tokenizer(models.Unigram(pieces, unk_id=sp.unk_id()))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return _wrap(tok, ids)


def load_tokenizer(directory: str | Path, kind: str):
    """The tokenizer of a GLM checkpoint directory (``kind`` from its config: gpt2 or spm)."""
    d = Path(directory)
    need = ("vocab.json", "merges.txt") if kind == "gpt2" else ("tokenizer.model",)
    missing = [f for f in need if not (d / f).is_file()]
    if missing:
        raise ConfigError(f"model.path: {d} has no {missing[0]} (GLM {kind} tokenizer files: {', '.join(need)})")
    return gpt2_tokenizer(d / need[0], d / need[1]) if kind == "gpt2" else spm_tokenizer(d / need[0])
