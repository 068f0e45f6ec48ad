"""Answer-string scoring shared by SQuAD and ReCoRD: the official SQuAD normalisation, exact match
and bag-of-tokens F1, each maximised over the gold answers.

The normalisation is the one of the official SQuAD v1.1/v2.0 evaluation scripts: lower-case,
drop every ASCII punctuation character, drop the articles a/an/the (as whole words), collapse runs
of whitespace to one space."""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Callable, Sequence

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the two normalise to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, empty_matches_empty: bool = True) -> float:
    """F1 of the normalised tokens (multiset overlap). When either side normalises to nothing the
    SQuAD 2.0 script scores 1.0 if both are empty and 0.0 otherwise (``empty_matches_empty``); the
    v1.1 script has no such case and scores 0.0 whenever the overlap is empty."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if empty_matches_empty and (not pred or not ref):
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(score: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
    """The best score of ``prediction`` against any gold answer (0.0 with no golds)."""
    return max((score(prediction, g) for g in golds), default=0.0)
