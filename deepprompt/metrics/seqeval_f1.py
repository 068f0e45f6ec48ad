"""Entity-level micro precision/recall/F1 over BIO sequences (seqeval).

The default is seqeval's default mode, which is conlleval's chunking (and what the P-Tuning v2 code
reports): ``B-X`` starts a chunk, and so does an ``I-X`` that follows ``O`` or a different type. That
reads IOB1 and IOB2 sequences alike (an IOB1 sequence scores the same as its IOB2 conversion), and a
predicted ``I-X`` without a ``B-X`` still counts as a chunk. ``mode="strict"`` is seqeval's strict
IOB2 mode: only a ``B-X`` starts a chunk, so an orphan ``I-X`` is no entity at all (use it only on
IOB2 data; the tasks normalise gold tags to IOB2), or its IOBES mode when the gold has ``E-``/``S-``
tags. BIOES sequences score in the default mode as they are (``S-X`` is a chunk, ``E-X`` ends one)."""
from __future__ import annotations

from seqeval.metrics import f1_score, precision_score, recall_score


def entity_f1(gold: list[list[str]], pred: list[list[str]], mode: str | None = None) -> dict[str, float]:
    if mode not in (None, "strict"):
        raise ValueError(f"entity_f1: mode must be None (conlleval) or 'strict', got {mode!r}")
    kw = {"zero_division": 0}
    if mode == "strict":
        from seqeval.scheme import IOB2, IOBES
        bioes = any(t[:2] in ("E-", "S-") for seq in gold for t in seq)
        kw.update(mode="strict", scheme=IOBES if bioes else IOB2)
    return {"f1": 100.0 * float(f1_score(gold, pred, **kw)),
            "precision": 100.0 * float(precision_score(gold, pred, **kw)),
            "recall": 100.0 * float(recall_score(gold, pred, **kw))}
