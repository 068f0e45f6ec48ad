"""Classification scores, in percent: accuracy, binary F1 of one positive class, macro-F1."""
from __future__ import annotations

from collections.abc import Hashable, Sequence


def _check(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")


def accuracy(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """100 * fraction of predictions equal to the gold label (0.0 for no examples)."""
    _check(gold, pred)
    return 100.0 * sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0


def _f1(tp: int, fp: int, fn: int) -> float:
    """F1 = 2tp / (2tp + fp + fn); 0 when there is nothing to find and nothing found."""
    return 2.0 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1(gold: Sequence[Hashable], pred: Sequence[Hashable], positive: Hashable = 1) -> float:
    """100 * F1 of the ``positive`` class (MRPC, MultiRC's F1a)."""
    _check(gold, pred)
    tp = sum(g == positive and p == positive for g, p in zip(gold, pred))
    fp = sum(g != positive and p == positive for g, p in zip(gold, pred))
    fn = sum(g == positive and p != positive for g, p in zip(gold, pred))
    return 100.0 * _f1(tp, fp, fn)


def macro_f1(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """100 * the unweighted mean of the per-class F1 over every class that occurs in the gold labels
    or the predictions (scikit-learn's ``f1_score(average="macro")`` without ``labels``, as the
    SuperGLUE CB scorer uses it); a class that is predicted but never gold counts with F1 0."""
    _check(gold, pred)
    classes = sorted(set(gold) | set(pred), key=repr)
    if not classes:
        return 0.0
    return sum(f1(gold, pred, positive=c) for c in classes) / len(classes)
