"""Entity-level micro precision/recall/F1 over IOB2 sequences (seqeval's conlleval-style scoring)."""
from __future__ import annotations

from seqeval.metrics import f1_score, precision_score, recall_score


def entity_f1(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    return {"f1": 100.0 * float(f1_score(gold, pred, zero_division=0)),
            "precision": 100.0 * float(precision_score(gold, pred, zero_division=0)),
            "recall": 100.0 * float(recall_score(gold, pred, zero_division=0))}
