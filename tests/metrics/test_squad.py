"""SQuAD v1.1/v2.0 aggregation: window merging, EM/F1 over questions, the no-answer threshold."""
import math

import pytest

from deepprompt.metrics.squad import best_threshold, merge_windows, squad_v1, squad_v2


def test_merge_windows_takes_best_span_and_lowest_null():
    merged = merge_windows([
        {"id": "q", "null": 3.0, "spans": [[10, 15, 2.0], [0, 4, 1.0]]},
        {"id": "q", "null": 1.5, "spans": [[40, 48, 2.5]]},
        {"id": "r", "null": 0.0, "spans": []},
    ])
    assert merged["q"] == {"span": (40, 48), "score": 2.5, "null": 1.5}
    assert merged["r"]["span"] is None and merged["r"]["score"] == -math.inf


def test_squad_v1_by_hand():
    golds = {"q1": ["the North Sea", "North Sea"], "q2": ["1815", "In the year 1815"], "q3": ["Duisburg"]}
    preds = {"q1": "North Sea", "q2": "the year 1815"}  # q3 has no prediction: it scores 0
    # q1: EM 1, F1 1; q2: EM 0, F1 max(2/3, 0.8) = 0.8; q3: 0, 0
    out = squad_v1(preds, golds)
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * 1.8 / 3)


QUESTIONS = {  # id: (gold answers, best non-empty prediction, no-answer score)
    "a": (["Paris"], "Paris", -2.0),
    "b": (["blue whale"], "whale", 1.0),
    "c": ([], "foo", 2.0),
    "d": ([], "bar", 3.0),
}


def _v2(threshold=0.0):
    golds = {q: g for q, (g, _, _) in QUESTIONS.items()}
    preds = {q: p for q, (_, p, _) in QUESTIONS.items()}
    na = {q: s for q, (_, _, s) in QUESTIONS.items()}
    return squad_v2(preds, na, golds, threshold)


def test_squad_v2_at_threshold_zero():
    out = _v2()
    # a answered (Paris: 1), b abstains (0: it has an answer), c and d abstain (1 each)
    assert out["exact_match"] == 75.0 and out["f1"] == 75.0
    assert out["HasAns_exact_match"] == 50.0 and out["HasAns_f1"] == 50.0 and out["HasAns_total"] == 2
    assert out["NoAns_exact_match"] == 100.0 and out["NoAns_f1"] == 100.0 and out["NoAns_total"] == 2


def test_squad_v2_threshold_tuned_on_dev():
    out = _v2()
    # sweep from "answer nothing" (2 of 4) in increasing no-answer score:
    # a(-2) +1 -> 3; b(1.0) +F1 2/3 -> 3.667 (EM +0 -> 3); c(2.0) -1; d(3.0) -1
    assert out["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and out["best_f1_thresh"] == 1.0
    assert out["best_exact_match"] == 75.0 and out["best_exact_match_thresh"] == -2.0
    # applying the tuned threshold reproduces the tuned score
    assert _v2(threshold=1.0)["f1"] == pytest.approx(out["best_f1"])


def test_answering_nothing_can_be_best():
    preds, na, golds = {"x": "foo", "y": "bar"}, {"x": 0.5, "y": 1.0}, {"x": [], "y": []}
    score, thresh = best_threshold(preds, {"x": 0.0, "y": 0.0}, na, {"x": False, "y": False})
    assert score == 100.0 and thresh < 0.5  # below every no-answer score: nobody is answered
    assert squad_v2(preds, na, golds, thresh)["exact_match"] == 100.0


def test_empty_prediction_vs_no_answer():
    golds = {"has": ["Paris"], "none": [], "only_article": ["the"]}  # "the" normalises to nothing: no answer
    preds = {"has": "", "none": "", "only_article": ""}
    out = squad_v2(preds, {q: -1.0 for q in golds}, golds)  # every question "answered" with ""
    assert out["HasAns_exact_match"] == 0.0 and out["HasAns_f1"] == 0.0
    assert out["NoAns_exact_match"] == 100.0 and out["NoAns_total"] == 2
