"""GLUE ablation tasks from the official tsv layout: header-named columns, unlabelled test files,
metrics, and bad rows as one-line errors with file:line."""
import logging
import shutil

import pytest
import torch

from deepprompt.config import TaskConfig
from deepprompt.errors import DataError
from deepprompt.tasks import build_task
from tests.tasks.sentence_tiny import save_sentence_bert
from tests.tiny import FIXTURES

GLUE = FIXTURES / "glue"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(save_sentence_bert(tmp_path_factory.mktemp("sentence_bert")))


def task_for(name, tokenizer, data_dir, **kw):
    return build_task(TaskConfig(name=name, data_dir=str(data_dir), **kw), tokenizer)


def tokens(tokenizer, ids):
    return " ".join(tokenizer.convert_ids_to_tokens(ids))


def test_sst2_single_sentence_and_unlabelled_test(tokenizer):
    task = task_for("sst2", tokenizer, GLUE / "SST-2")
    assert (GLUE / "SST-2" / "test.tsv").is_file() and task.splits == ("train", "dev")
    feats = task.features("train")
    assert len(feats) == 6 and [f["labels"] for f in feats] == [0, 0, 1, 0, 0, 1]
    assert tokens(tokenizer, feats[1]["input_ids"]) == "[CLS] contains no wit , only labored gags [SEP]"
    # accents stripped by the uncased tokenizer; bare quotes kept (no csv quote processing)
    assert "cliches" in tokens(tokenizer, feats[4]["input_ids"])
    assert "` right - thinking '" in tokens(tokenizer, feats[5]["input_ids"])


def test_mrpc_reads_the_bom_header_and_scores_f1_and_accuracy(tokenizer):
    task = task_for("mrpc", tokenizer, GLUE / "MRPC", max_seq_length=128)
    feats = task.features("dev")[:]  # gold 1, 0, 1
    assert [f["labels"] for f in feats] == [1, 0, 1]
    first = tokens(tokenizer, feats[0]["input_ids"])
    assert first.startswith("[CLS] he said the foodservice pie business") and "[SEP] \" the foodservice" in first
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # 1, 1, 0: tp 1, fp 1, fn 1
    assert task.metrics(task.predict(logits, feats), "dev") == {"acc": pytest.approx(100 / 3), "f1": 50.0}
    assert task.main_metric == "f1"


def test_qnli_truncates_the_sentence_never_the_question(tokenizer):
    task = task_for("qnli", tokenizer, GLUE / "QNLI", max_seq_length=18)
    f = task.features("dev")[1]
    assert tokens(tokenizer, f["input_ids"]) == (
        "[CLS] what is the first major city in the stream of the rhine ? [SEP] the most [SEP]")
    assert task.labels == ["entailment", "not_entailment"] and f["labels"] == 1


def test_labelled_test_file_adds_the_test_split(tokenizer, tmp_path):
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(GLUE / "QNLI" / name, tmp_path / name)
    shutil.copy(GLUE / "QNLI" / "dev.tsv", tmp_path / "test.tsv")
    task = task_for("qnli", tokenizer, tmp_path)
    assert task.splits == ("train", "dev", "test") and len(task.features("test")) == 2


def test_a_test_file_that_cannot_be_read_is_said_not_skipped_silently(tokenizer, tmp_path, caplog):
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(GLUE / "QNLI" / name, tmp_path / name)
    rows = (GLUE / "QNLI" / "dev.tsv").read_text().splitlines()
    (tmp_path / "test.tsv").write_text(rows[0] + "\n" + rows[1] + "\textra\n")  # labelled, but a cell too many
    with caplog.at_level(logging.WARNING, logger="deepprompt"):
        assert task_for("qnli", tokenizer, tmp_path).splits == ("train", "dev")
    assert "qnli: no test split: the test file cannot be read (" in caplog.text
    assert "test.tsv:2: expected 4 tab-separated fields" in caplog.text


@pytest.mark.parametrize("name, content, message", [
    ("sst2", "sentence\tlabel\ngood film\t1\nbad film\n",
     r"dev\.tsv:3: expected 2 tab-separated fields \(sentence, label\), got 1$"),
    ("sst2", "sentence\tlabel\ngood film\t2\n", r"dev\.tsv:2: unknown label '2' for task sst2 \(known: 0, 1\)$"),
    ("sst2", "", r"dev\.tsv: no examples \(empty file\)$"),
    ("sst2", "sentence\tlabel\n", r"dev\.tsv: no examples$"),
    ("qnli", "index\tquestion\tlabel\n0\twhat ?\tentailment\n", r"dev\.tsv:2: missing field 'sentence'$"),
    # a row read into a dict keeps the last of two same-named cells: the first would vanish unsaid
    ("sst2", "sentence\tsentence\tlabel\ngood\tfilm\t1\n", r"dev\.tsv:1: column 'sentence' appears twice in the header$"),
])
def test_bad_rows_are_one_line_with_file_and_line(tokenizer, tmp_path, name, content, message):
    (tmp_path / "train.tsv").write_text("")
    (tmp_path / "dev.tsv").write_text(content)
    with pytest.raises(DataError, match=message) as e:
        task_for(name, tokenizer, tmp_path).features("dev")
    assert "\n" not in str(e.value)
