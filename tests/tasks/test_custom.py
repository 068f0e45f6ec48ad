"""Custom tasks without code: classification from JSONL/CSV/TSV, tagging from CoNLL columns."""
import logging

import pytest
import torch

from deepprompt.config import TaskConfig, load_config
from deepprompt.errors import ConfigError, DataError
from deepprompt.tasks import build_task
from deepprompt.tasks.base import PAD_LABEL
from tests.tasks.word_tokenizer import bert_tokenizer
from tests.tiny import FIXTURES

CLS = FIXTURES / "custom_classification"
TAG = FIXTURES / "custom_tagging"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    words = "great movie , loved it boring and far too long a fine cast the plot makes no sense acme anna berg"
    return bert_tokenizer(tmp_path_factory.mktemp("tok"), words.split() + ["hire"], pieces=("##d",))


def _cls(**kw):
    return TaskConfig(name="custom_classification", data_dir=str(CLS), text_column="sentence", **kw)


def test_classification_from_jsonl_and_csv(tok):
    task = build_task(_cls(), tok)
    assert task.head == "classification" and task.main_metric == "accuracy"
    assert task.labels == ["negative", "positive"]  # from the training split, sorted
    train = task.features("train")
    assert len(train) == 4 and [f["labels"] for f in train] == [1, 0, 1, 0]
    assert tok.convert_ids_to_tokens(train[0]["input_ids"]) == ["[CLS]", "great", "movie", ",", "loved", "it", "[SEP]"]
    test = task.features("test")  # test.csv: a header row, quoted cells with commas
    assert [f["gold"] for f in test] == ["positive", "negative"]
    assert task.collate(train[:2])["labels"].tolist() == [1, 0]


def test_fixed_label_order_and_text_pairs(tok, tmp_path):
    (tmp_path / "train.tsv").write_text("premise\thypothesis\ty\nacme hired anna\tanna hired\tyes\nthe plot\tno\tno\n")
    for split in ("dev", "test"):
        (tmp_path / f"{split}.tsv").write_text("premise\thypothesis\ty\nacme\tberg\tno\n")
    cfg = TaskConfig(name="custom_classification", data_dir=str(tmp_path), text_column="premise",
                     text_pair_column="hypothesis", label_column="y", labels=["yes", "no"])
    task = build_task(cfg, tok)
    feat = task.features("train")[0]
    assert task.labels == ["yes", "no"] and feat["labels"] == 0
    assert tok.convert_ids_to_tokens(feat["input_ids"]) == ["[CLS]", "acme", "hire", "##d", "anna", "[SEP]", "anna",
                                                            "hire", "##d", "[SEP]"]
    assert feat["token_type_ids"] == [0] * 6 + [1] * 4


def test_explicit_files_from_a_run_config(tok, tmp_path):
    run = load_config(None, ["task.name=custom_classification", f"task.train_file={CLS / 'train.jsonl'}",
                             f"task.dev_file={CLS / 'dev.jsonl'}", f"task.test_file={CLS / 'test.csv'}",
                             "task.text_column=sentence"])
    task = build_task(run.task, tok)
    assert [len(task.features(s)) for s in ("train", "dev", "test")] == [4, 2, 2]


@pytest.mark.parametrize("name, content, message", [
    ("train.jsonl", '{"sentence": "a", "label": "x"}\n\n{"sentence": "b"}\n', r"train.jsonl:3: missing field 'label'"),
    ("train.jsonl", '{"sentence": "a", "label": "x"}\n{"sentence": "b", label: 1}\n', r"train.jsonl:2: malformed JSON line"),
    ("train.jsonl", '{"sentence": "", "label": "x"}\n', r"train.jsonl:1: missing field 'sentence'"),
    ("train.csv", "sentence,y\na,b\n", r"train.csv:1: missing field 'label' \(columns: sentence, y\)"),
    ("train.csv", "sentence,label\na,b\nc,\n", r"train.csv:3: missing field 'label'"),
    ("train.csv", 'sentence,label\n"a\nb",x\nc,y,z\n', r"train.csv:4: more cells than the 2 header columns"),
    ("train.jsonl", "", r"train.jsonl: no examples"),
    # blank lines are skipped but still counted: the line named is the row's own
    ("train.csv", "sentence,label\na,x\n\nb,\n", r"train.csv:4: missing field 'label'"),
    ("train.tsv", "sentence\tlabel\n\n\na\tx\ty\n", r"train.tsv:4: more cells than the 2 header columns"),
    ("train.csv", "sentence,label,sentence\na,x,b\n", r"train.csv:1: column 'sentence' appears twice in the header"),
    # a stray quote: lenient csv read on to the next quote, two rows silently joined into one cell
    ("train.csv", 'sentence,label\n"oops,x\nsecond" row,y\nlast,x\n',
     r"train.csv:2: not valid CSV \(',' expected after '\"' on line 3; a cell that starts with a quote"),
    ("train.tsv", 'sentence\tlabel\na\tx\n"never closed\ty\n', r"train.tsv:3: not valid CSV \(unexpected end of data"),
    ("train.json", "[" * 100_000, r"train.json: not valid JSON \(arrays/objects nested too deeply to read\)"),
    ("train.json", '[{"sentence": "a", "label": NaN}]', r"train.json: not valid JSON \(\[0\].label is nan, not a finite number"),
])
def test_classification_bad_input_is_one_line(tok, tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    task = build_task(TaskConfig(name="custom_classification", data_dir=str(tmp_path), text_column="sentence"), tok)
    with pytest.raises(DataError, match=message) as e:
        task.features("train")
    assert "\n" not in str(e.value)


def test_unknown_dev_label_names_its_line(tok, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n')
    (tmp_path / "dev.jsonl").write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": "neutral"}\n')
    task = build_task(TaskConfig(name="custom_classification", data_dir=str(tmp_path)), tok)
    with pytest.raises(DataError,
                       match=r"dev.jsonl:2: unknown label 'neutral' \(not in the training split: neg, pos\)"):
        task.features("dev")


def test_missing_files_are_config_errors(tok, tmp_path):
    with pytest.raises(ConfigError, match="task.train_file: task custom_classification needs task.train_file or"):
        build_task(TaskConfig(name="custom_classification"), tok).features("train")
    with pytest.raises(ConfigError, match=r"has no train file \(looked for train.jsonl, train.json, train.csv"):
        build_task(TaskConfig(name="custom_classification", data_dir=str(tmp_path)), tok).features("train")


@pytest.mark.parametrize("name, files, split", [
    ("custom_classification", ("dev.csv", "dev.jsonl"), "dev"),
    ("custom_tagging", ("train", "train.txt"), "train"),
])
def test_two_files_for_one_split_are_refused_not_one_picked(tok, tmp_path, name, files, split):
    """data_dir with train.jsonl AND train.csv read the .jsonl and quietly left the other out."""
    for f in files:
        (tmp_path / f).write_text("x")
    task = build_task(TaskConfig(name=name, data_dir=str(tmp_path)), tok)
    first, second = sorted(files, key=task.split_names(split).index)
    with pytest.raises(ConfigError) as e:
        task.split_source(split)
    assert str(e.value) == (f"task.data_dir: {tmp_path} has both {first} and {second} for the {split} split of "
                            f"{name}; keep one there or name it with task.{split}_file")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / second).rename(tmp_path / "elsewhere" / second)
    assert task.split_source(split) == tmp_path / first


def test_classification_metrics_by_hand(tok):
    """dev gold: positive, negative. Predict positive for both: accuracy 1/2; F1(positive) = 2*1/(2+1)
    = 2/3, F1(negative) = 0 -> macro-F1 = 1/3."""
    task = build_task(_cls(), tok)
    feats = task.features("dev")[:]
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # labels: [negative, positive]
    m = task.metrics(task.predict(logits, feats), "dev")
    assert m == pytest.approx({"accuracy": 50.0, "macro_f1": 100 / 3})


def test_truncation_is_counted(tok, tmp_path, caplog):
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"text": "' + "great " * 20 + '", "label": "a"}\n'
                                                 '{"text": "great", "label": "b"}\n')
    task = build_task(TaskConfig(name="custom_classification", data_dir=str(tmp_path), max_seq_length=8), tok)
    with caplog.at_level(logging.WARNING, logger="deepprompt"):
        feats = task.features("train")
    assert len(feats[0]["input_ids"]) == 8
    assert "train: 1 of 2 examples are longer than max_seq_length=8" in caplog.text


def test_raw_input_for_prediction(tok):
    task = build_task(_cls(), tok)
    (feat,) = task.raw_features({"text": "loved it"})
    assert tok.convert_ids_to_tokens(feat["input_ids"]) == ["[CLS]", "loved", "it", "[SEP]"]
    with pytest.raises(DataError, match=r"x.jsonl:2: task custom_classification needs 'text'"):
        task.raw_features({"sentence": "loved it"}, where="x.jsonl:2")


def test_tagging_from_conll_columns(tok):
    task = build_task(TaskConfig(name="custom_tagging", data_dir=str(TAG), tag_column=2), tok)
    assert task.labels == ["O", "B-ORG", "B-PER", "I-PER"]
    feat = task.features("train")[0]
    toks = tok.convert_ids_to_tokens(feat["input_ids"])
    assert list(zip(toks, [None if l == PAD_LABEL else task.labels[l] for l in feat["labels"]])) == [
        ("[CLS]", None), ("acme", "B-ORG"), ("hire", "O"), ("##d", None), ("anna", "B-PER"), ("berg", "I-PER"),
        ("[SEP]", None)]
    assert [len(task.features(s)) for s in ("train", "dev", "test")] == [2, 1, 1]


@pytest.mark.parametrize("train, dev, message", [
    ("Acme\tNNP\tB-ORG\n", "Berg\tNNP\tB-PER\n", r"dev.txt:1: unknown label 'B-PER'"),
    ("Acme\tNNP\tB-ORG\nhired\tO\n", "Berg\tNNP\tO\n",
     r"train.txt:2: expected a word in column 0 and a tag in column 2"),
    # a word with a space in a tab-separated file shifts the columns: the wrong cell would be the tag
    ("Acme\tNNP\tB-ORG\nNew York\tNNP\tB-LOC\n", "Berg\tNNP\tO\n",
     r"train.txt:2: 4 columns, but the sentence started on line 1 with 3"),
    # tags of no scheme seqeval reads (IO, BILOU, lower case): it would score them as no entity at all
    ("Acme\tNNP\tORG\n", "Berg\tNNP\tO\n",
     r"train.txt:1: tag 'ORG' is not BIO or BIOES \(expected O, or B-, I-, E-, S- and the type\)"),
    ("Acme\tNNP\tO\n\nAnna\tNNP\tB-PER\nBerg\tNNP\tL-PER\n", "Berg\tNNP\tO\n", r"train.txt:4: tag 'L-PER' is not BIO"),
    ("Acme\tNNP\tB-ORG\n", "Berg\tNNP\tb-org\n", r"dev.txt:1: tag 'b-org' is not BIO"),
])
def test_tagging_bad_input(tok, tmp_path, train, dev, message):
    (tmp_path / "train.txt").write_text(train)
    (tmp_path / "dev.txt").write_text(dev)
    task = build_task(TaskConfig(name="custom_tagging", data_dir=str(tmp_path), tag_column=2), tok)
    with pytest.raises(DataError, match=message):
        task.features("dev")


def test_json_list_file(tok, tmp_path):
    (tmp_path / "train.json").write_text('[{"text": "great", "label": 1},\n {"text": "boring", "label": 0},\n'
                                         ' {"text": "x"}]')
    task = build_task(TaskConfig(name="custom_classification", data_dir=str(tmp_path)), tok)
    with pytest.raises(DataError, match=r"train.json: example 2: missing field 'label'"):
        task.features("train")
    (tmp_path / "train.json").write_text('[{"text": "great", "label": 1}, {"text": "boring", "label": 0}]')
    task = build_task(TaskConfig(name="custom_classification", data_dir=str(tmp_path)), tok)
    assert task.labels == ["0", "1"] and [f["labels"] for f in task.features("train")] == [1, 0]


@pytest.mark.parametrize("name, sep", [("train.csv", ","), ("train.tsv", "\t")])
def test_a_csv_with_a_byte_order_mark_finds_its_first_column(tok, tmp_path, name, sep):
    """Excel's "CSV UTF-8" starts with a BOM; it used to stick to the first column's name ('\\ufefftext')."""
    (tmp_path / name).write_bytes(f"\ufefftext{sep}label\ngreat movie{sep}positive\nboring{sep}negative\n".encode())
    task = build_task(TaskConfig(name="custom_classification", train_file=str(tmp_path / name)), tok)
    assert [r["text"] for r in task.read_examples("train")] == ["great movie", "boring"]


def test_bioes_tags_are_read_as_they_are(tok, tmp_path):
    (tmp_path / "train.txt").write_text("Anna\tB-PER\nBerg\tE-PER\nin\tO\nOslo\tS-LOC\n")
    (tmp_path / "dev.txt").write_text("Oslo\tS-LOC\n")
    task = build_task(TaskConfig(name="custom_tagging", data_dir=str(tmp_path)), tok)
    assert task.labels == ["O", "B-PER", "E-PER", "S-LOC"]
    assert [r["tags"] for r in task.read_examples("train")] == [["B-PER", "E-PER", "O", "S-LOC"]]
    assert len(task.features("dev")) == 1


def test_a_label_set_of_fewer_than_two_labels_or_a_label_listed_twice_is_one_line(tok, tmp_path):
    """A head of one class learns nothing and scores everything right; a label listed twice got two
    outputs of which the first was never a target."""
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.jsonl").write_text('{"sentence": "great movie", "label": "pos"}\n' * 2)
    with pytest.raises(DataError, match="task custom_classification: the training split holds only the label 'pos'; "
                                        "a classifier needs at least two"):
        build_task(TaskConfig(name="custom_classification", data_dir=str(tmp_path), text_column="sentence"), tok).labels
    (tmp_path / "tagging").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "tagging" / f"{split}.txt").write_text("acme O\nanna O\n\n")
    with pytest.raises(DataError, match="task custom_tagging: the training split holds only the label 'O'"):
        build_task(TaskConfig(name="custom_tagging", data_dir=str(tmp_path / "tagging")), tok).labels
    for labels, says in ((["pos", "neg", "pos"], "task.labels: 'pos' is listed twice"),
                         (["pos"], "task.labels: a classifier needs at least two labels")):
        with pytest.raises(ConfigError, match=says):
            build_task(_cls(labels=labels), tok)
    with pytest.raises(ConfigError, match="task.labels: 'O' is listed twice"):
        build_task(TaskConfig(name="custom_tagging", data_dir=str(TAG), labels=["O", "B-X", "O"]), tok)
