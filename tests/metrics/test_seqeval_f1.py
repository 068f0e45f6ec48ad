import pytest

from deepprompt.metrics.seqeval_f1 import entity_f1


def test_entity_f1_matches_hand_count():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # gold entities: PER(0-1), LOC(3), ORG(0) = 3; predicted: PER, ORG, LOC(1) = 3; correct: PER, ORG = 2
    m = entity_f1(gold, pred)
    assert m["precision"] == pytest.approx(200 / 3)
    assert m["recall"] == pytest.approx(200 / 3)
    assert m["f1"] == pytest.approx(200 / 3)


def test_partial_span_is_wrong():
    m = entity_f1([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert m["f1"] == 0.0
