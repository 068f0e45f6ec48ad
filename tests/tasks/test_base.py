"""The shared task pipeline: records -> batched datasets.map -> cached Arrow features."""
import pytest

from deepprompt.config import TaskConfig
from deepprompt.errors import DataError
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


def test_the_cache_is_keyed_by_how_the_tokenizer_truncates_and_its_special_tokens(tokenizer, tmp_path, monkeypatch):
    """tokenizer_config.json's truncation_side and special tokens are not in the backend's JSON: a
    tokenizer that cuts from the left (or ends with another EOS) read the right-cutting one's cache."""
    import copy

    from deepprompt.tasks.base import _tokenizer_identity
    from tests.tiny import fixture_words

    _write(tmp_path / "train", ["".join(f"{w}\tO\n" for w in fixture_words()[:12]) + "\n"])
    cfg = TaskConfig(name="wnut16", data_dir=str(tmp_path), max_seq_length=8)
    left = copy.deepcopy(tokenizer)
    left.truncation_side = "left"
    monkeypatch.setenv("DEEPPROMPT_CACHE", "")
    fresh = build_task(cfg, left).features("train")[0]["input_ids"]
    monkeypatch.setenv("DEEPPROMPT_CACHE", str(tmp_path / "cache"))
    right = build_task(cfg, tokenizer).features("train")[0]["input_ids"]
    assert right != fresh and build_task(cfg, left).features("train")[0]["input_ids"] == fresh
    other_eos = copy.deepcopy(tokenizer)
    other_eos.eos_token = "[PAD]"
    assert _tokenizer_identity(other_eos) != _tokenizer_identity(tokenizer)


def test_a_cache_directory_blocked_by_a_file_is_one_line(tokenizer, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("mine")
    monkeypatch.setenv("DEEPPROMPT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "train", ["love\tO\n\n"])
    with pytest.raises(DataError, match=r"^\$DEEPPROMPT_CACHE: .*cache/wnut16: is under .*cache, a file, not a "
                                        r"directory to write the feature cache into; give another path$"):
        build_task(TaskConfig(name="wnut16", data_dir=str(data)), tokenizer).features("train")


def test_empty_cache_variable_disables_the_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPPROMPT_CACHE", "")
    _write(tmp_path / "train", ["love\tO\n\n"])
    feats = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path)), tokenizer).features("train")
    assert len(feats) == 1 and feats.dataset.cache_files == []


def test_max_train_examples_and_slicing(tokenizer, tmp_path, caplog):
    _write(tmp_path / "train", [f"w{i}\tO\n\n" for i in range(5)])
    task = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path), max_train_examples=3), tokenizer)
    with caplog.at_level("INFO", logger="deepprompt"):
        feats = task.features("train")
    assert len(feats) == 3 and [f["id"] for f in feats] == [0, 1, 2]
    assert [f["id"] for f in feats[1:]] == [1, 2] and feats[-1]["id"] == 2
    assert "wnut16/train: training on the first 3 of 5 examples (task.max_train_examples)" in caplog.text


def test_max_train_examples_keeps_whole_examples_of_several_features(tokenizer):
    """A question gives several windows: the first N questions are kept with all their windows (it
    cut the first N windows, a question's later windows left out without a word)."""
    from tests.tiny import FIXTURES

    def squad(**kw):
        cfg = TaskConfig(name="squad", data_dir=str(FIXTURES / "squad"), max_seq_length=40, max_query_length=8,
                         doc_stride=4, **kw)
        return build_task(cfg, tokenizer).features("train")

    every = squad()
    first = every[0]["id"]
    windows = [f for f in every if f["id"] == first]
    assert 1 < len(windows) < len(every)
    kept = squad(max_train_examples=1)
    assert [f["id"] for f in kept] == [first] * len(windows)
    assert [f["input_ids"] for f in kept] == [f["input_ids"] for f in windows]


def test_cache_key_covers_the_code_of_base_task_classes(tokenizer, monkeypatch):
    """conll05 encodes through TaggingTask (tagging.py): editing that code must invalidate its cache too."""
    import inspect

    import deepprompt.tasks.tagging as tagging
    from tests.tiny import FIXTURES

    task = build_task(TaskConfig(name="conll05", data_dir=str(FIXTURES / "conll05")), tokenizer)
    before = task.cache_key()
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + "# edited" if obj is tagging else real(obj))
    assert task.cache_key() != before


# ------------------------------------------------------------------ task.<split>_file: one resolver for every task

def _data_dirs():
    from tests.tiny import FIXTURES

    glue, sg = FIXTURES / "glue", FIXTURES / "superglue"
    dirs = {"wnut16": FIXTURES / "wnut16", "conll03": FIXTURES / "conll03", "ontonotes": FIXTURES / "conll2012",
            "conll12": FIXTURES / "conll2012", "conll04": FIXTURES / "conll04", "conll05": FIXTURES / "conll05",
            "custom_tagging": FIXTURES / "custom_tagging", "custom_classification": FIXTURES / "custom_classification",
            "squad": FIXTURES / "squad", "squad_v2": FIXTURES / "squad", "squad_gen": FIXTURES / "squad",
            "generation": FIXTURES / "generation", "tweet_sentiment": FIXTURES / "tweet_sentiment",
            "sst2": glue, "mrpc": glue, "qnli": glue}
    dirs.update({name: sg for name in ("boolq", "cb", "copa", "multirc", "rte", "wic", "wsc", "record")})
    return dirs


def _cfg(name, **kw):
    extra = {"text_column": "sentence"} if name == "custom_classification" else {}
    return TaskConfig(name=name, data_dir=str(_data_dirs()[name]), **extra, **kw)


def test_every_registered_task_has_fixture_data_here():
    from deepprompt.registry import TASKS

    shipped = sorted(n for n, cls in TASKS.items() if cls.__module__.startswith("deepprompt."))  # not test-made ones
    assert shipped == sorted(_data_dirs()), "a new task: add its fixture directory to _data_dirs"


@pytest.mark.parametrize("name", sorted(_data_dirs()))
def test_every_task_reads_a_split_from_task_split_file(tokenizer, name):
    """dev_file = the task's own TRAIN file: its dev split must then be exactly its train records."""
    default = build_task(_cfg(name), tokenizer)
    train_source = default.split_source("train")
    moved = build_task(_cfg(name, dev_file=str(train_source)), tokenizer)
    assert moved.split_source("dev") == train_source
    assert moved.read_examples("dev") == default.read_examples("train")


def test_wnut16_reads_train_file_instead_of_the_data_dir(tokenizer, tmp_path):
    """The reported case: task.train_file next to a data_dir was ignored, and the run trained on data_dir."""
    from tests.tiny import FIXTURES

    (tmp_path / "mine.conll").write_text("paris\tB-geo-loc\n\nlove\tO\n\n")
    task = build_task(TaskConfig(name="wnut16", data_dir=str(FIXTURES / "wnut16"), train_file=str(tmp_path / "mine.conll")),
                      tokenizer)
    assert [r["words"] for r in task.read_examples("train")] == [["paris"], ["love"]]
    # with only ner.txt in data_dir, an explicit file is read whole (never cut 80/10/10)
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "ner.txt").write_text("".join(f"w{i}\tO\n\n" for i in range(20)))
    task = build_task(TaskConfig(name="wnut16", data_dir=str(tmp_path / "release"), dev_file=str(tmp_path / "mine.conll")),
                      tokenizer)
    assert len(task.read_examples("dev")) == 2 and len(task.read_examples("train")) == 16


@pytest.mark.parametrize("name, corpus, own, missing", [
    ("tweet_sentiment", "tweets.csv", ("train.csv", "dev.csv"), "test"),
    ("wnut16", "ner.txt", ("train", "test"), "dev"),
])
def test_a_split_is_never_cut_from_the_corpus_file_next_to_split_files(tokenizer, tmp_path, name, corpus, own, missing):
    """data_dir with train/dev files AND the one-file corpus: the split without a file of its own was
    silently a 10 % slice of the corpus (which the other files may overlap)."""
    from deepprompt.errors import ConfigError

    body = ("sentiment,text\n" + "".join(f"positive,tweet {i}\n" for i in range(30)) if name == "tweet_sentiment"
            else "".join(f"w{i}\tO\n\n" for i in range(30)))
    for f in (corpus, *own):
        (tmp_path / f).write_text(body)
    task = build_task(TaskConfig(name=name, data_dir=str(tmp_path)), tokenizer)
    with pytest.raises(ConfigError, match=rf"^task.data_dir: {tmp_path} has {own[0]} but no {missing} file \(looked "
                                          rf"for .*\); the {missing} split would be cut from {corpus}, the whole corpus"):
        task.read_examples(missing)
    assert len(task.read_examples("train")) == 30  # the splits that have their own files read as before


def test_a_split_file_that_is_missing_or_a_directory_is_one_line(tokenizer, tmp_path):
    from deepprompt.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^task.train_file: .*nope.jsonl does not exist$"):
        build_task(_cfg("rte", train_file=str(tmp_path / "nope.jsonl")), tokenizer).read_examples("train")
    with pytest.raises(ConfigError, match=r"^task.dev_file: .* is a directory; task sst2 reads a file$"):
        build_task(_cfg("sst2", dev_file=str(tmp_path)), tokenizer).read_examples("dev")


def test_a_task_whose_reader_never_asks_for_the_split_file_is_refused(tokenizer, tmp_path):
    """The guard: a (future) task that forgets Task.split_source fails in one line, never trains on data_dir."""
    from deepprompt.errors import ConfigError
    from deepprompt.tasks.ner import Wnut16, read_conll

    class Forgetful(Wnut16):
        def read_split(self, split):
            return read_conll(self.data_dir() / split)

    (tmp_path / "mine").write_text("love\tO\n\n")
    from tests.tiny import FIXTURES
    cfg = TaskConfig(name="wnut16", data_dir=str(FIXTURES / "wnut16"), train_file=str(tmp_path / "mine"))
    with pytest.raises(ConfigError, match=r"^task.train_file: task wnut16 cannot read its train split from a file"):
        Forgetful(cfg, tokenizer).build_features("train")
    assert len(Wnut16(cfg, tokenizer).build_features("train")) == 1


# ------------------------------------------------------------------ text encoding, for every task's reader

def _copy_with_train_file(tokenizer, name, tmp_path):
    """(config, the train file) of ``name`` on a copy of its fixture data (a directory source: its first file)."""
    import shutil

    src = _data_dirs()[name]
    shutil.copytree(src, tmp_path / "data")
    cfg = _cfg(name)
    cfg.data_dir = str(tmp_path / "data")
    path = build_task(cfg, tokenizer).split_source("train")
    if path.is_dir():
        path = sorted(p for p in path.rglob("*") if p.is_file())[0]
    return cfg, path


@pytest.mark.parametrize("name", sorted(_data_dirs()))
def test_every_reader_names_file_and_line_of_a_byte_that_is_not_utf8(tokenizer, name, tmp_path):
    from deepprompt.errors import DataError

    cfg, path = _copy_with_train_file(tokenizer, name, tmp_path)
    lines = path.read_bytes().split(b"\n")
    bad = 1 if len(lines) > 2 else 0  # the second line (a one-line JSON file: the first)
    lines[bad] = b"caf\xe9" + lines[bad]  # Latin-1, as a spreadsheet might save it
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError) as e:
        build_task(cfg, tokenizer).read_examples("train")
    msg = str(e.value)
    assert msg.startswith(f"{path}:{bad + 1}: not UTF-8 text (byte 0xe9 at byte offset ") and \
        msg.endswith("save it as UTF-8")


@pytest.mark.parametrize("name", sorted(_data_dirs()))
def test_every_reader_accepts_a_byte_order_mark(tokenizer, name, tmp_path):
    cfg, path = _copy_with_train_file(tokenizer, name, tmp_path)
    before = build_task(cfg, tokenizer).read_examples("train")
    data = path.read_bytes()
    path.write_bytes(data if data.startswith(b"\xef\xbb\xbf") else b"\xef\xbb\xbf" + data)
    assert build_task(cfg, tokenizer).read_examples("train") == before
