"""task.formulation=cloze: SuperGLUE/GLUE sentence tasks put into a pattern with the tokenizer's mask
token and scored by the parameter-free cloze head over one single-token verbalizer per label.
Checked token by token on a tiny word-level BERT tokenizer, trained in-process on the RTE fixture,
and run on 2 ranks through the launcher on a tiny random GLM."""
import json
import os
import subprocess

import pytest
import torch

from deepprompt.config import TaskConfig
from deepprompt.errors import ConfigError
from deepprompt.tasks import build_task
from tests.tasks.sentence_tiny import vocabulary
from tests.tiny import BERT_SPECIALS, FIXTURES, REPO, save_bert

SG, GLUE = FIXTURES / "superglue", FIXTURES / "glue"
PATTERN_WORDS = ["question", "answer", "it", "was", "yes", "no", "maybe", "great", "terrible", ":", "?", "."]


def save_cloze_bert(path, extra=(), hidden=32, layers=2):
    """A random BERT whose word-level vocabulary covers the fixtures, the patterns and the verbalizers."""
    vocab = vocabulary()
    vocab += sorted(set(PATTERN_WORDS) - set(vocab)) + list(extra)
    return save_bert(path, vocab[len(BERT_SPECIALS):], (), layers, hidden, 128)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return save_cloze_bert(tmp_path_factory.mktemp("cloze_bert"))


@pytest.fixture(scope="module")
def tokenizer(bert_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(bert_dir)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cloze_task(name, data_dir, tokenizer, **kw):
    return build_task(TaskConfig(name=name, data_dir=str(data_dir), formulation="cloze", **kw), tokenizer)


def test_rte_cloze_features_token_by_token(tokenizer):
    task = cloze_task("rte", SG / "RTE", tokenizer, max_seq_length=128)
    assert task.head == "cloze"
    feats = task.features("dev")
    file_rows = rows(SG / "RTE" / "val.jsonl")
    assert len(feats) == len(file_rows)
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    for f, row in zip(feats, file_rows):
        want = (["[CLS]"] + tokenizer.tokenize(row["premise"]) + ["question", ":"]
                + tokenizer.tokenize(row["hypothesis"]) + ["?", "answer", ":", "[MASK]", ".", "[SEP]"])
        assert tokenizer.convert_ids_to_tokens(f["input_ids"]) == want
        assert f["mask_positions"] == want.index("[MASK]")
        assert f["candidate_ids"] == [yes, no]  # entailment -> yes, not_entailment -> no
        assert f["labels"] == ["entailment", "not_entailment"].index(row["label"])
        assert f["attention_mask"] == [1] * len(want) and f["token_type_ids"] == [0] * len(want)
    batch = task.collate(feats[0:3])
    assert batch["mask_positions"].shape == (3,) and batch["candidate_ids"].tolist() == [[yes, no]] * 3
    assert (batch["input_ids"][torch.arange(3), batch["mask_positions"]] == tokenizer.mask_token_id).all()


def test_sst2_and_boolq_patterns(tokenizer):
    sst = cloze_task("sst2", GLUE / "SST-2", tokenizer)
    f = sst.features("dev")[0]
    toks = tokenizer.convert_ids_to_tokens(f["input_ids"])
    assert toks[-5:] == ["it", "was", "[MASK]", ".", "[SEP]"] and f["mask_positions"] == len(toks) - 3
    assert f["candidate_ids"] == tokenizer.convert_tokens_to_ids(["terrible", "great"])  # labels 0, 1
    boolq = cloze_task("boolq", SG / "BoolQ", tokenizer)
    row, f = rows(SG / "BoolQ" / "val.jsonl")[0], boolq.features("dev")[0]
    want = (["[CLS]"] + tokenizer.tokenize(row["passage"]) + ["question", ":"] + tokenizer.tokenize(row["question"])
            + ["?", "answer", ":", "[MASK]", ".", "[SEP]"])
    assert tokenizer.convert_ids_to_tokens(f["input_ids"]) == want
    assert f["candidate_ids"] == tokenizer.convert_tokens_to_ids(["no", "yes"])  # false, true
    assert f["labels"] == int(row["label"])


def test_truncation_cuts_the_named_segment_and_keeps_the_mask(tokenizer):
    limit = 20
    rte = cloze_task("rte", SG / "RTE", tokenizer, max_seq_length=limit)
    checked = 0
    for f, row in zip(rte.features("dev"), rows(SG / "RTE" / "val.jsonl")):
        toks = tokenizer.convert_ids_to_tokens(f["input_ids"])
        hyp = tokenizer.tokenize(row["hypothesis"])
        full = len(tokenizer.tokenize(row["premise"])) + len(hyp) + 9
        assert len(toks) == min(limit, full) and f["truncated"] == (full > limit)
        assert toks[-3:] == ["[MASK]", ".", "[SEP]"] and f["mask_positions"] == len(toks) - 3
        if full > limit and len(hyp) + 9 < limit:  # the premise is cut first; the hypothesis is whole
            start = toks.index("question") + 2
            assert toks[start:start + len(hyp)] == hyp
            premise = tokenizer.tokenize(row["premise"])
            assert toks[1:toks.index("question")] == premise[:limit - 9 - len(hyp)]
            checked += 1
    assert checked >= 1  # the fixture has a premise that is cut while its hypothesis stays whole
    # the passage (text_pair) of BoolQ is cut, never the question
    boolq = cloze_task("boolq", SG / "BoolQ", tokenizer, max_seq_length=limit)
    for f, row in zip(boolq.features("dev"), rows(SG / "BoolQ" / "val.jsonl")):
        toks = tokenizer.convert_ids_to_tokens(f["input_ids"])
        q = tokenizer.tokenize(row["question"])
        assert toks[f["mask_positions"]] == "[MASK]" and len(toks) <= limit
        if len(q) + 9 < limit:
            assert toks[toks.index("question") + 2:][:len(q)] == q


def test_too_short_for_the_pattern_is_a_config_error(tokenizer):
    task = cloze_task("rte", SG / "RTE", tokenizer, max_seq_length=9)
    with pytest.raises(ConfigError, match=r"^task.max_seq_length: 9 leaves no room .*\(9 tokens\)$"):
        task.features("dev")


def test_multi_token_verbalizer_is_a_one_line_error(tmp_path):
    from transformers import AutoTokenizer, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "may", "##be", "question", "answer"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ConfigError) as e:
        cloze_task("cb", SG / "CB", tok)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("task.formulation: task cb: verbalizer 'maybe' is not a single token")
    assert "may" in msg and "##be" in msg
    (tmp_path / "vocab.txt").write_text("\n".join(v for v in vocab if v not in ("may", "##be")) + "\n")
    with pytest.raises(ConfigError, match="verbalizer 'maybe'"):  # unknown word: [UNK] is no verbalizer
        cloze_task("cb", SG / "CB", BertTokenizerFast(vocab=str(tmp_path / "vocab.txt")))


@pytest.mark.parametrize("name, folder", [("copa", "COPA"), ("multirc", "MultiRC"), ("record", "ReCoRD")])
def test_tasks_without_a_cloze_formulation_refuse_it(tokenizer, name, folder):
    want = rf"^task.formulation: task {name} supports only classification, not 'cloze'$"
    with pytest.raises(ConfigError, match=want):
        cloze_task(name, SG / folder, tokenizer)


def test_classification_formulation_is_unchanged(tokenizer):
    task = build_task(TaskConfig(name="rte", data_dir=str(SG / "RTE")), tokenizer)
    assert task.head == "classification" and "mask_positions" not in task.features("dev")[0]


def test_bad_formulation_names_the_key():
    with pytest.raises(ConfigError, match=r"^task.formulation: must be classification or cloze, got 'mlm'$"):
        TaskConfig(formulation="mlm").check()


def test_rte_cloze_trains_with_prefix_in_process(bert_dir):
    from tests.tiny import build_zero3

    run, built, task = build_zero3(bert_dir, "task.name=rte", f"task.data_dir={SG / 'RTE'}", "task.formulation=cloze",
                                   "prompt.method=prefix", "task.max_seq_length=64", "train.lr=3e-2")
    assert task.head == "cloze" and type(built.engine.module.heads["rte"]).__name__ == "ClozeHead"
    assert sum(p.numel() for p in built.engine.module.heads.parameters()) == 0
    feats = task.features("train")
    losses = []
    built.engine.train()
    for step in range(4):
        i = 4 * step % (len(feats) - 4)
        loss = built.engine(task.collate(feats[i:i + 4]), task.name).loss
        built.engine.backward(loss)
        built.engine.step()
        losses.append(loss.item())
    assert all(0 < x < 10 for x in losses), losses  # finite, not diverged
    built.engine.eval()
    dev = task.features("dev")
    with torch.no_grad():
        logits = built.engine(task.collate(dev[0:len(dev)]), task.name).logits
    assert logits.shape == (len(dev), 2)
    preds = task.predict(logits.float(), dev[0:len(dev)])
    assert [p["label"] for p in preds] == [task.labels[i] for i in logits.argmax(-1).tolist()]
    assert set(task.metrics(preds, "dev")) == {"acc"}


# ------------------------------------------------------------------------------------------ GLM
def save_cloze_glm(directory):
    """A tiny random GLM (original layout) whose GPT-2 BPE has the pattern words and the verbalizers
    (`` yes``, `` no``) as single tokens."""
    from tokenizers import ByteLevelBPETokenizer

    from deepprompt.models.glm.checkpoint import save_original
    from tests.models.glm.tiny_glm import tiny_model
    from tests.tasks.sentence_tiny import fixture_texts

    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    corpus = fixture_texts() + ["Question: yes? Answer: no."] * 50
    bpe.train_from_iterator(corpus, vocab_size=600, min_frequency=1, special_tokens=["<|endoftext|>"])
    bpe.save_model(str(directory))
    vocab = (bpe.get_vocab_size() + 8 + 7) // 8 * 8
    model = tiny_model(0, vocab_size=vocab, max_position_embeddings=128, hidden_dropout=0.1, attention_dropout=0.1)
    save_original(model, directory, mp=1)
    return directory


@pytest.mark.multirank
def test_rte_cloze_two_rank_zero3_run_on_glm(tmp_path):
    from deepprompt.models.loading import load_tokenizer_and_config
    from tests.engine.test_end_to_end import VENV_BIN
    from tests.tiny import free_port, launch_env

    model_dir = save_cloze_glm(tmp_path / "glm")
    tok, _ = load_tokenizer_and_config(str(model_dir))
    task = cloze_task("rte", SG / "RTE", tok, max_seq_length=96)
    f = task.features("dev")[0]
    assert len(tok(" yes", add_special_tokens=False)["input_ids"]) == 1
    assert f["input_ids"][0] == tok.cls_token_id and f["input_ids"][f["mask_positions"]] == tok.mask_token_id
    assert f["candidate_ids"] == [tok(" yes", add_special_tokens=False)["input_ids"][0],
                                  tok(" no", add_special_tokens=False)["input_ids"][0]]
    out = tmp_path / "run"
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--hostfile", "hostfile.example", "--no_ssh_check",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "launcher/train.py",
           "--ds_config", "ds_configs/zero3.json", f"model.path={model_dir}", "task.name=rte",
           f"task.data_dir={SG / 'RTE'}", "task.formulation=cloze", "prompt.method=prefix", "prompt.length=4",
           "task.max_seq_length=96", "train.max_steps=6", "train.batch_size=8", "train.micro_batch_size=4",
           "train.eval_every=3", "train.eval_batch_size=4", "train.lr=3e-2", f"output_dir={out}"]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["world_size"] == 2 and r["steps"] == 6 and r["frozen_backbone"]["unchanged"] is True
    assert 0 < r["train_loss"]["first"] < 10 and 0 < r["train_loss"]["last"] < 10
    c_layers, c_hidden = 2, 32
    assert r["params"]["trainable"] == 4 * c_layers * 2 * c_hidden  # the prefix only: cloze has no parameters
    t = r["tasks"]["rte"]
    assert t["main_metric"] == "acc" and set(t["last"]) == {"dev_acc"}
    assert t["last"]["dev_acc"] in {100.0 * k / 4 for k in range(5)}  # 4 dev examples
    desc = json.loads((out / "artifact" / "prompts.json").read_text())
    assert [(x["name"], x["head"]) for x in desc["tasks"]] == [("rte", "cloze")]
