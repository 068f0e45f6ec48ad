"""Answer-string comparison shared by every extractive scorer (SQuAD, ReCoRD): the official
SQuAD v1.1 normalisation (lower-case, drop punctuation, drop the articles a/an/the, collapse
whitespace), exact match and bag-of-tokens F1 of one prediction against one gold answer, and the
max over several gold answers."""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """lower -> remove punctuation -> remove articles -> collapse whitespace (the official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when both normalise to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the multiset of normalised tokens (0..1); two empty answers agree (1.0)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(score: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    """The best score of ``prediction`` against any of ``golds`` (0.0 if there are none)."""
    return max((score(prediction, g) for g in golds), default=0.0)
