
import pytest

from deepprompt.config import TaskConfig
from deepprompt.errors import DataError
from deepprompt.tasks import build_task
from deepprompt.tasks.base import PAD_LABEL
from deepprompt.tasks.readers import iob1_to_iob2, read_conll
from tests.tiny import FIXTURES, save_tiny_bert


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(save_tiny_bert(tmp_path_factory.mktemp("bert")))


def test_reads_official_wnut_layout():
    sents = read_conll(FIXTURES / "wnut16" / "train")
    assert len(sents) == 40
    assert all(len(s.words) == len(s.tags) for s in sents)
    assert sents[0].where.endswith("train:1")


def test_labels_go_on_first_subword_only(tokenizer, tmp_path):
    (tmp_path / "train").write_text("johns\tB-person\nlove\tO\nparis\tB-geo-loc\n\n")
    task = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path)), tokenizer)
    feat = task.features("train")[0]
    tokens = tokenizer.convert_ids_to_tokens(feat["input_ids"])
    assert tokens == ["[CLS]", "john", "##s", "love", "paris", "[SEP]"]
    lab = {l: i for i, l in enumerate(task.labels)}
    assert feat["labels"] == [PAD_LABEL, lab["B-person"], PAD_LABEL, lab["O"], lab["B-geo-loc"], PAD_LABEL]


def test_truncated_words_are_predicted_o_not_dropped(tokenizer, tmp_path, caplog):
    words = ["love"] * 20 + ["paris"]
    (tmp_path / "dev").write_text("".join(f"{w}\t{'B-geo-loc' if w == 'paris' else 'O'}\n" for w in words))
    task = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path), max_seq_length=10), tokenizer)
    feats = task.features("dev")
    assert "beyond max_seq_length" in caplog.text
    import torch
    logits = torch.zeros(1, len(feats[0]["input_ids"]), len(task.labels))
    pred = task.predict(logits, feats)[0]["tags"]
    assert len(pred) == 21  # every gold word still has a prediction
    assert task.metrics([{"id": 0, "tags": pred}], "dev")["recall"] == 0.0


def test_single_file_release_is_split_deterministically(tokenizer, tmp_path):
    text = (FIXTURES / "wnut16" / "train").read_text()
    (tmp_path / "ner.txt").write_text(text)
    task = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path)), tokenizer)
    sizes = [len(task.read_split(s)) for s in ("train", "dev", "test")]
    assert sizes == [32, 4, 4]
    again = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path)), tokenizer)
    assert [s.where for s in again.read_split("dev")] == [s.where for s in task.read_split("dev")]
    ids = {s.where for split in ("train", "dev", "test") for s in task.read_split(split)}
    assert len(ids) == 40  # a partition: nothing lost, nothing shared


@pytest.mark.parametrize("content, message", [
    ("love\tO\nparis\n", r"train:2: expected a word and a tag"),
    ("love\tO\nparis\tB-city\n", r"train:2: unknown label 'B-city'"),
    ("", r"train: no sentences"),
])
def test_bad_input_is_one_line_with_file_and_line(tokenizer, tmp_path, content, message):
    (tmp_path / "train").write_text(content)
    task = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path)), tokenizer)
    with pytest.raises(DataError, match=message) as e:
        task.features("train")
    assert "\n" not in str(e.value)


def test_iob1_is_normalised_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]


# ------------------------------------------------------------------ CoNLL-2003, OntoNotes, CoNLL04

import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402

import torch  # noqa: E402

from deepprompt.errors import ConfigError  # noqa: E402
from tests.tasks.word_tokenizer import bert_tokenizer  # noqa: E402

WORDS = (". , anna berg visit oslo on monday the acme corp board met in bergen eva moss bought 300 new york "
         "carl lund left friday").split()


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory):
    # "visited" -> visit ##ed and "shares" -> share ##s: real sub-word splits to align against
    return bert_tokenizer(tmp_path_factory.mktemp("tok"), WORDS + ["share"])


def _labels_by_token(task, feat, tokenizer):
    """[(token, tag or None)] with the tag of each labelled position."""
    toks = tokenizer.convert_ids_to_tokens(feat["input_ids"])
    return [(t, None if l == PAD_LABEL else task.labels[l]) for t, l in zip(toks, feat["labels"])]


def test_conll03_official_files_iob1_to_iob2_and_first_subword_labels(word_tok):
    task = build_task(TaskConfig(name="conll03", data_dir=str(FIXTURES / "conll03")), word_tok)
    train = task.features("train")
    assert [len(task.features(s)) for s in ("train", "dev", "test")] == [4, 2, 2]  # -DOCSTART- lines skipped
    # the official IOB1: I- opens an entity, B- only between two adjacent entities of one type
    assert train[2]["gold"] == ["B-MISC", "O", "B-MISC", "O", "O", "B-PER", "I-PER", "B-PER", "I-PER", "O"]
    assert _labels_by_token(task, train[0], word_tok) == [
        ("[CLS]", None), ("anna", "B-PER"), ("berg", "I-PER"), ("visit", "O"), ("##ed", None), ("oslo", "B-LOC"),
        ("on", "O"), ("monday", "O"), (".", "O"), ("[SEP]", None)]
    assert train[0]["input_ids"][4] != word_tok.unk_token_id  # ##ed is a real piece, not [UNK]


def test_conll03_renamed_files(word_tok, tmp_path):
    for src, dst in (("eng.train", "train.txt"), ("eng.testa", "valid.txt"), ("eng.testb", "test.txt")):
        shutil.copy(FIXTURES / "conll03" / src, tmp_path / dst)
    task = build_task(TaskConfig(name="conll03", data_dir=str(tmp_path)), word_tok)
    assert [len(task.features(s)) for s in ("train", "dev", "test")] == [4, 2, 2]


def test_conll03_missing_split_names_what_was_looked_for(word_tok, tmp_path):
    shutil.copy(FIXTURES / "conll03" / "eng.train", tmp_path / "eng.train")
    task = build_task(TaskConfig(name="conll03", data_dir=str(tmp_path)), word_tok)
    with pytest.raises(ConfigError, match="has no dev file .looked for eng.testa, valid.txt"):
        task.features("dev")


@pytest.mark.parametrize("content, message", [
    ("-DOCSTART- -X- -X- O\n\nAnna NNP I-NP I-PER\nBerg NNP I-PER\n", r"eng.train:4: expected 4 columns"),
    ("Anna NNP I-NP I-PER\nBerg NNP I-NP I-PERSON\n", r"eng.train:2: unknown label 'B-PERSON'"),
    ("-DOCSTART- -X- -X- O\n\n", r"eng.train: no sentences"),
    # an extra column moves the tag: column 3 would be 'O' although the line's NER tag is B-PER
    ("Anna NNP I-NP B-PER\nBerg NNP I-NP O I-PER\n", r"eng.train:2: 5 columns, but the sentence started on line 1 with 4"),
])
def test_conll03_bad_input(word_tok, tmp_path, content, message):
    (tmp_path / "eng.train").write_text(content)
    task = build_task(TaskConfig(name="conll03", data_dir=str(tmp_path)), word_tok)
    with pytest.raises(DataError, match=message) as e:
        task.features("train")
    assert "\n" not in str(e.value)


def test_ontonotes_gold_conll_brackets_to_bio(word_tok):
    task = build_task(TaskConfig(name="ontonotes", data_dir=str(FIXTURES / "conll2012")), word_tok)
    assert len(task.labels) == 1 + 2 * 18
    train = task.features("train")
    assert [len(task.features(s)) for s in ("train", "dev", "test")] == [4, 2, 1]
    assert train[0]["gold"] == ["B-PERSON", "I-PERSON", "O", "B-GPE", "O", "B-DATE", "O"]
    assert _labels_by_token(task, train[3], word_tok) == [
        ("[CLS]", None), ("eva", "B-PERSON"), ("moss", "I-PERSON"), ("bought", "O"), ("300", "B-CARDINAL"),
        ("share", "O"), ("##s", None), ("in", "O"), ("new", "B-GPE"), ("york", "I-GPE"), (".", "O"), ("[SEP]", None)]


def test_ontonotes_skips_other_languages_with_a_count(word_tok, tmp_path, caplog):
    shutil.copytree(FIXTURES / "conll2012", tmp_path / "data")
    zh = tmp_path / "data" / "train" / "data" / "chinese" / "annotations" / "nw" / "x" / "00"
    zh.mkdir(parents=True)
    (zh / "x_0001.v4_gold_conll").write_text("#begin document (x); part 000\n#end document\n")
    task = build_task(TaskConfig(name="ontonotes", data_dir=str(tmp_path / "data")), word_tok)
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        assert len(task.features("train")) == 4
    assert "skipping 1 Arabic/Chinese" in caplog.text


@pytest.mark.parametrize("ne, message", [
    (["(PERSON*", "*", "*"], r":4: span \(PERSON is never closed"),
    (["(PERSON*", "(GPE*", "*)"], r":5: span \(GPE opens inside the span \(PERSON"),
    (["*", "*)", "*"], r":5: '\)' closes a span that was never opened"),
    (["(PERSON*", "*))", "*"], r":5: malformed bracket cell '\*\)\)'"),
])
def test_ontonotes_bad_brackets_name_the_line(word_tok, tmp_path, ne, message):
    doc = tmp_path / "train" / "a_0001.v4_gold_conll"
    doc.parent.mkdir(parents=True)
    rows = [f"a/0001 0 {i} {w} NNP * - - - - {n} -" for i, (w, n) in enumerate(zip(["Anna", "Berg", "."], ne))]
    doc.write_text("#begin document (a/0001); part 000\n\n\n" + "\n".join(rows) + "\n\n#end document\n")
    task = build_task(TaskConfig(name="ontonotes", data_dir=str(tmp_path)), word_tok)
    with pytest.raises(DataError, match=f"a_0001.v4_gold_conll{message}") as e:
        task.features("train")
    assert "\n" not in str(e.value)


def test_ontonotes_short_line_and_layout_errors(word_tok, tmp_path):
    doc = tmp_path / "train" / "a_0001.v4_gold_conll"
    doc.parent.mkdir(parents=True)
    doc.write_text("#begin document (a); part 000\na 0 0 Anna NNP * - - - - *\n#end document\n")
    task = build_task(TaskConfig(name="ontonotes", data_dir=str(tmp_path)), word_tok)
    with pytest.raises(DataError, match=r"a_0001.v4_gold_conll:2: expected at least 12 columns"):
        task.features("train")
    with pytest.raises(ConfigError, match="has no development or dev directory"):
        task.features("dev")
    doc.write_text("#begin document (a); part 000\n#end document\n")
    with pytest.raises(DataError, match=r"a_0001.v4_gold_conll: no sentences"):
        build_task(TaskConfig(name="ontonotes", data_dir=str(tmp_path)), word_tok).features("train")


def test_conll04_json_spans_to_bio(word_tok):
    task = build_task(TaskConfig(name="conll04", data_dir=str(FIXTURES / "conll04")), word_tok)
    train = task.features("train")
    assert [len(task.features(s)) for s in ("train", "dev", "test")] == [3, 1, 2]
    # "end" is exclusive: Org [6, 9) = "the Oslo Times"
    assert train[0]["gold"] == ["B-Peop", "I-Peop", "O", "O", "O", "O", "B-Org", "I-Org", "I-Org", "O", "O", "O",
                                "B-Loc", "O"]
    assert train[2]["gold"] == ["O", "B-Other", "I-Other", "O", "O", "B-Peop", "I-Peop", "O"]


@pytest.mark.parametrize("doc, message", [
    ({"tokens": ["Anna"], "entities": [{"type": "Person", "start": 0, "end": 1}]},
     r"conll04_train.json: example 1 \(orig_id 7\): unknown entity type 'Person'"),
    ({"tokens": ["Anna"]}, r"example 1 \(orig_id 7\): missing field 'entities'"),
    ({"tokens": ["Anna"], "entities": [{"type": "Peop", "start": 0, "end": 2}]},
     r"span \[0, 2\) is outside the 1 tokens"),
    # wrong JSON types: each was a TypeError traceback, or (a bool) read as 0/1
    ({"tokens": ["Anna"], "entities": None}, r"example 1 \(orig_id 7\): field 'entities' must be list, got NoneType"),
    ({"tokens": "Anna", "entities": []}, r"example 1 \(orig_id 7\): field 'tokens' must be list, got str"),
    ({"tokens": ["Anna", "Berg"], "entities": [{"type": "Peop", "start": False, "end": 1}]},
     r"example 1 \(orig_id 7\): entity 'Peop': field 'start' must be int, got bool False"),
])
def test_conll04_bad_examples(word_tok, tmp_path, doc, message):
    ok = {"tokens": ["Oslo"], "entities": [{"type": "Loc", "start": 0, "end": 1}]}
    (tmp_path / "conll04_train.json").write_text(json.dumps([ok, {**doc, "orig_id": 7}]))
    task = build_task(TaskConfig(name="conll04", data_dir=str(tmp_path)), word_tok)
    with pytest.raises(DataError, match=message):
        task.features("train")


def test_conll04_empty_and_broken_files(word_tok, tmp_path):
    (tmp_path / "conll04_train.json").write_text("")
    task = build_task(TaskConfig(name="conll04", data_dir=str(tmp_path)), word_tok)
    with pytest.raises(DataError, match="conll04_train.json: no examples"):
        task.features("train")
    (tmp_path / "conll04_train.json").write_text('[\n{"tokens": ["a"],\n')
    with pytest.raises(DataError, match=r"conll04_train.json:3: not valid JSON"):
        build_task(TaskConfig(name="conll04", data_dir=str(tmp_path)), word_tok).features("train")
    (tmp_path / "conll04_train.json").write_text("[" * 100_000)  # json.loads: RecursionError
    with pytest.raises(DataError, match=r"conll04_train.json: not valid JSON \(arrays/objects nested too deeply"):
        build_task(TaskConfig(name="conll04", data_dir=str(tmp_path)), word_tok).features("train")


def test_tagging_metric_through_predict(word_tok):
    """Logits that pick the gold label of every first sub-word score 100; shifting one entity's type
    loses exactly that entity (hand count on the conll03 test split: 5 gold entities)."""
    task = build_task(TaskConfig(name="conll03", data_dir=str(FIXTURES / "conll03")), word_tok)
    feats = task.features("test")[:]
    width = max(len(f["input_ids"]) for f in feats)
    logits = torch.zeros(len(feats), width, len(task.labels))
    for b, f in enumerate(feats):
        for pos, lab in enumerate(f["labels"]):
            logits[b, pos, max(lab, 0)] = 1.0
    assert task.metrics(task.predict(logits, feats), "test")["f1"] == pytest.approx(100.0)
    lab = {l: i for i, l in enumerate(task.labels)}
    pos = feats[0]["word_ids"].index(3)  # "Acme" B-ORG -> B-LOC
    logits[0, pos] = 0
    logits[0, pos, lab["B-LOC"]] = 1.0
    m = task.metrics(task.predict(logits, feats), "test")
    assert (m["precision"], m["recall"]) == pytest.approx((80.0, 80.0))
