
import pytest

from deepprompt.config import TaskConfig
from deepprompt.errors import DataError
from deepprompt.tasks import build_task
from deepprompt.tasks.base import PAD_LABEL
from deepprompt.tasks.ner import iob1_to_iob2, read_conll
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
