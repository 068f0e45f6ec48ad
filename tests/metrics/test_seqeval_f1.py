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


def test_iob1_gold_scores_like_its_iob2_conversion():
    from deepprompt.tasks.readers import iob1_to_iob2
    iob1 = [["I-PER", "I-PER", "B-PER", "O", "I-LOC"]]
    iob2 = [["B-PER", "I-PER", "B-PER", "O", "B-LOC"]]
    assert [iob1_to_iob2(iob1[0])] == iob2
    pred = [["B-PER", "I-PER", "O", "O", "B-LOC"]]
    # gold: PER(0-1), PER(2), LOC(4) = 3 entities; predicted PER(0-1), LOC(4), both right:
    # P = 2/2, R = 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = 0.8
    for gold in (iob1, iob2):
        m = entity_f1(gold, pred)
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((100.0, 200 / 3, 80.0))


def test_orphan_inside_tag_counts_by_default_but_not_in_strict_mode():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]
    # conlleval chunking: I-PER after O starts PER(0-1): both entities right
    assert entity_f1(gold, pred)["f1"] == pytest.approx(100.0)
    # strict IOB2: the I-PER run is no entity; only LOC predicted: P = 1, R = 1/2, F1 = 2/3
    m = entity_f1(gold, pred, mode="strict")
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((100.0, 50.0, 200 / 3))


def test_types_with_hyphens_are_kept_whole():
    # SRL roles: B-ARGM-TMP is type ARGM-TMP; a predicted ARGM-LOC over the same words is wrong
    gold = [["B-ARGM-TMP", "I-ARGM-TMP", "B-C-ARG1"]]
    pred = [["B-ARGM-LOC", "I-ARGM-LOC", "B-C-ARG1"]]
    m = entity_f1(gold, pred)
    assert (m["precision"], m["recall"]) == pytest.approx((50.0, 50.0))


def test_bioes_scores_as_its_entities_in_both_modes():
    """Gold: Anna Berg (B-PER E-PER) and Oslo (S-LOC). The prediction finds Anna Berg, misses Oslo
    and tags a one-word ORG: 1 of 2 predicted right, 1 of 2 gold found: P = R = F1 = 50."""
    gold = [["B-PER", "E-PER", "O", "S-LOC"]]
    pred = [["B-PER", "E-PER", "S-ORG", "O"]]
    for mode in (None, "strict"):
        m = entity_f1(gold, pred, mode=mode)
        assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((50.0, 50.0, 50.0)), mode
    assert entity_f1(gold, gold, mode="strict")["f1"] == pytest.approx(100.0)
