"""The SuperGLUE scorers that are more than accuracy: MultiRC (F1a + EM per question) and ReCoRD
(EM/F1 of the best candidate per query, max over the gold answers). Percentages."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence

from deepprompt.metrics.classification import f1
from deepprompt.metrics.text import exact_match, max_over_golds, token_f1


def multirc_scores(answers: Iterable[tuple[Hashable, int, int]]) -> dict[str, float]:
    """``answers``: one ``(question key, gold 0/1, predicted 0/1)`` per answer option; the question
    key must tell questions apart across paragraphs (e.g. ``(paragraph idx, question idx)``).

    f1a: binary F1 of the "true" class over ALL answer options pooled;
    em:  percentage of questions whose options are ALL predicted right."""
    rows = list(answers)
    if not rows:
        return {"f1a": 0.0, "em": 0.0}
    all_right: dict[Hashable, bool] = defaultdict(lambda: True)
    for key, gold, pred in rows:
        all_right[key] = all_right[key] and gold == pred
    return {"f1a": f1([g for _, g, _ in rows], [p for _, _, p in rows], positive=1),
            "em": 100.0 * sum(all_right.values()) / len(all_right)}


def record_scores(queries: Iterable[tuple[str, Sequence[str]]]) -> dict[str, float]:
    """``queries``: one ``(predicted entity text, gold answer texts)`` per query. EM and token F1 of
    the prediction against its best-matching gold answer (SQuAD normalisation), averaged."""
    rows = list(queries)
    if not rows:
        return {"em": 0.0, "f1": 0.0}
    em = sum(max_over_golds(exact_match, pred, golds) for pred, golds in rows)
    f = sum(max_over_golds(token_f1, pred, golds) for pred, golds in rows)
    return {"em": 100.0 * em / len(rows), "f1": 100.0 * f / len(rows)}
