"""The cloze formulation of sentence tasks (``task.formulation=cloze``, GLM's SuperGLUE format): the
input put in a pattern holding the tokenizer's mask token, one single-token verbalizer per label."""
from __future__ import annotations

from deepprompt.errors import ConfigError

TEXT, PAIR, MASK = "{text}", "{text_pair}", "{mask}"
"""The slots of a cloze pattern: the record's text, its text_pair, the tokenizer's mask token."""


class ClozePattern:
    """A cloze formulation for one tokenizer: the ``pattern`` parts (``TEXT``, ``PAIR``, ``MASK``
    and literal strings, concatenated token by token, each tokenised on its own) wrapped in the
    tokenizer's single-sequence special tokens, and the verbalizers' token ids.

    Only ``TEXT``/``PAIR`` are ever truncated (from their end, the segment named by ``truncate``
    first), so the mask and the pattern's words always survive."""

    def __init__(self, task: str, tokenizer, pattern: tuple[str, ...], verbalizers: tuple[str, ...], truncate: str):
        self.truncate = truncate
        # a tokenizer without a mask token is a decoder's: the pattern stops where the mask was and the
        # verbalizer is scored as the NEXT token after the last one (the cloze head reads a decoder's
        # last real token through its LM head); what followed the mask (a full stop) is dropped
        self.causal = tokenizer.mask_token_id is None
        if self.causal:
            self.mask_id = None
            pattern = pattern[:pattern.index(MASK) + 1]
            self.prefix, self.suffix = tokenizer("")["input_ids"], []  # e.g. a BOS token, or nothing
        else:
            self.mask_id = tokenizer.mask_token_id
            wrapped = tokenizer(tokenizer.mask_token)["input_ids"]  # e.g. [CLS] [MASK] [SEP]
            if wrapped.count(self.mask_id) != 1:
                raise ConfigError(f"task.formulation: task {task}: the tokenizer does not keep its mask token "
                                  f"{tokenizer.mask_token!r} as one token")
            k = wrapped.index(self.mask_id)
            self.prefix, self.suffix = wrapped[:k], wrapped[k + 1:]
        self.parts = [p if p in (TEXT, PAIR, MASK) else tokenizer(p, add_special_tokens=False)["input_ids"]
                      for p in pattern]
        self.fixed = len(self.prefix) + len(self.suffix) + sum((0 if self.causal else 1) if p == MASK else len(p)
                                                               for p in self.parts if p not in (TEXT, PAIR))
        self.candidate_ids = [verbalizer_id(tokenizer, task, w) for w in verbalizers]

    def encode(self, text: list[int], pair: list[int], max_length: int) -> tuple[list[int], int, bool]:
        """(input ids, mask position, truncated) for one record's tokenised text and text_pair."""
        budget = max_length - self.fixed
        if budget < 1:
            raise ConfigError(f"task.max_seq_length: {max_length} leaves no room for the text in the cloze "
                              f"pattern ({self.fixed} tokens)")
        over = len(text) + len(pair) - budget
        if over > 0:
            text, pair = _cut(text, pair, over, self.truncate)
        ids = list(self.prefix)
        mask_at = -1
        for p in self.parts:
            if p == MASK:
                if self.causal:  # the answer is the next token after the last one
                    mask_at = len(ids) - 1
                    continue
                mask_at = len(ids)
                ids.append(self.mask_id)
            else:
                ids += text if p == TEXT else pair if p == PAIR else p
        return ids + self.suffix, mask_at, over > 0


def _cut(text: list[int], pair: list[int], over: int, truncate: str) -> tuple[list[int], list[int]]:
    """Drop ``over`` tokens off the ends of the segments: the one ``truncate`` names first (then
    the other), or the longer one token by token (``longest``)."""
    if truncate == "longest":
        a, b = len(text), len(pair)
        for _ in range(over):
            if a >= b:
                a -= 1
            else:
                b -= 1
        return text[:a], pair[:b]
    first, second = (text, pair) if truncate == "text" else (pair, text)
    keep_first = max(0, len(first) - over)
    rest = over - (len(first) - keep_first)
    first, second = first[:keep_first], second[:len(second) - rest]
    return (first, second) if truncate == "text" else (second, first)


def verbalizer_id(tokenizer, task: str, word: str) -> int:
    """The single token of ``word`` as it follows a space in running text (BPE: `` yes``), else of
    the bare word; a word that is neither one known token is a one-line ``ConfigError``."""
    unk = tokenizer.unk_token_id
    for form in (" " + word, word):
        ids = tokenizer(form, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and ids[0] != unk:
            return ids[0]
    raise ConfigError(f"task.formulation: task {task}: verbalizer {word!r} is not a single token for this "
                      f"tokenizer ({tokenizer.tokenize(' ' + word)}); cloze needs one token per label")
