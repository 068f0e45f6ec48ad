"""SQuAD v1.1 / v2.0 scoring, re-implemented from the official evaluation scripts, plus the step
before it: merging the per-window span candidates of one question into its answer.

v1.1: exact match and F1 (x100), each the maximum over the gold answers.
v2.0: every question gets the best span of all its windows and a no-answer score
``null - best span`` (the null score of a window is start[CLS] + end[CLS]; a question takes the
lowest over its windows). With threshold ``t`` a question is answered "" when that difference
exceeds ``t``. Reported: exact_match/f1 (and their HasAns_/NoAns_ parts) at ``t = 0``, and
best_exact_match/best_f1 at the threshold tuned on the same split, with the official script's
``find_best_thresh`` sweep (best_*_thresh says where)."""
from __future__ import annotations

import math
from typing import Iterable

from deepprompt.metrics.text import exact_match, max_over_golds, normalize_answer, token_f1


def token_f1_v1(prediction: str, gold: str) -> float:
    """The v1.1 script's F1: as ``token_f1`` but 0.0 when either side normalises to nothing (the
    v2.0 script, and ``token_f1``, score two empty answers 1.0)."""
    if not normalize_answer(prediction) or not normalize_answer(gold):
        return 0.0
    return token_f1(prediction, gold)


def merge_windows(window_predictions: Iterable[dict]) -> dict[str, dict]:
    """Per question id: ``span`` = (char_start, char_end) of the best-scoring candidate over all
    its windows (None if no window had a valid span), ``score`` its score, ``null`` the lowest
    no-answer score over its windows. A window prediction is ``{"id", "null", "spans": [[cs, ce,
    score], ...]}``."""
    merged: dict[str, dict] = {}
    for p in window_predictions:
        m = merged.setdefault(p["id"], {"span": None, "score": -math.inf, "null": math.inf})
        m["null"] = min(m["null"], p["null"])
        for cs, ce, score in p["spans"]:
            if score > m["score"]:
                m["span"], m["score"] = (int(cs), int(ce)), score
    return merged


def squad_v1(predictions: dict[str, str], golds: dict[str, list[str]]) -> dict[str, float]:
    """Official v1.1 EM/F1 (x100) over the questions of ``golds`` (a missing prediction scores 0)."""
    if not golds:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for qid, answers in golds.items():
        pred = predictions.get(qid, "")
        em += max_over_golds(exact_match, pred, answers)
        f1 += max_over_golds(token_f1_v1, pred, answers)
    return {"exact_match": 100.0 * em / len(golds), "f1": 100.0 * f1 / len(golds)}


def _v2_golds(answers: list[str]) -> list[str]:
    """As the v2.0 script: the answers that normalise to something, or [""] (no answer)."""
    return [a for a in answers if normalize_answer(a)] or [""]


def best_threshold(predictions: dict[str, str], raw: dict[str, float], na_scores: dict[str, float],
                   has_answer: dict[str, bool]) -> tuple[float, float]:
    """(best score x100, threshold): the official ``find_best_thresh`` sweep. Start from answering
    nothing; visit questions in increasing no-answer score; letting one through adds its raw score
    (has an answer), subtracts 1 (no answer, but a non-empty prediction) or changes nothing. When
    answering nothing is best the threshold returned is below every no-answer score."""
    score = best = float(sum(not h for h in has_answer.values()))
    thresh = min(na_scores.values(), default=0.0) - 1.0
    for qid in sorted(na_scores, key=lambda q: na_scores[q]):
        if has_answer[qid]:
            score += raw[qid]
        elif predictions[qid]:
            score -= 1
        if score > best:
            best, thresh = score, na_scores[qid]
    return 100.0 * best / max(1, len(has_answer)), thresh


def squad_v2(predictions: dict[str, str], na_scores: dict[str, float], golds: dict[str, list[str]],
             threshold: float = 0.0) -> dict[str, float]:
    """``predictions``: each question's best non-empty span text; ``na_scores``: its no-answer
    score (null - best span); ``golds``: its gold answer texts ([] = unanswerable)."""
    has_answer = {q: bool([a for a in g if normalize_answer(a)]) for q, g in golds.items()}
    raw_em, raw_f1, em, f1 = {}, {}, {}, {}
    for qid, answers in golds.items():
        gold = _v2_golds(answers)
        pred = predictions.get(qid, "")
        raw_em[qid] = max_over_golds(exact_match, pred, gold)
        raw_f1[qid] = max_over_golds(token_f1, pred, gold)
        null = na_scores.get(qid, math.inf) > threshold
        em[qid] = float(not has_answer[qid]) if null else raw_em[qid]
        f1[qid] = float(not has_answer[qid]) if null else raw_f1[qid]
    n = max(1, len(golds))
    out = {"exact_match": 100.0 * sum(em.values()) / n, "f1": 100.0 * sum(f1.values()) / n}
    for part, keep in (("HasAns", True), ("NoAns", False)):
        ids = [q for q in golds if has_answer[q] == keep]
        if ids:
            out[f"{part}_exact_match"] = 100.0 * sum(em[q] for q in ids) / len(ids)
            out[f"{part}_f1"] = 100.0 * sum(f1[q] for q in ids) / len(ids)
            out[f"{part}_total"] = float(len(ids))
    na = {q: na_scores.get(q, math.inf) for q in golds}
    preds = {q: predictions.get(q, "") for q in golds}
    out["best_exact_match"], out["best_exact_match_thresh"] = best_threshold(preds, raw_em, na, has_answer)
    out["best_f1"], out["best_f1_thresh"] = best_threshold(preds, raw_f1, na, has_answer)
    return out
