"""Generation tasks: JSONL prompt/response (configurable fields) and chat messages, squad_gen,
features (loss on the response only), one-line errors naming file:line, metrics."""
from __future__ import annotations

import json
import logging

import pytest

from deepprompt.config import TaskConfig
from deepprompt.errors import DataError
from deepprompt.metrics.generation import generation_metrics
from deepprompt.tasks import build_task
from tests.decoder_tiny import tiny_tokenizer, write_generation_data
from tests.tiny import FIXTURES


def task(tmp_path, chat_template=True, **kw):
    return build_task(TaskConfig(name="generation", data_dir=str(tmp_path), max_seq_length=32, **kw),
                      tiny_tokenizer(chat_template))


def test_prompt_response_features_carry_loss_on_the_response_and_eos_only(tmp_path):
    write_generation_data(tmp_path, n_train=4, n_dev=2)
    t = task(tmp_path)
    f = t.features("train")[0]
    tok = t.tokenizer
    assert tok.decode(f["prompt_ids"]) == "what is the answer ? red"
    assert f["input_ids"] == f["prompt_ids"] + tok("red", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(f["prompt_ids"])
    assert f["labels"][:n] == [-100] * n and f["labels"][n:] == f["input_ids"][n:]
    assert t.features("dev")[0]["references"] == ["blue"]


def test_field_names_are_configurable_adgen_layout(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"content": "what is red", "summary": ["red", "blue"]}) + "\n")
    t = task(tmp_path, prompt_field="content", response_field="summary")
    rec = t.read_examples("train")[0]
    assert rec["prompt"] == "what is red" and rec["references"] == ["red", "blue"]


def test_chat_messages_are_rendered_with_the_chat_template(tmp_path):
    write_generation_data(tmp_path, n_train=2, n_dev=1, chat=True)
    t = task(tmp_path)
    rec = t.read_examples("train")[0]
    assert rec["prompt"] == "user : what is the answer ? red </s> assistant : " and rec["references"] == ["red"]
    f = t.features("train")[0]
    assert t.tokenizer.decode(f["input_ids"][len(f["prompt_ids"]):]) == "red </s>"


def test_max_eval_examples_cuts_dev_and_says_so(tmp_path, caplog):
    write_generation_data(tmp_path, n_train=2, n_dev=5)
    with caplog.at_level(logging.INFO, logger="deepprompt"):
        assert len(task(tmp_path, max_eval_examples=3).read_examples("dev")) == 3
    assert "generation/dev: scoring the first 3 of 5 examples (task.max_eval_examples)" in caplog.text


def test_a_row_without_a_response_names_file_and_line(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n\n"
                                          + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(DataError, match=rf"^{tmp_path}/train.jsonl:3: no response: field 'response'") as e:
        task(tmp_path).read_examples("train")
    assert "\n" not in str(e.value)


def test_chat_messages_without_a_chat_template_name_file_and_line(tmp_path):
    write_generation_data(tmp_path, n_train=2, n_dev=1, chat=True)
    with pytest.raises(DataError, match=rf"^{tmp_path}/train.jsonl:1: chat messages need a chat template"):
        task(tmp_path, chat_template=False).read_examples("train")


def test_last_message_must_be_the_assistants(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "a"}]}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:1: the last of the 'messages' must be the assistant"):
        task(tmp_path).read_examples("train")


def test_long_examples_cut_the_prompt_from_the_left(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": " ".join(["a"] * 40) + " what", "response": "red"}) + "\n")
    f = task(tmp_path).features("train")[0]
    assert len(f["input_ids"]) == 32 and f["prompt_ids"][-1] == task(tmp_path).tokenizer.convert_tokens_to_ids("what")


def test_squad_gen_reads_squad_json_and_scores_with_squad_em_f1():
    t = build_task(TaskConfig(name="squad_gen", data_dir=str(FIXTURES / "squad"), max_seq_length=64),
                   tiny_tokenizer())
    recs = t.read_examples("dev")
    assert recs[0]["prompt"].startswith("Context: ") and recs[0]["prompt"].endswith("\nAnswer:")
    assert t.head == "lm" and t.main_metric == "f1"
    preds = [{"id": r["id"], "text": r["references"][0]} for r in recs]
    assert t.metrics(preds, "dev") == {"exact_match": 100.0, "f1": 100.0}
    assert t.metrics([{**p, "text": "zzz"} for p in preds], "dev")["exact_match"] == 0.0


def test_generation_metrics():
    m = generation_metrics(["the cat sat on the mat", "a dog ran home today"],
                           [["the cat sat on the mat"], ["the dog ran", "a dog ran home today"]])
    assert m["exact_match"] == 100.0 and m["rouge1"] == 100.0 and m["bleu4"] == pytest.approx(100.0)
    m = generation_metrics(["the cat"], [["the cat sat on the mat"]])
    assert 0 < m["rougeL"] < 100 and m["exact_match"] == 0.0 and m["bleu4"] < 100


def test_generation_task_scores_predictions_by_id(tmp_path):
    write_generation_data(tmp_path, n_train=2, n_dev=4)
    t = task(tmp_path)
    ids = [f["id"] for f in t.features("dev")]
    refs = [f["references"][0] for f in t.features("dev")]
    assert t.metrics([{"id": i, "text": r} for i, r in zip(ids, refs)], "dev")["exact_match"] == 100.0
    assert t.metrics([{"id": i, "text": "zzz"} for i in ids], "dev")["exact_match"] == 0.0
    generated = [t.tokenizer(r, add_special_tokens=False)["input_ids"] for r in refs]
    assert [p["text"] for p in t.predict(generated, t.features("dev")[:4])] == refs


def test_preflight_counts_the_generated_tokens_against_the_positions(tmp_path):
    from deepprompt.config import load_config
    from deepprompt.engine import preflight
    from deepprompt.models.loading import resolve_backbone
    from deepprompt.errors import ConfigError
    from tests.decoder_tiny import save_tiny_decoder

    model = save_tiny_decoder(tmp_path / "model", "llama")  # 64 positions
    data = write_generation_data(tmp_path / "data", n_train=2, n_dev=1)
    ok = load_config(None, [f"model.path={model}", "task.name=generation", f"task.data_dir={data}",
                            "task.max_seq_length=56", "task.max_new_tokens=8"])
    preflight.check_positions(ok, resolve_backbone(str(model)))
    bad = load_config(None, [f"model.path={model}", "task.name=generation", f"task.data_dir={data}",
                             "task.max_seq_length=60", "task.max_new_tokens=8"])
    with pytest.raises(ConfigError, match=r"^task.max_seq_length: 60 \+ task.max_new_tokens 8 generated = 68 "
                                          r"exceeds the backbone's 64 positions"):
        preflight.check_positions(bad, resolve_backbone(str(model)))
