"""The official SQuAD answer normalisation, exact match and token F1, checked against values
computed by hand."""
import pytest

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
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_after_normalisation():
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("", "The") == 1.0  # both normalise to nothing


def test_token_f1_by_hand():
    # pred {cat, sat}, gold {cat, sat, on, mat}: P = 1, R = 1/2 -> F1 = 2/3
    assert token_f1("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    # multiset overlap: pred cat x2 dog x1, gold cat x1 dog x2 -> 2 shared of 3 each
    assert token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    assert token_f1("cat", "dog") == 0.0


def test_empty_answers_v2_vs_v1():
    assert token_f1("", "") == 1.0 and token_f1("the", "a") == 1.0  # v2: both empty -> 1
    assert token_f1("", "Paris") == 0.0 and token_f1("Paris", "") == 0.0
    assert token_f1("the", "a", empty_matches_empty=False) == 0.0  # v1: no overlap -> 0


def test_max_over_golds():
    golds = ["1815", "In the year 1815"]
    # vs "1815": P 1/2, R 1 -> 2/3; vs "in year 1815": P 1, R 2/3 -> 0.8
    assert max_over_golds(token_f1, "the year 1815", golds) == pytest.approx(0.8)
    assert max_over_golds(exact_match, "1815.", golds) == 1.0
    assert max_over_golds(exact_match, "x", []) == 0.0
