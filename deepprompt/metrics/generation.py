"""Scores of generated text against references: ROUGE-1/2/L (rouge-score, F-measure, Porter
stemming, the best reference per example), corpus BLEU-4 (sacrebleu, default 13a tokenisation, every
reference) and exact match (the SQuAD normalisation, the best reference). All on a 0-100 scale.

rouge-score tokenises on ASCII letters and digits only: text in other scripts (e.g. Chinese ADGEN)
scores 0 ROUGE; use BLEU (``sacrebleu`` with its own tokenisers) there."""
from __future__ import annotations

from collections.abc import Sequence

from deepprompt.metrics.text import exact_match, max_over_golds

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, references, strict=True):
        scores = [scorer.score(ref, pred) for ref in refs]
        for t in ROUGE_TYPES:
            totals[t] += max(s[t].fmeasure for s in scores)
    n = max(1, len(predictions))
    return {t: 100.0 * v / n for t, v in totals.items()}


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4; examples with fewer references repeat their last one (sacrebleu needs as
    many reference streams for every example)."""
    import sacrebleu

    width = max(len(r) for r in references)
    streams = [[refs[min(i, len(refs) - 1)] for refs in references] for i in range(width)]
    return float(sacrebleu.corpus_bleu(list(predictions), streams).score)


def generation_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    if any(not refs for refs in references):
        raise ValueError("generation metrics: an example without references")
    out = rouge(predictions, references)
    out["bleu4"] = bleu4(predictions, references)
    em = [max_over_golds(exact_match, p, r) for p, r in zip(predictions, references, strict=True)]
    out["exact_match"] = 100.0 * sum(em) / max(1, len(em))
    return out
