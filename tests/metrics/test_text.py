"""SQuAD-style answer normalisation, EM and token F1, by hand."""
import pytest

from deepprompt.metrics.text import exact_match, max_over_golds, normalize_answer, token_f1


@pytest.mark.parametrize("raw, norm", [
    ("The  Cat's, an apple!", "cats apple"),   # lower, punctuation, articles, whitespace
    ("theater", "theater"),                    # 'the' only as a whole word
    ("A", ""),
    ("  Tom\tJones\n", "tom jones"),
    ("U.S.-led", "usled"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_and_token_f1():
    assert exact_match("the Seine", "Seine") == 1.0
    assert exact_match("Seine River", "Seine") == 0.0
    # [tom, jones, jr] vs [tom, jones]: 2 common, P 2/3, R 1 -> F1 0.8
    assert token_f1("Tom Jones Jr.", "Tom Jones") == pytest.approx(0.8)
    # repeated tokens count as a multiset: [a1, a1] vs [a1]: common 1, P 1/2, R 1 -> 2/3
    assert token_f1("paris paris", "paris") == pytest.approx(2 / 3)
    assert token_f1("the", "a") == 1.0 and token_f1("the", "cat") == 0.0  # both empty after normalising / one empty
    assert max_over_golds(token_f1, "Tom Jones Jr.", ["Jones", "Tom Jones"]) == pytest.approx(0.8)
    assert max_over_golds(exact_match, "x", []) == 0.0
