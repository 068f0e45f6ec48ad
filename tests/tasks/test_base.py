"""The shared task pipeline: records -> batched datasets.map -> cached Arrow features."""
import pytest

from deepprompt.config import TaskConfig
from deepprompt.tasks import build_task
from deepprompt.tasks.base import FeatureSet
from tests.tiny import save_tiny_bert


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(save_tiny_bert(tmp_path_factory.mktemp("bert")))


def _write(path, lines):
    path.write_text("".join(lines))


def test_features_are_cached_and_invalidated_by_data_and_config(tokenizer, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEEPPROMPT_CACHE", str(cache))
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "train", ["love\tO\nparis\tB-geo-loc\n\n", "john\tB-person\n\n"])
    cfg = TaskConfig(name="wnut16", data_dir=str(data))

    first = build_task(cfg, tokenizer).features("train")
    assert isinstance(first, FeatureSet) and len(first) == 2
    files = sorted((cache / "wnut16").glob("train-*.arrow"))
    assert len(files) == 1
    again = build_task(cfg, tokenizer).features("train")
    assert again[:] == first[:] and again.dataset.cache_files[0]["filename"] == str(files[0])

    _write(data / "train", ["love\tO\nparis\tO\n\n", "john\tB-person\n\n"])  # a changed label
    changed = build_task(cfg, tokenizer).features("train")
    assert changed[0]["gold"] == ["O", "O"]
    shorter = build_task(TaskConfig(name="wnut16", data_dir=str(data), max_seq_length=8), tokenizer)
    shorter.features("train")
    assert len(list((cache / "wnut16").glob("train-*.arrow"))) == 3


def test_empty_cache_variable_disables_the_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPPROMPT_CACHE", "")
    _write(tmp_path / "train", ["love\tO\n\n"])
    feats = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path)), tokenizer).features("train")
    assert len(feats) == 1 and feats.dataset.cache_files == []


def test_max_train_examples_and_slicing(tokenizer, tmp_path):
    _write(tmp_path / "train", [f"w{i}\tO\n\n" for i in range(5)])
    task = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path), max_train_examples=3), tokenizer)
    feats = task.features("train")
    assert len(feats) == 3 and [f["id"] for f in feats] == [0, 1, 2]
    assert [f["id"] for f in feats[1:]] == [1, 2] and feats[-1]["id"] == 2


def test_cache_key_covers_the_code_of_base_task_classes(tokenizer, monkeypatch):
    """conll05 encodes through TaggingTask (ner.py): editing that code must invalidate its cache too."""
    import inspect

    import deepprompt.tasks.ner as ner
    from tests.tiny import FIXTURES

    task = build_task(TaskConfig(name="conll05", data_dir=str(FIXTURES / "conll05")), tokenizer)
    before = task.cache_key()
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + "# edited" if obj is ner else real(obj))
    assert task.cache_key() != before
