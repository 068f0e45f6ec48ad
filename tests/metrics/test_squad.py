"""SQuAD scoring checked by hand: the official normalisation, EM/F1 (v1.1 and v2.0 empty-answer
rules), window merging, EM/F1 over questions, the v2.0 no-answer threshold."""
import math

import pytest

from deepprompt.metrics.squad import best_threshold, merge_windows, squad_v1, squad_v2, token_f1_v1
from deepprompt.metrics.text import exact_match, max_over_golds, normalize_answer, token_f1


@pytest.mark.parametrize("raw, normalised", [
    ("The  Quick, brown fox!", "quick brown fox"),
    ("an apple a day", "apple day"),  # articles go as whole words ...
    ("Theatre and anchors", "theatre and anchors"),  # ... never inside a word
    ("  New\tYork\n City ", "new york city"),  # whitespace collapses
    ("U.S.A.", "usa"),  # punctuation is removed, not replaced by a space
    ("state-of-the-art", "stateoftheart"),
    ("“quoted” – text", "“quoted” – text"),  # only ASCII punctuation, as the official script
    ("The", ""),
])
def test_official_normalisation(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_after_official_normalisation():
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("", "The") == 1.0  # both normalise to nothing


def test_squad_token_f1_by_hand():
    # pred {cat, sat}, gold {cat, sat, on, mat}: P = 1, R = 1/2 -> F1 = 2/3
    assert token_f1("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    # multiset overlap: pred cat x2 dog x1, gold cat x1 dog x2 -> 2 shared of 3 each
    assert token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    assert token_f1("cat", "dog") == 0.0


def test_empty_answers_v2_vs_v1():
    assert token_f1("", "") == 1.0 and token_f1("the", "a") == 1.0  # v2: both empty -> 1
    assert token_f1("", "Paris") == 0.0 and token_f1("Paris", "") == 0.0
    assert token_f1_v1("the", "a") == 0.0 and token_f1_v1("", "") == 0.0  # v1: no overlap -> 0
    assert token_f1_v1("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)


def test_squad_max_over_golds():
    golds = ["1815", "In the year 1815"]
    # vs "1815": P 1/2, R 1 -> 2/3; vs "in year 1815": P 1, R 2/3 -> 0.8
    assert max_over_golds(token_f1, "the year 1815", golds) == pytest.approx(0.8)
    assert max_over_golds(exact_match, "1815.", golds) == 1.0
    assert max_over_golds(exact_match, "x", []) == 0.0


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
