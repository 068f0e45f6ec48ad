"""SuperGLUE tasks: the official jsonl fixtures read end to end into model inputs, checked token by
token; predictions -> metrics; bad input as one-line errors with file:line."""
import json
import shutil

import pytest
import torch

from deepprompt.config import TaskConfig
from deepprompt.errors import ConfigError, DataError
from deepprompt.tasks import build_task
from tests.tasks.sentence_tiny import save_sentence_bert
from tests.tiny import FIXTURES

SG = FIXTURES / "superglue"
FOLDERS = {"boolq": "BoolQ", "cb": "CB", "copa": "COPA", "multirc": "MultiRC", "record": "ReCoRD", "rte": "RTE",
           "wic": "WiC", "wsc": "WSC"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(save_sentence_bert(tmp_path_factory.mktemp("sentence_bert")))


def task_for(name, tokenizer, data_dir=None, **kw):
    return build_task(TaskConfig(name=name, data_dir=str(data_dir or SG / FOLDERS[name]), **kw), tokenizer)


def tokens(tokenizer, ids):
    return " ".join(tokenizer.convert_ids_to_tokens(ids))


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_every_fixture_reads_into_features(tokenizer, name):
    task = task_for(name, tokenizer, max_seq_length=128)
    assert task.splits == ("train", "dev")
    for split in task.splits:
        feats = task.features(split)
        assert len(feats) > 0
        for f in feats:
            ids = f["input_ids"] if task.head == "classification" else [i for c in f["input_ids"] for i in c]
            assert tokenizer.unk_token_id not in ids  # the tiny vocabulary covers the fixtures
            assert 0 <= f["labels"] < len(task.labels)


def test_root_directory_finds_the_task_folder(tokenizer):
    assert len(task_for("rte", tokenizer, data_dir=SG).features("dev")) == 4


def test_split_files_point_splits_anywhere_without_a_data_dir(tokenizer, tmp_path):
    """task.<split>_file replaces a split's file (no data_dir needed when every split is set); a
    labelled test_file adds a scored test split; a missing one is a one-line error."""
    rows = (SG / "RTE" / "val.jsonl").read_text().splitlines()
    (tmp_path / "one.jsonl").write_text(rows[0] + "\n")
    (tmp_path / "labelled_test.jsonl").write_text("\n".join(rows[:3]) + "\n")
    task = build_task(TaskConfig(name="rte", train_file=str(SG / "RTE" / "train.jsonl"),
                                 dev_file=str(tmp_path / "one.jsonl"), test_file=str(tmp_path / "labelled_test.jsonl")),
                      tokenizer)
    assert task.splits == ("train", "dev", "test")
    assert [len(task.features(s)) for s in task.splits] == [8, 1, 3]
    assert task_for("rte", tokenizer).splits == ("train", "dev")  # the release's test.jsonl is unlabelled
    with pytest.raises(ConfigError, match=r"^task.dev_file: \S*nowhere.jsonl does not exist$"):
        task_for("rte", tokenizer, dev_file=str(tmp_path / "nowhere.jsonl")).read_examples("dev")


def test_boolq_question_then_passage(tokenizer):
    f = task_for("boolq", tokenizer).features("dev")[0]
    assert tokens(tokenizer, f["input_ids"]) == (
        "[CLS] is water a compound [SEP] water is a chemical compound of hydrogen and oxygen , with the formula "
        "h2o . [SEP]")
    assert f["labels"] == 1  # true


def test_wic_marks_the_target_in_both_sentences(tokenizer):
    feats = task_for("wic", tokenizer).features("dev")
    assert tokens(tokenizer, feats[0]["input_ids"]) == (
        "[CLS] light : the * light * was too bright . [SEP] turn on the * light * in the hall . [SEP]")
    assert feats[0]["token_type_ids"] == [0] * 12 + [1] * 11  # [CLS] light : ... [SEP] | turn ... [SEP]
    # an inflected form is marked where start/end say, not where the lemma is
    train = task_for("wic", tokenizer).features("train")
    assert "sound * carries * well" in tokens(tokenizer, train[1]["input_ids"])
    assert [f["labels"] for f in feats] == [1, 0]


def test_wsc_marks_both_spans(tokenizer):
    feats = task_for("wsc", tokenizer).features("dev")
    assert tokens(tokenizer, feats[0]["input_ids"]) == (
        "[CLS] * the trophy * does not fit into the brown suitcase because # it # is too large . [SEP]")
    assert tokens(tokenizer, feats[1]["input_ids"]) == (
        "[CLS] the trophy does not fit into * the brown suitcase * because # it # is too large . [SEP]")
    train = task_for("wsc", tokenizer).features("train")
    # a multi-word span, and a pronoun right before punctuation: the marker goes inside the comma/period
    assert "of * arthur and celeste * have" in tokens(tokenizer, train[3]["input_ids"])
    assert "fetch # them # . they" in tokens(tokenizer, train[3]["input_ids"])


def test_wsc_index_off_marks_the_nearest_occurrence(tokenizer, tmp_path):
    # "pete" occurs at words 2 and 8; the file says 7 (off by one): the nearest, word 8, is marked
    row = {"text": "Mark told Pete many lies about himself, which Pete included in his book.",
           "target": {"span1_text": "Pete", "span1_index": 7, "span2_text": "his", "span2_index": 11},
           "label": False, "idx": 0}
    (tmp_path / "val.jsonl").write_text(json.dumps(row) + "\n")
    f = task_for("wsc", tokenizer, data_dir=tmp_path).features("dev")[0]
    assert tokens(tokenizer, f["input_ids"]) == (
        "[CLS] mark told pete many lies about himself , which * pete * included in # his # book . [SEP]")


def test_copa_one_pair_per_choice_and_the_question_phrased(tokenizer):
    task = task_for("copa", tokenizer)
    f = task.features("dev")[0]
    assert len(f["input_ids"]) == 2
    assert tokens(tokenizer, f["input_ids"][0]) == (
        "[CLS] the pond froze over for the winter . what was the effect ? [SEP] people skated on the pond . [SEP]")
    assert tokens(tokenizer, f["input_ids"][1]) == (
        "[CLS] the pond froze over for the winter . what was the effect ? [SEP] people brought boats to the pond . "
        "[SEP]")
    assert "what was the cause ?" in tokens(tokenizer, task.features("train")[0]["input_ids"][0])
    batch = task.collate(task.features("dev")[:3])
    widest = max(len(c) for f in task.features("dev")[:3] for c in f["input_ids"])
    assert batch["input_ids"].shape == (3, 2, widest) and batch["labels"].tolist() == [0, 1, 0]
    assert batch["attention_mask"].sum().item() == sum(len(c) for f in task.features("dev")[:3] for c in f["input_ids"])


def test_copa_predictions_and_accuracy(tokenizer):
    task = task_for("copa", tokenizer)
    feats = task.features("dev")[:]  # gold: 0, 1, 0, 0
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    preds = task.predict(logits, feats)
    assert [p["label"] for p in preds] == ["choice1", "choice2", "choice2", "choice1"]
    assert task.metrics(preds[::-1], "dev") == {"acc": 75.0}  # any order: predictions carry their ids


def test_record_one_binary_example_per_candidate(tokenizer):
    task = task_for("record", tokenizer)
    feats = task.features("dev")
    # 2 queries x 4 de-duplicated entities (Berlin, CNN, Max Weber, Munich), sorted by text
    assert len(feats) == 8 and [f["candidate"] for f in feats[:4]] == ["Berlin", "CNN", "Max Weber", "Munich"]
    munich = feats[7]
    assert tokens(tokenizer, munich["input_ids"]) == (
        "[CLS] the munich team lost the game . [SEP] berlin ( cnn ) the berlin team beat the munich team on "
        "saturday . max weber scored twice . - max weber scored twice [SEP]")
    assert [f["labels"] for f in feats] == [0, 0, 1, 0, 0, 0, 0, 1]


def test_record_best_candidate_per_query_scored_against_golds(tokenizer):
    task = task_for("record", tokenizer)
    feats = task.features("dev")[:]
    margin = {0: [0.1, 0.0, 2.0, 0.3],   # query 0: Max Weber (gold) scores best
              1: [1.5, 0.2, 0.1, 0.9]}   # query 1: Berlin beats the gold Munich
    logits = torch.tensor([[0.0, margin[f["id"]][f["sub"]]] for f in feats])
    preds = task.predict(logits, feats)
    assert preds[2]["score"] == pytest.approx(2.0)
    assert task.metrics(preds, "dev") == {"em": 50.0, "f1": 50.0}


def test_multirc_one_example_per_answer_grouped_per_question(tokenizer):
    task = task_for("multirc", tokenizer)
    feats = task.features("dev")[:]
    assert [(f["group"], f["sub"], f["labels"]) for f in feats] == [
        ("0/0", 0, 1), ("0/0", 1, 1), ("0/0", 2, 0), ("0/1", 0, 1), ("0/1", 1, 0)]
    assert tokens(tokenizer, feats[2]["input_ids"]) == (
        "[CLS] what does tom drive to work ? a blue bike [SEP] sent 1 : tom has a red car and a blue bike . "
        "sent 2 : he drives the car to work . [SEP]")
    # predicted 1, 0, 0 | 1, 0: question 0/0 has one option wrong, 0/1 is all right
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    scores = task.metrics(task.predict(logits, feats), "dev")
    # F1a: tp 2, fp 0, fn 1 -> 4/5
    assert scores == {"f1a": pytest.approx(80.0), "em": 50.0}


def test_multirc_em_counts_each_question_of_each_row(tokenizer, tmp_path):
    """Paragraph/question idx need not be unique (a repeated row; train and val pooled by
    task.folds both count paragraphs from 0): em counts every question of every row on its own."""
    row = (SG / "MultiRC" / "val.jsonl").read_text().splitlines()[0]
    (tmp_path / "train.jsonl").write_text(row + "\n")
    (tmp_path / "val.jsonl").write_text(row + "\n" + row + "\n")  # questions 0/0, 0/1, 0/0, 0/1
    task = task_for("multirc", tokenizer, data_dir=tmp_path)
    feats = task.features("dev")[:]
    assert [f["id"] for f in feats] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    wrong = {(3, 1)}  # one option of the last question: 3 of the 4 questions are all right
    logits = torch.tensor([[1.0, 0.0] if (f["labels"] == 0) != ((f["id"], f["sub"]) in wrong) else [0.0, 1.0]
                           for f in feats])
    assert task.metrics(task.predict(logits, feats), "dev")["em"] == 75.0  # grouped by idx it was 50


def _first_row(name):
    return json.loads((SG / FOLDERS[name] / "val.jsonl").read_text().splitlines()[0])


def test_raw_record_row_answers_each_query_with_its_best_candidate(tokenizer):
    task = task_for("record", tokenizer)
    row = _first_row("record")
    for qa in row["qas"]:
        del qa["answers"]  # raw input: no gold
    feats = task.raw_features(row)
    assert [(f["id"], f["sub"]) for f in feats] == [(q, c) for q in range(2) for c in range(4)]
    assert [f["input_ids"] for f in feats] == [f["input_ids"] for f in task.features("dev")]
    margin = {0: [0.1, 0.0, 2.0, 0.3], 1: [1.5, 0.2, 0.1, 0.9]}  # as in the metric test above
    preds = task.predict(torch.tensor([[0.0, margin[f["id"]][f["sub"]]] for f in feats]), feats)
    assert task.raw_prediction(row, preds) == {"answers": ["Max Weber", "Berlin"]}


def test_raw_multirc_row_labels_every_answer_option_per_question(tokenizer):
    task = task_for("multirc", tokenizer)
    feats = task.raw_features(_first_row("multirc"))  # its gold labels are not read
    assert [(f["id"], f["sub"]) for f in feats] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert "labels" not in feats[0]
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert task.raw_prediction({}, task.predict(logits, feats)) == {"answer_labels": [[1, 0, 0], [1, 0]]}


def test_cb_reports_accuracy_and_macro_f1(tokenizer):
    task = task_for("cb", tokenizer)
    feats = task.features("dev")[:]  # gold: entailment, neutral, contradiction
    logits = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # e, c, c
    # e: F1 1; c: tp 1 fp 1 -> 2/3; n: 0  -> macro (1 + 2/3) / 3
    assert task.metrics(task.predict(logits, feats), "dev") == {
        "acc": pytest.approx(200 / 3), "f1": pytest.approx(100 * (1 + 2 / 3) / 3)}
    assert task.main_metric == "acc"


def test_truncation_cuts_the_passage_never_the_question(tokenizer, caplog):
    task = task_for("boolq", tokenizer, max_seq_length=12)
    f = task.features("dev")[0]
    assert tokens(tokenizer, f["input_ids"]) == "[CLS] is water a compound [SEP] water is a chemical compound [SEP]"
    assert f["truncated"] is True
    assert "3 of 3 inputs are longer than task.max_seq_length=12" in caplog.text


def test_truncation_cuts_the_premise_never_the_hypothesis(tokenizer):
    f = task_for("rte", tokenizer, max_seq_length=12).features("dev")[0]
    assert tokens(tokenizer, f["input_ids"]) == "[CLS] the team won [SEP] the team won the match . [SEP]"


def test_a_protected_segment_too_long_falls_back_to_longest_first(tokenizer, tmp_path, caplog):
    row = {"question": "is the eiffel tower taller than the statue of liberty", "passage": "water", "label": True}
    (tmp_path / "train.jsonl").write_text(json.dumps(row) + "\n")
    f = task_for("boolq", tokenizer, data_dir=tmp_path, max_seq_length=8).features("train")[0]
    assert len(f["input_ids"]) == 8 and tokens(tokenizer, f["input_ids"]).endswith("[SEP] water [SEP]")
    says = "boolq/train: 1 input(s) too long even without the segment that is normally cut; those were " \
           "truncated longest-first"
    assert says in caplog.text
    caplog.clear()  # the same split again comes from the feature cache, where encode does not run: said all the same
    again = task_for("boolq", tokenizer, data_dir=tmp_path, max_seq_length=8).features("train")
    assert again.dataset.cache_files and says in caplog.text


def test_test_split_only_when_labelled(tokenizer, tmp_path):
    rte = SG / "RTE"
    assert (rte / "test.jsonl").is_file()  # the official unlabelled test file
    assert task_for("rte", tokenizer).splits == ("train", "dev")
    for f in ("train.jsonl", "val.jsonl"):
        shutil.copy(rte / f, tmp_path / f)
    shutil.copy(rte / "val.jsonl", tmp_path / "test.jsonl")
    task = task_for("rte", tokenizer, data_dir=tmp_path)
    assert task.splits == ("train", "dev", "test") and len(task.features("test")) == 4


def test_raw_input_in_the_official_format(tokenizer):
    task = task_for("rte", tokenizer)
    (feat,) = task.raw_features({"premise": "the team won the match .", "hypothesis": "the team won ."})
    assert tokens(tokenizer, feat["input_ids"]) == "[CLS] the team won the match . [SEP] the team won . [SEP]"
    assert "labels" not in feat
    with pytest.raises(DataError, match=r"^input: missing field 'hypothesis'$"):
        task.raw_features({"premise": "x"})


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


RTE_OK = {"premise": "the team won .", "hypothesis": "the team won .", "label": "entailment", "idx": 0}


@pytest.mark.parametrize("name, rows, message", [
    ("rte", [RTE_OK, RTE_OK, {"premise": "the team won .", "label": "entailment"}],
     r"val\.jsonl:3: missing field 'hypothesis'$"),
    ("rte", [RTE_OK, {**RTE_OK, "label": "contradiction"}],
     r"val\.jsonl:2: unknown label 'contradiction' for task rte \(known: entailment, not_entailment\)$"),
    ("rte", [], r"val\.jsonl: no examples \(empty file\)$"),
    ("rte", [RTE_OK, '{"premise": "the team won .", "hypothesis": '], r"val\.jsonl:2: malformed JSON line"),
    ("rte", ["[1, 2]"], r"val\.jsonl:1: expected a JSON object, got list$"),
    ("rte", [{**RTE_OK, "premise": 3}], r"val\.jsonl:1: field 'premise' must be str, got int"),
    ("boolq", [{"question": "q", "passage": "p", "label": "maybe"}], r"val\.jsonl:1: unknown label 'maybe'"),
    ("copa", [{"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0}],
     r"val\.jsonl:1: field 'question' must be 'cause' or 'effect'"),
    ("copa", [{"premise": "p", "choice1": "a", "choice2": "b", "question": "cause", "label": 2}],
     r"val\.jsonl:1: unknown label 2"),
    ("wsc", [{"text": "the cat sat .", "target": {"span1_text": "dog", "span1_index": 1, "span2_text": "sat",
                                                   "span2_index": 2}, "label": True}],
     r"val\.jsonl:1: target\.span1_text 'dog' does not occur in the text"),
    ("wsc", [{"text": "the cat sat .", "target": {"span1_text": "cat", "span1_index": 1}, "label": True}],
     r"val\.jsonl:1: missing field 'target\.span2_text'$"),
    ("wic", [{"word": "w", "sentence1": "a w", "sentence2": "b w", "start1": 2, "end1": 9, "start2": 2, "end2": 3,
              "label": True}], r"val\.jsonl:1: start1/end1 \(2, 9\) is not a span of sentence1"),
    ("multirc", [{"idx": 0, "passage": {"text": "t", "questions": [
        {"question": "q", "idx": 0, "answers": [{"text": "a", "idx": 0, "label": 1}, {"text": "b", "idx": 1}]}]}}],
     r"val\.jsonl:1: question 0 answer 1: missing field 'label'$"),
    ("record", [{"idx": 0, "passage": {"text": "Tom met Ann .", "entities": [{"start": 0, "end": 2}]},
                 "qas": [{"query": "@placeholder left .", "idx": 0,
                          "answers": [{"start": 8, "end": 10, "text": "Tom"}]}]}],
     r"val\.jsonl:1: query 0 answer 0: answer 'Tom' is not the passage's text at \(8, 10\)$"),
    ("record", [{"idx": 0, "passage": {"text": "Tom met Ann .", "entities": [{"start": 0, "end": 2}]},
                 "qas": [{"query": "Tom left .", "idx": 0, "answers": [{"text": "Tom"}]}]}],
     r"val\.jsonl:1: query 0: the query has no @placeholder$"),
])
def test_bad_input_is_one_line_with_file_and_line(tokenizer, tmp_path, name, rows, message):
    _write(tmp_path / "train.jsonl", [])
    _write(tmp_path / "val.jsonl", rows)
    task = task_for(name, tokenizer, data_dir=tmp_path)
    with pytest.raises(DataError, match=message) as e:
        task.features("dev")
    assert "\n" not in str(e.value)


def test_missing_directory_or_file_names_the_config_key(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match=r"task\.data_dir: task 'rte' needs a data directory"):
        build_task(TaskConfig(name="rte"), tokenizer).features("train")
    with pytest.raises(ConfigError, match=r"task\.data_dir: .* has no val\.jsonl \(the dev split of rte\)"):
        task_for("rte", tokenizer, data_dir=tmp_path).features("dev")


def test_cli_lists_the_sentence_tasks(capsys):
    from deepprompt.__main__ import main
    main(["list", "tasks"])
    listed = capsys.readouterr().out.split()
    assert {"boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "sst2", "mrpc", "qnli"} <= set(listed)
