"""Serving decoder artifacts: a mixed-task batch of two generation artifacts (different prefix
lengths and depths) on one tiny grouped-query backbone generates what each artifact generates alone."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from deepprompt.artifacts import load_artifact, save_artifact
from deepprompt.config import load_config
from deepprompt.engine.serving import build_server, predict
from deepprompt.models.backbones.decoder import DecoderAdapter
from deepprompt.models.loading import load_tokenizer_and_config
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.registry import HEADS, PROMPTS, TASKS
from deepprompt.tasks import build_task
from deepprompt.tasks.generation import Generation
from tests.decoder_tiny import save_tiny_decoder, write_generation_data
from tests.tiny import REPO, launch_env

SECOND = "generation-b"
if SECOND not in TASKS:
    TASKS.register(SECOND)(type("GenerationB", (Generation,), {}))
PROMPT_TEXTS = ["what is the answer ? red", "what is the answer ?", "the cat", "one two three four"]


def plain_decoder_model(path, data, task_name, *overrides, seed=0):
    run = load_config(None, [f"model.path={path}", f"task.name={task_name}", f"task.data_dir={data}",
                             "task.max_seq_length=32", "task.max_new_tokens=5", "prompt.dropout=0.0", *overrides])
    tokenizer, _ = load_tokenizer_and_config(str(path))
    task = build_task(run.task, tokenizer)
    backbone = DecoderAdapter.load_model(str(path), torch.float32)
    adapter = DecoderAdapter(backbone)
    torch.manual_seed(seed)
    prompt = PROMPTS.get(run.prompt.method)(run.prompt, adapter.spec())
    with torch.no_grad():
        for p in prompt.parameters():
            p.normal_(0, 1.0)
    model = PromptedModel(backbone, adapter, prompt, {task.name: HEADS.get(task.head)(adapter.spec().hidden)})
    return model.eval(), run, task


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder-serving")
    path = save_tiny_decoder(root / "model", "qwen2")
    data = write_generation_data(root / "data", n_train=4, n_dev=2)
    m1, run1, t1 = plain_decoder_model(path, data, "generation", "prompt.length=4")
    first = save_artifact(m1, run1, [t1], str(path), root / "a")
    m2, run2, t2 = plain_decoder_model(path, data, SECOND, "prompt.length=2", "prompt.layers=[-1]",
                                       "task.max_new_tokens=3", seed=1)
    second = save_artifact(m2, run2, [t2], str(path), root / "b")
    return first, second


def records():
    return [{"task": "generation" if i % 2 == 0 else SECOND, "prompt": t, "id": i}
            for i, t in enumerate(PROMPT_TEXTS + PROMPT_TEXTS)]


def test_mixed_generation_batches_equal_each_artifact_alone(artifacts):
    first, second = artifacts
    both = build_server([load_artifact(first), load_artifact(second)])
    mixed = predict(both, records(), batch_size=3)
    assert [r["id"] for r in mixed] == [r["id"] for r in records()]
    assert all(isinstance(r["text"], str) for r in mixed)
    for art, task in ((first, "generation"), (second, SECOND)):
        alone = predict(build_server([load_artifact(art)]), [r for r in records() if r["task"] == task])
        assert alone == [r for r in mixed if r["task"] == task]
    a = [r["text"] for r in mixed if r["task"] == "generation"]
    b = [r["text"] for r in mixed if r["task"] == SECOND]
    assert a != b  # the two prefixes really differ
    assert all(len(t.split()) <= 3 for t in b)  # each task keeps its own max_new_tokens


def test_predict_launcher_generates_from_raw_prompts(artifacts, tmp_path):
    first, _ = artifacts
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"task": "generation", "prompt": t}) + "\n"
                                               for t in PROMPT_TEXTS))
    proc = subprocess.run([sys.executable, "launcher/predict.py", "--artifact", str(first), "--input",
                           str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == len(PROMPT_TEXTS) and all("text" in r for r in rows)
