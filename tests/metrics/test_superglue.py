"""MultiRC and ReCoRD scorers against values computed by hand."""
import pytest

from deepprompt.metrics.superglue import multirc_scores, record_scores


def test_multirc_groups_by_paragraph_and_question():
    rows = [
        # paragraph 0, question 0: one option wrong -> not an exact match
        (("p0", 0), 1, 1), (("p0", 0), 0, 0), (("p0", 0), 1, 0),
        # paragraph 0, question 1: all right
        (("p0", 1), 1, 1), (("p0", 1), 0, 0),
        # paragraph 1, question 0: the same question idx in another paragraph is another question
        (("p1", 0), 0, 1),
    ]
    s = multirc_scores(rows)
    # EM: 1 of 3 questions.  F1a pooled: tp 2, fp 1, fn 1 -> 4/6
    assert s["em"] == pytest.approx(100 / 3)
    assert s["f1a"] == pytest.approx(200 / 3)
    # grouping by question idx alone would merge (p0, 0) and (p1, 0): 1 of 2 questions, a different EM
    merged = multirc_scores([(k[1], g, p) for k, g, p in rows])
    assert merged["em"] == 50.0


def test_record_max_over_several_gold_answers():
    s = record_scores([
        ("the Seine", ["Seine", "Seine River"]),        # EM 1 (articles dropped), F1 1
        ("Tom Jones Jr.", ["Jones", "Tom Jones"]),      # EM 0; F1 max(0.5, 0.8) = 0.8
        ("Berlin", ["Munich"]),                         # 0, 0
    ])
    assert s["em"] == pytest.approx(100 / 3)
    assert s["f1"] == pytest.approx(100 * 1.8 / 3)


def test_empty_inputs_score_zero():
    assert multirc_scores([]) == {"f1a": 0.0, "em": 0.0}
    assert record_scores([]) == {"em": 0.0, "f1": 0.0}
