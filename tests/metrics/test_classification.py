"""Classification scores against values worked out by hand."""
import pytest

from deepprompt.metrics.classification import accuracy, f1, macro_f1


def test_accuracy():
    assert accuracy(["a", "b", "a", "a"], ["a", "a", "a", "b"]) == 50.0
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


def test_binary_f1_of_the_positive_class():
    # tp = 2 (idx 0, 3), fp = 1 (idx 1), fn = 1 (idx 4): F1 = 2*2 / (2*2 + 1 + 1) = 2/3
    gold = ["1", "0", "0", "1", "1"]
    pred = ["1", "1", "0", "1", "0"]
    assert f1(gold, pred, positive="1") == pytest.approx(200 / 3)
    assert f1(["0", "0"], ["0", "0"], positive="1") == 0.0  # nothing to find, nothing found


def test_cb_macro_f1_by_hand():
    # e: tp 2, fp 0, fn 1 -> 4/5;  c: tp 1, fp 2, fn 0 -> 2/4;  n: tp 0 -> 0;  mean = 1.3 / 3
    gold = ["entailment", "entailment", "entailment", "contradiction", "neutral"]
    pred = ["entailment", "entailment", "contradiction", "contradiction", "contradiction"]
    assert macro_f1(gold, pred) == pytest.approx(100 * (0.8 + 0.5 + 0.0) / 3)
    assert accuracy(gold, pred) == 60.0


def test_macro_f1_averages_the_classes_that_occur():
    # only e and c occur: e tp 1 fn 1 -> 2/3, c tp 0 -> 0; neutral (in neither) is not averaged in
    assert macro_f1(["e", "e"], ["e", "c"]) == pytest.approx(100 / 3)
    assert macro_f1(["e", "c", "n"], ["e", "c", "n"]) == 100.0
