"""Extractive QA (SQuAD v1.1 / v2.0): official JSON -> windows -> span labels -> n-best decoding ->
EM/F1, on fixture files in the official layout and a tiny word-piece tokenizer."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from deepprompt.config import TaskConfig
from deepprompt.errors import ConfigError, DataError
from deepprompt.tasks import build_task
from deepprompt.tasks.qa import read_squad_json
from tests.tiny import BERT_SPECIALS, FIXTURES, REPO, free_port, launch_env, save_bert

SQUAD = FIXTURES / "squad"
SPLIT_WORDS = {"duisburg": ["duis", "##burg"], "rotterdam": ["rotter", "##dam"], "countries": ["country", "##ies"]}


def save_tiny_qa_bert(path, layers=2, hidden=32, positions=128):
    """A random BERT whose word-piece vocabulary covers the QA fixtures (a few words only as
    sub-words, so offsets inside words are exercised)."""
    from tokenizers.pre_tokenizers import BertPreTokenizer

    words = set()
    for f in SQUAD.glob("*.json"):
        for art in json.loads(f.read_text())["data"]:
            for para in art["paragraphs"]:
                texts = [para["context"]] + [qa["question"] for qa in para["qas"]]
                for t in texts:
                    words |= {w.lower() for w, _ in BertPreTokenizer().pre_tokenize_str(t)}
    pieces = {p for w in SPLIT_WORDS for p in SPLIT_WORDS[w]}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted((words - set(SPLIT_WORDS)) | pieces)
    return save_bert(path, vocab[len(BERT_SPECIALS):], (), layers, hidden, positions)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_qa_bert(tmp_path_factory.mktemp("qa_bert"))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir)


def make(tokenizer, name="squad", data_dir=SQUAD, **kw):
    kw = {"max_seq_length": 48, "doc_stride": 8, "max_query_length": 16, **kw}
    return build_task(TaskConfig(name=name, data_dir=str(data_dir), **kw), tokenizer)


def test_reads_official_v1_layout():
    records, moved = read_squad_json(SQUAD / "train-v1.1.json", version_2=False)
    assert len(records) == 10 and moved == 0
    r = next(r for r in records if r["id"] == "rhine-q4")
    assert r["answer_texts"] == ["Duisburg"] and r["context"][r["answer_starts"][0]:].startswith("Duisburg")
    assert not r["is_impossible"]
    dev, _ = read_squad_json(SQUAD / "dev-v1.1.json", version_2=False)
    assert [len(r["answer_texts"]) for r in dev] == [3, 3, 2, 2]  # every gold answer kept


def test_split_files_point_splits_at_any_squad_file(tokenizer):
    """task.dev_file/test_file replace the data_dir's files; a test_file adds a test split."""
    assert make(tokenizer).splits == ("train", "dev")
    task = make(tokenizer, dev_file=str(SQUAD / "train-v1.1.json"), test_file=str(SQUAD / "dev-v1.1.json"))
    assert task.splits == ("train", "dev", "test")
    assert len(task.read_examples("dev")) == 10 and len(task.read_examples("test")) == 4
    with pytest.raises(ConfigError, match=r"^task.test_file: \S*nowhere.json does not exist$"):
        make(tokenizer, test_file=str(SQUAD / "nowhere.json")).read_examples("test")


def test_reads_v2_impossible_questions():
    records, _ = read_squad_json(SQUAD / "train-v2.0.json", version_2=True)
    impossible = [r for r in records if r["is_impossible"]]
    assert len(records) == 8 and len(impossible) == 3
    assert all(r["answer_texts"] == [] for r in impossible)  # plausible_answers are not answers


def test_long_context_is_windowed_and_every_answer_is_kept(tokenizer):
    task = make(tokenizer)
    feats = list(task.features("train"))
    records = {r["id"]: r for r in task.read_examples("train")}
    per_q = {}
    for f in feats:
        per_q.setdefault(f["id"], []).append(f)
        assert len(f["input_ids"]) <= 48
    assert max(len(v) for v in per_q.values()) >= 3  # the Rhine paragraph needs several windows
    for qid, windows in per_q.items():
        rec = records[qid]
        question = tokenizer(rec["question"], add_special_tokens=False)["input_ids"]
        labelled = [w for w in windows if w["start_positions"] > 0]
        assert labelled, f"{qid}: no window holds the answer"
        for w in windows:
            assert w["input_ids"][1:1 + len(question)] == question  # the question is in every window
        for w in labelled:  # the labelled span is exactly the answer, token by token
            s, e = w["start_positions"], w["end_positions"]
            assert all(c >= 0 for c in w["char_start"][s:e + 1])  # context tokens only
            assert rec["context"][w["char_start"][s]:w["char_end"][e]] == rec["answer_texts"][0]
            tokens = tokenizer.convert_ids_to_tokens(w["input_ids"][s:e + 1])
            assert "".join(t.removeprefix("##") for t in tokens) == rec["answer_texts"][0].lower().replace(" ", "")
        for w in windows:
            if w["start_positions"] == 0:
                ctx = [c for c in w["char_start"] if c >= 0]
                start = rec["answer_starts"][0]
                # an unlabelled window really misses (part of) the answer
                assert not (min(ctx) <= start and max(w["char_end"]) >= start + len(rec["answer_texts"][0]))


def test_consecutive_windows_share_doc_stride_tokens(tokenizer):
    task = make(tokenizer)
    windows = [f for f in task.features("train") if f["id"] == "rhine-q4"]
    assert len(windows) >= 3
    for a, b in zip(windows, windows[1:]):
        ctx_a = [c for c in a["char_start"] if c >= 0]
        ctx_b = [c for c in b["char_start"] if c >= 0]
        assert ctx_a[-8:] == ctx_b[:8]  # doc_stride = 8 shared context tokens
    # the sub-word answer: duis ##burg
    w = next(w for w in windows if w["start_positions"] > 0)
    assert tokenizer.convert_ids_to_tokens(w["input_ids"][w["start_positions"]:w["end_positions"] + 1]) == \
        ["duis", "##burg"]


def test_unanswerable_questions_point_at_cls(tokenizer):
    task = make(tokenizer, "squad_v2")
    feats = list(task.features("train"))
    for f in feats:
        if f["id"] in ("v2-rhine-q3", "v2-rhine-q5", "v2-castle-q2"):
            assert (f["start_positions"], f["end_positions"]) == (0, 0)
    assert any(f["start_positions"] > 0 for f in feats)


def test_long_question_is_cut_and_counted(tokenizer, tmp_path, caplog):
    doc = json.loads((SQUAD / "dev-v1.1.json").read_text())
    qa = doc["data"][0]["paragraphs"][0]["qas"][0]
    qa["question"] = " ".join(["where"] * 30) + " does the rhine flow to?"
    (tmp_path / "dev.json").write_text(json.dumps(doc))
    task = make(tokenizer, data_dir=tmp_path)
    feats = [f for f in task.features("dev") if f["id"] == qa["id"]]
    sep = tokenizer.sep_token_id
    assert all(f["input_ids"].index(sep) == 1 + 16 for f in feats)  # [CLS] + 16 question tokens + [SEP]
    assert "1 question(s) longer than task.max_query_length=16" in caplog.text


def _peaks(feat, start_at, end_at, n=None):
    """Logits [n, 2]: -1 everywhere, 5 at start_at (start) and end_at (end)."""
    n = n or len(feat["input_ids"])
    logits = torch.full((n, 2), -1.0)
    for pos, val in start_at.items():
        logits[pos, 0] = val
    for pos, val in end_at.items():
        logits[pos, 1] = val
    return logits


def test_nbest_never_returns_question_or_padding_spans(tokenizer):
    task = make(tokenizer, n_best=5)
    feat = task.features("dev")[0]
    n = len(feat["input_ids"])
    ctx = [i for i, c in enumerate(feat["char_start"]) if c >= 0]
    # the highest scores sit on [CLS], question tokens and padding (positions >= n)
    logits = _peaks(feat, {0: 50.0, 2: 40.0, n + 1: 60.0, ctx[3]: 5.0}, {0: 50.0, 3: 40.0, n + 2: 60.0, ctx[4]: 5.0},
                    n + 4)
    pred = task.predict(logits.unsqueeze(0), [feat])[0]
    assert pred["null"] == 100.0
    valid = {(feat["char_start"][i], feat["char_end"][j]) for i in ctx for j in ctx if i <= j}
    assert pred["spans"] and all((cs, ce) in valid for cs, ce, _ in pred["spans"])
    assert pred["spans"][0][:2] == [feat["char_start"][ctx[3]], feat["char_end"][ctx[4]]]
    assert len(pred["spans"]) <= 5
    assert [s[2] for s in pred["spans"]] == sorted((s[2] for s in pred["spans"]), reverse=True)


def test_nbest_respects_max_answer_length(tokenizer):
    task = make(tokenizer, max_answer_length=3)
    feat = task.features("dev")[0]
    ctx = [i for i, c in enumerate(feat["char_start"]) if c >= 0]
    # the best pair is 5 tokens long: too long; the best allowed one is ctx[2]..ctx[4]
    logits = _peaks(feat, {ctx[0]: 9.0, ctx[2]: 4.0}, {ctx[4]: 9.0, ctx[1]: 1.0})
    spans = task.predict(logits.unsqueeze(0), [feat])[0]["spans"]
    starts = {c: i for i, c in enumerate(feat["char_start"])}
    ends = {c: i for i, c in enumerate(feat["char_end"]) if feat["char_start"][i] >= 0}
    assert all(ends[ce] - starts[cs] + 1 <= 3 and ends[ce] >= starts[cs] for cs, ce, _ in spans)
    assert spans[0][:2] == [feat["char_start"][ctx[2]], feat["char_end"][ctx[4]]]


def _gold_logits(feat):
    """Logits that point at the window's label (or [CLS])."""
    return _peaks(feat, {feat["start_positions"]: 5.0}, {feat["end_positions"]: 5.0})


def test_metrics_of_gold_predictions_v1(tokenizer):
    task = make(tokenizer)
    feats = list(task.features("dev"))
    preds = [p for f in feats for p in task.predict(_gold_logits(f).unsqueeze(0), [f])]
    assert len(preds) == len(feats) > 4  # one prediction per window, several windows per question
    assert task.metrics(preds, "dev") == {"exact_match": 100.0, "f1": 100.0}
    answers = task.answers(preds, "dev")
    assert answers["dev-rhine-q1"]["text"] == "the North Sea"


def test_metrics_of_gold_predictions_v2(tokenizer):
    task = make(tokenizer, "squad_v2")
    feats = list(task.features("dev"))
    preds = [p for f in feats for p in task.predict(_gold_logits(f).unsqueeze(0), [f])]
    out = task.metrics(preds, "dev")
    assert out["exact_match"] == 100.0 and out["HasAns_total"] == 2 and out["NoAns_total"] == 1
    assert out["best_f1"] == 100.0 and task.main_metric == "best_f1"


def _raw_windows_and_gold_predictions(task, rec):
    """A dev question given as raw input: its windows, and predict() of gold logits on each."""
    dev = [f for f in task.features("dev") if f["id"] == rec["id"]]
    raw = task.raw_features({"question": rec["question"], "context": rec["context"]})
    preds = [p for f, d in zip(raw, dev) for p in task.predict(_gold_logits(d).unsqueeze(0), [{**f, "id": 0}])]
    return dev, raw, preds


def test_raw_input_is_windowed_as_dev_and_answered_from_the_best_window(tokenizer):
    task = make(tokenizer)
    rec = next(r for r in task.read_examples("dev") if r["id"] == "dev-rhine-q1")
    dev, raw, preds = _raw_windows_and_gold_predictions(task, rec)
    assert len(raw) == len(dev) > 1 and [f["input_ids"] for f in raw] == [f["input_ids"] for f in dev]
    assert not any("start_positions" in f for f in raw)  # no labels in raw features
    out = task.raw_prediction(rec, preds)
    assert out["answer"] == "the North Sea" and rec["context"][out["answer_start"]:].startswith("the North Sea")
    with pytest.raises(DataError, match=r"^in.jsonl:2: task squad needs 'context' \(a non-empty string\)$"):
        task.raw_features({"question": "where?"}, where="in.jsonl:2")


def test_raw_input_v2_answers_nothing_when_no_answer_scores_higher(tokenizer):
    task = make(tokenizer, "squad_v2")
    rec = next(r for r in task.read_examples("dev") if r["is_impossible"])
    _, _, preds = _raw_windows_and_gold_predictions(task, rec)  # gold = [CLS] in every window
    out = task.raw_prediction(rec, preds)
    assert out["answer"] == "" and out["answer_start"] == -1 and out["null_score_diff"] > 0


def test_a_qa_artifact_answers_raw_questions_as_evaluation_does(model_dir, tmp_path):
    """predict.py's path (artifact -> server -> raw {question, context}) gives every dev question
    the answer evaluation derives from the same model, in batches that mix windows of questions."""
    from deepprompt.artifacts import load_artifact, save_artifact
    from deepprompt.engine.serving import build_server, predict
    from tests.artifact_utils import plain_model, run_config, train_briefly

    run = run_config(model_dir, "task.name=squad", f"task.data_dir={SQUAD}", "task.max_seq_length=48",
                     "task.doc_stride=8", "task.max_query_length=16")
    model, task = plain_model(run)
    train_briefly(model, task)
    art = save_artifact(model, run, [task], str(model_dir), tmp_path / "qa")
    dev = task.read_examples("dev")
    got = predict(build_server([load_artifact(art)]),
                  [{"task": "squad", "id": r["id"], "question": r["question"], "context": r["context"]} for r in dev],
                  batch_size=3)
    feats = list(task.features("dev"))
    with torch.no_grad():
        ref = task.answers(task.predict(model(task.collate(feats), "squad").logits, feats), "dev")
    assert [g["id"] for g in got] == [r["id"] for r in dev]
    assert [g["answer"] for g in got] == [ref[r["id"]]["text"] for r in dev]
    assert all(g["context"][g["answer_start"]:].startswith(g["answer"]) for g in got)


def test_squadshifts_layout_and_train_files(tokenizer, tmp_path):
    for name in ("new_wiki", "nyt"):
        shutil.copy(SQUAD / "train-v1.1.json", tmp_path / f"{name}_v1.0.json")
    doc = json.loads((SQUAD / "train-v1.1.json").read_text())
    for art in doc["data"]:  # ids are unique across the concatenated sets
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                qa["id"] = "amz-" + qa["id"]
    (tmp_path / "amazon_reviews_v1.0.json").write_text(json.dumps(doc))
    shutil.copy(SQUAD / "dev-v1.1.json", tmp_path / "squaddev_v1.1.json")
    task = make(tokenizer, data_dir=tmp_path, train_files=["new_wiki", "amazon"])
    assert [p.name for p in task.split_paths("train")] == ["new_wiki_v1.0.json", "amazon_reviews_v1.0.json"]
    assert len(task.read_examples("train")) == 20
    assert task.split_paths("dev")[0].name == "squaddev_v1.1.json"
    with pytest.raises(DataError, match="duplicate id"):  # all sets by default: new_wiki and nyt share ids
        make(tokenizer, data_dir=tmp_path).read_examples("train")
    with pytest.raises(ConfigError, match="task.train_files: 'reddit' is neither a file nor a SQuADShifts set"):
        make(tokenizer, data_dir=tmp_path, train_files=["reddit"]).read_examples("train")


def test_max_eval_examples_takes_the_first_questions(tokenizer):
    task = make(tokenizer, max_eval_examples=2)
    assert [r["id"] for r in task.read_examples("dev")] == ["dev-rhine-q1", "dev-rhine-q2"]
    assert len(task.read_examples("train")) == 10  # never the training split


def test_misplaced_answer_start_is_reanchored_and_counted(tokenizer, tmp_path, caplog):
    doc = json.loads((SQUAD / "dev-v1.1.json").read_text())
    ans = doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][1]  # "North Sea"
    ans["answer_start"] += 3
    (tmp_path / "dev.json").write_text(json.dumps(doc))
    records = make(tokenizer, data_dir=tmp_path).read_examples("dev")
    ctx = records[0]["context"]
    assert ctx[records[0]["answer_starts"][1]:].startswith("North Sea")
    assert "1 answer(s) had an answer_start that does not point at their text" in caplog.text


def _bad(tmp_path, edit):
    doc = json.loads((SQUAD / "train-v1.1.json").read_text())
    edit(doc)
    (tmp_path / "train.json").write_text(json.dumps(doc) if isinstance(doc, dict) else doc)
    return tmp_path / "train.json"


def _qa0(doc):
    return doc["data"][0]["paragraphs"][0]["qas"][0]


@pytest.mark.parametrize("edit, message", [
    (lambda d: _qa0(d).pop("question"), "question 'rhine-q1': missing field 'question'"),
    (lambda d: d["data"][0]["paragraphs"][0].pop("context"), "data[0].paragraphs[0]: missing field 'context'"),
    (lambda d: _qa0(d)["answers"][0].update(text="the Swiss Andes"),
     "question 'rhine-q1': answer 'the Swiss Andes' (answer_start 37) is not in its context"),
    (lambda d: _qa0(d).update(answers=[]), "question 'rhine-q1': no answers (and is_impossible is not true)"),
    (lambda d: _qa0(d).update(is_impossible=True, answers=[]), "is_impossible questions are SQuAD 2.0"),
    (lambda d: _qa0(d)["answers"][0].update(answer_start="37"), "field 'answer_start' must be int"),
    (lambda d: d.pop("data"), "missing field 'data'"),
])
def test_bad_input_is_one_line_with_file_and_question(tokenizer, tmp_path, edit, message):
    path = _bad(tmp_path, edit)
    with pytest.raises(DataError) as err:
        make(tokenizer, data_dir=tmp_path).read_examples("train")
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(path)) and message in text, text


def test_empty_and_broken_files(tokenizer, tmp_path):
    (tmp_path / "train.json").write_text("")
    with pytest.raises(DataError, match="train.json: empty file"):
        make(tokenizer, data_dir=tmp_path).read_examples("train")
    (tmp_path / "train.json").write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(DataError, match=r"train.json:2: not valid JSON"):
        make(tokenizer, data_dir=tmp_path).read_examples("train")
    (tmp_path / "train.json").write_text('{"data": ' + "[" * 100_000)  # json.loads: RecursionError
    with pytest.raises(DataError, match=r"train.json: not valid JSON \(arrays/objects nested too deeply"):
        make(tokenizer, data_dir=tmp_path).read_examples("train")
    (tmp_path / "train.json").write_text('{"version": "1.1", "data": []}')
    with pytest.raises(DataError, match="train.json: no questions"):
        make(tokenizer, data_dir=tmp_path).read_examples("train")


def test_config_errors(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="task.doc_stride: 40 leaves no new context per window"):
        make(tokenizer, doc_stride=40)
    with pytest.raises(ConfigError, match="has no dev file"):
        make(tokenizer, data_dir=tmp_path).read_examples("dev")
    with pytest.raises(ConfigError, match="task.data_dir: task 'squad_v2' needs a data directory"):
        build_task(TaskConfig(name="squad_v2"), tokenizer).read_examples("dev")
    with pytest.raises(ConfigError, match="no 'test' split"):
        make(tokenizer).read_examples("test")


@pytest.mark.multirank
def test_two_rank_zero3_squad_run(model_dir, tmp_path):
    port = free_port()
    out = tmp_path / "run"
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--hostfile", "hostfile.example",
           "--no_ssh_check", "--master_addr", "127.0.0.1", "--master_port", str(port),
           "launcher/train.py", "--ds_config", "ds_configs/zero3.json",
           f"model.path={model_dir}", "task.name=squad", f"task.data_dir={SQUAD}", "task.max_seq_length=48",
           "task.doc_stride=8", "task.max_query_length=16", "prompt.method=prefix", "prompt.length=4",
           "train.max_steps=30", "train.batch_size=8", "train.micro_batch_size=4", "train.eval_every=15",
           "train.eval_batch_size=8", "train.lr=3e-2", f"output_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["world_size"] == 2 and r["steps"] == 30 and r["frozen_backbone"]["unchanged"] is True
    assert r["train_loss"]["last"] < r["train_loss"]["first"]
    task = r["tasks"]["squad"]
    assert task["main_metric"] == "f1"
    assert set(task["last"]) == {"dev_exact_match", "dev_f1"}  # SQuAD has no test split
    assert 0.0 <= task["last"]["dev_exact_match"] <= task["last"]["dev_f1"] <= 100.0
    assert [h["step"] for h in r["eval_history"]] == [15, 30]


def test_answer_longer_than_a_window_is_counted_not_hidden(tokenizer, tmp_path, caplog):
    doc = json.loads((SQUAD / "train-v1.1.json").read_text())
    para = doc["data"][0]["paragraphs"][0]
    long = para["context"][:para["context"].index("In the year")].strip()  # ~60 tokens > a window
    para["qas"][0]["answers"] = [{"text": long, "answer_start": 0}]
    (tmp_path / "train.json").write_text(json.dumps(doc))
    task = make(tokenizer, data_dir=tmp_path)
    feats = [f for f in task.features("train") if f["id"] == "rhine-q1"]
    assert all((f["start_positions"], f["end_positions"]) == (0, 0) for f in feats)
    assert "1 question(s) have no window holding their whole first answer" in caplog.text
