"""SRL: CoNLL-2005 props (three layouts) and CoNLL-2012 gold_conll, one example per predicate."""
import gzip
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from deepprompt.config import TaskConfig
from deepprompt.errors import DataError
from deepprompt.tasks import build_task
from deepprompt.tasks.base import PAD_LABEL
from tests.tasks.word_tokenizer import bert_tokenizer
from tests.tiny import FIXTURES, REPO, save_tiny, free_port, launch_env

C05 = FIXTURES / "conll05"
C12 = FIXTURES / "conll2012"


def fixture_words() -> list[str]:
    words = set()
    for f in [C05 / "train", C05 / "devel" / "words" / "devel.24.words", C05 / "test.wsj.words"]:
        words |= {line.split()[0].lower() for line in f.read_text().splitlines() if line.strip()}
    return sorted(words)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    # "tomorrow" is not a word of the vocabulary: it splits into tom ##orrow
    words = [w for w in fixture_words() if w != "tomorrow"] + ["tom"]
    return bert_tokenizer(tmp_path_factory.mktemp("tok"), words, pieces=("##orrow",))


def _by_token(task, feat, tokenizer):
    toks = tokenizer.convert_ids_to_tokens(feat["input_ids"])
    return [(t, None if l == PAD_LABEL else task.labels[l]) for t, l in zip(toks, feat["labels"])]


def test_conll05_one_example_per_predicate_in_all_three_layouts(tok, caplog):
    # train: a combined column file; devel: the release folder (words/, props/); test.wsj: a .words/.props pair
    task = build_task(TaskConfig(name="conll05", data_dir=str(C05)), tok)
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        assert [len(task.features(s)) for s in ("train", "dev", "test")] == [5, 1, 2]
    assert "conll05/train: 1 sentence(s) without a predicate give no example" in caplog.text
    train = task.features("train")
    assert [f["predicate"] for f in train] == [["chased"], ["said"], ["leave"], ["published"], ["angered"]]
    assert train[3]["gold"] == ["B-A1", "I-A1", "O", "B-R-A1", "O", "B-V", "B-AM-TMP", "O", "O", "O", "O"]
    # the label set comes from the training split: O first, then sorted
    assert task.labels == ["O", "B-A0", "B-A1", "B-AM-MOD", "B-AM-TMP", "B-R-A1", "B-V", "I-A0", "I-A1"]


def test_roles_on_first_subwords_of_the_sentence_only(tok):
    task = build_task(TaskConfig(name="conll05", data_dir=str(C05)), tok)
    feat = task.features("train")[2]  # "John said he would leave tomorrow ." for the predicate "leave"
    assert _by_token(task, feat, tok) == [
        ("[CLS]", None), ("john", "O"), ("said", "O"), ("he", "B-A0"), ("would", "B-AM-MOD"), ("leave", "B-V"),
        ("tom", "B-AM-TMP"), ("##orrow", None), (".", "O"),
        ("[SEP]", None), ("leave", None), ("[SEP]", None)]  # the predicate segment is never labelled
    assert feat["token_type_ids"] == [0] * 10 + [1] * 2


def test_the_separator_is_the_tokenizers_own(tmp_path):
    """RoBERTa separates a pair with </s></s>; the literal "[SEP]" never appears."""
    from transformers import AutoTokenizer
    rob = AutoTokenizer.from_pretrained(save_tiny("roberta", tmp_path / "roberta"))
    task = build_task(TaskConfig(name="conll05", data_dir=str(C05)), rob)
    feat = task.features("train")[0]  # "The cat chased the mouse ." + "chased"
    toks = rob.convert_ids_to_tokens(feat["input_ids"])
    first_sep = toks.index(rob.sep_token)
    assert toks[first_sep:first_sep + 2] == [rob.sep_token, rob.sep_token] and toks[-1] == rob.sep_token
    assert "[SEP]" not in rob.decode(feat["input_ids"])
    assert rob.decode(feat["input_ids"][first_sep + 2:-1]).strip() == "chased"
    assert all(l == PAD_LABEL for l in feat["labels"][first_sep:])
    assert sum(l != PAD_LABEL for l in feat["labels"]) == 6  # one label per sentence word


def test_conll05_gzipped_release_folder(tok, tmp_path):
    for kind in ("words", "props"):
        (tmp_path / "devel" / kind).mkdir(parents=True)
        src = C05 / "devel" / kind / f"devel.24.{kind}"
        with gzip.open(tmp_path / "devel" / kind / f"devel.24.{kind}.gz", "wt") as fh:
            fh.write(src.read_text())
    task = build_task(TaskConfig(name="conll05", data_dir=str(C05), dev_file=str(tmp_path / "devel")), tok)
    assert task.features("dev")[0]["gold"] == ["B-A0", "B-V", "B-A1", "I-A1", "B-AM-TMP", "O"]


@pytest.mark.parametrize("text, message", [
    ("The DT - (A0*\ncat NN chase *)\nran VBD run (V*)\n", r"train:1: the target-verb column marks 2 predicate\(s\) "
                                                           r"but the sentence has 1 argument column"),
    ("The DT - (A0*\ncat NN chase *\n", r"train:1: span \(A0 is never closed"),
    ("The DT - (A0*)\ncat NN chase (V*) *\n", r"train:2: 5 columns, but the sentence started on line 1 with 4"),
    ("The DT - (A0*)\ncat NN chase (V*)*\n", r"train:2: malformed bracket cell"),
    ("\n\n", r"train: no sentences"),
])
def test_conll05_bad_input_is_one_line(tok, tmp_path, text, message):
    (tmp_path / "train").write_text(text)
    task = build_task(TaskConfig(name="conll05", data_dir=str(tmp_path)), tok)
    with pytest.raises(DataError, match=message) as e:
        task.features("train")
    assert "\n" not in str(e.value)


def test_fixed_labels_reject_an_unknown_role_with_its_line(tok):
    labels = ["O", "B-A0", "I-A0", "B-A1", "I-A1", "B-V"]
    task = build_task(TaskConfig(name="conll05", data_dir=str(C05), labels=labels), tok)
    with pytest.raises(DataError, match=r"conll05/train:11: unknown label 'B-AM-MOD'"):
        task.features("train")


def test_conll12_frames_and_unseen_dev_roles_are_counted_not_dropped(tok, caplog):
    task = build_task(TaskConfig(name="conll12", data_dir=str(C12)), tok)
    with caplog.at_level(logging.WARNING, logger="deepprompt"):
        dev = task.features("dev")
    assert [len(task.features(s)) for s in ("train", "dev")] == [4, 2]
    assert [f["predicate"] for f in task.features("train")] == [["visited"], ["met"], ["approved"], ["bought"]]
    # ARGM-MNR never occurs in training: kept in the gold sequence, unlabelled for the loss, logged
    assert dev[1]["gold"] == ["B-ARG0", "B-ARGM-MNR", "B-V", "B-ARG1", "I-ARG1", "O"]
    assert "B-ARGM-MNR" not in task.labels
    assert "2 words carry tags never seen in training" not in caplog.text
    assert "1 words carry tags never seen in training" in caplog.text
    assert [l for l, w in zip(dev[1]["labels"], dev[1]["word_ids"]) if w == 1] == [PAD_LABEL]


def test_srl_f1_excludes_the_verb_span(tok):
    """Hand count on the conll12 dev split: gold role spans without V: ARG0, ARG1, ARGM-TMP (frame 0)
    + ARG0, ARGM-MNR, ARG1 (frame 1) = 6. The prediction gets frame 0 right, and in frame 1 only ARG0
    (it tags ARG1 as O and cannot predict the unseen ARGM-MNR): 4 predicted, 4 right -> P 100, R 4/6."""
    task = build_task(TaskConfig(name="conll12", data_dir=str(C12)), tok)
    feats = task.features("dev")[:]
    preds = [{"id": feats[0]["id"], "tags": list(feats[0]["gold"])},
             {"id": feats[1]["id"], "tags": ["B-ARG0", "O", "B-V", "O", "O", "O"]}]
    m = task.metrics(preds, "dev")
    assert (m["precision"], m["recall"]) == pytest.approx((100.0, 400 / 6))
    # a wrong verb span changes nothing: V (and C-V, a split verb's second part) is not scored
    preds[0]["tags"][2] = "O"
    preds[0]["tags"][6] = "B-C-V"
    assert task.metrics(preds, "dev") == m


def test_predict_reads_sentence_positions_only(tok):
    task = build_task(TaskConfig(name="conll05", data_dir=str(C05)), tok)
    feats = task.features("test")[:]
    width = max(len(f["input_ids"]) for f in feats)
    logits = torch.zeros(len(feats), width, len(task.labels))
    for b, f in enumerate(feats):
        for pos, lab in enumerate(f["labels"]):
            logits[b, pos, max(lab, 0)] = 1.0
        logits[b, len(f["input_ids"]) - 2, task.labels.index("B-A1")] = 5.0  # the predicate segment: ignored
    preds = task.predict(logits, feats)
    assert [p["tags"] for p in preds] == [f["gold"] for f in feats]
    assert task.metrics(preds, "test")["f1"] == pytest.approx(100.0)


def test_raw_input_needs_the_predicate(tok):
    task = build_task(TaskConfig(name="conll05", data_dir=str(C05)), tok)
    (feat,) = task.raw_features({"text": "the cat chased the mouse", "predicate": "chased"})
    assert tok.convert_ids_to_tokens(feat["input_ids"])[-3:] == ["[SEP]", "chased", "[SEP]"]
    with pytest.raises(DataError, match=r"in.jsonl:3: task conll05 needs \"predicate\""):
        task.raw_features({"text": "the cat"}, where="in.jsonl:3")


# ------------------------------------------------------------------ 2 ranks through the launcher

def _tiny_model(path):
    from tests.tiny import save_bert

    return save_bert(path, sorted({w.lower() for w in fixture_words()}), ("##s", "##ed"))


@pytest.mark.multirank
def test_two_rank_zero3_srl_run(tmp_path):
    port = free_port()
    model, out = _tiny_model(tmp_path / "model"), tmp_path / "run"
    env = launch_env()
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--hostfile", "hostfile.example",
           "--no_ssh_check", "--master_addr", "127.0.0.1", "--master_port", str(port),
           "launcher/train.py", "--ds_config", "ds_configs/zero3.json",
           f"model.path={model}", "task.name=conll05", f"task.data_dir={C05}", "prompt.method=prefix",
           "prompt.length=4", "task.max_seq_length=32", "train.max_steps=12", "train.batch_size=4",
           "train.micro_batch_size=2", "train.eval_every=6", "train.eval_batch_size=4", "train.lr=3e-2",
           f"output_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["world_size"] == 2 and r["steps"] == 12
    assert r["frozen_backbone"]["unchanged"] is True
    task = r["tasks"]["conll05"]
    assert task["main_metric"] == "f1"
    assert {"dev_f1", "dev_precision", "dev_recall", "test_f1"} <= set(task["last"])
    assert all(0.0 <= task["last"][k] <= 100.0 for k in ("dev_f1", "test_f1"))
    assert r["train_loss"]["last"] < r["train_loss"]["first"]
