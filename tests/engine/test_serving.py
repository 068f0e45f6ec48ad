"""Serving several artifacts on one backbone: raw JSONL in, one tag per word out; a batch mixing
tasks predicts what each artifact alone predicts; the launcher does the same from the shell."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from deepprompt.artifacts import load_artifact, save_artifact
from deepprompt.engine.serving import build_server, predict, read_jsonl
from deepprompt.errors import ConfigError, DataError
from tests.artifact_utils import plain_model, register_test_task, run_config, train_briefly
from tests.tiny import REPO, save_tiny_bert

SECOND = register_test_task()
TEXTS = ["john loves paris", "the new york times is in new york", "paris", "great show tonight in london"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """wnut16 (P=4 on every layer, trained briefly) and tiny-ner (P=2 on the top layer only,
    reparameterised, random): different lengths, depths and head widths on one backbone."""
    root = tmp_path_factory.mktemp("serving")
    path = save_tiny_bert(root / "bert")
    run = run_config(path)
    model, task = plain_model(run)
    train_briefly(model, task)
    first = save_artifact(model, run, [task], str(path), root / "wnut16")
    run2 = run_config(path, f"task.name={SECOND}", "prompt.length=2", "prompt.layers=[-1]", "prompt.reparam=true",
                      "prompt.reparam_hidden=8")
    model2, task2 = plain_model(run2, seed=1)
    with torch.no_grad():
        for p in list(model2.prompt.parameters()) + list(model2.heads.parameters()):
            p.normal_(0, 1.0)
    second = save_artifact(model2, run2, [task2], str(path), root / SECOND)
    return path, first, second


def records():
    out = []
    for i, text in enumerate(TEXTS):
        out.append({"task": "wnut16", "text": text, "id": f"a{i}"})
        out.append({"task": SECOND, "words": text.split(), "id": f"b{i}"})
    return out


def test_mixed_batches_predict_what_each_artifact_predicts_alone(artifacts):
    _, first, second = artifacts
    both = build_server([load_artifact(first), load_artifact(second)])
    mixed = predict(both, records(), batch_size=3)  # batches of 3 mix the two tasks
    assert [r["id"] for r in mixed] == [r["id"] for r in records()]
    for r in mixed:
        assert r["words"] == (r.get("text") or " ".join(r["words"])).split()
        assert len(r["tags"]) == len(r["words"])
    for art, task in ((first, "wnut16"), (second, SECOND)):
        alone = build_server([load_artifact(art)])
        mine = [r for r in records() if r["task"] == task]
        assert predict(alone, mine) == [r for r in mixed if r["task"] == task]
    labels = {"wnut16": set(both.tasks["wnut16"].labels), SECOND: {"O", "B-person", "I-person", "B-geo-loc", "I-geo-loc"}}
    assert all(set(r["tags"]) <= labels[r["task"]] for r in mixed)
    assert len({t for r in mixed for t in r["tags"]}) > 1  # not a constant prediction


def test_task_names_must_be_unique(artifacts):
    _, first, _ = artifacts
    with pytest.raises(ConfigError, match="task 'wnut16' is in both"):
        build_server([load_artifact(first), load_artifact(first)])


def test_bad_input_names_the_line(artifacts, tmp_path):
    _, first, _ = artifacts
    server = build_server([load_artifact(first)])
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"task": "wnut16", "text": "paris"}\n{"task": "wnut16", "text": "x"}\n{"task": "pos", "text": "x"}\n')
    with pytest.raises(DataError, match=r"in.jsonl:3: task 'pos' is not served \(served: wnut16\)"):
        predict(server, read_jsonl(bad))
    bad.write_text('{"task": "wnut16", "text": "  "}\n')
    with pytest.raises(DataError, match=r"in.jsonl:1: task wnut16 needs \"words\""):
        predict(server, read_jsonl(bad))


def test_predict_launcher(artifacts, tmp_path):
    _, first, second = artifacts
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records()))
    out = tmp_path / "out.jsonl"
    argv = ["launcher/predict.py", "--artifact", str(first), "--artifact", str(second), "--input", str(src),
            "--output", str(out), "--batch_size", "4"]
    # the test task is registered in the child too, then the launcher runs as from the shell
    code = ("import runpy, sys; from tests.artifact_utils import register_test_task; register_test_task(); "
            f"sys.argv = {argv!r}; runpy.run_path('launcher/predict.py', run_name='__main__')")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    both = build_server([load_artifact(first), load_artifact(second)])
    assert got == predict(both, records())


def test_a_single_input_prompt_artifact_is_served_on_its_own(artifacts, tmp_path):
    path = artifacts[0]
    run = run_config(path, "prompt.method=prompt")
    model, task = plain_model(run)
    art = save_artifact(model, run, [task], str(path), tmp_path / "lester")
    got = predict(build_server([load_artifact(art)]), [{"task": "wnut16", "text": t} for t in TEXTS])
    feats = [{**f, "id": i} for i, t in enumerate(TEXTS) for f in task.raw_features({"text": t})]
    with torch.no_grad():
        ref = task.predict(model(task.collate(feats), "wnut16").logits, feats)
    assert [r["tags"] for r in got] == [r["tags"] for r in ref]


def test_a_task_whose_labels_come_from_its_data_is_served_without_the_data(tmp_path):
    """custom_tagging learns its label list from the training file; the server rebuilds the task
    from the artifact's saved task config and label list, with no data at hand."""
    from tests.tiny import FIXTURES
    path = save_tiny_bert(tmp_path / "bert")
    data = tmp_path / "data"
    data.mkdir()
    for f in (FIXTURES / "custom_tagging").iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    run = run_config(path, "task.name=custom_tagging", f"task.data_dir={data}")
    model, task = plain_model(run)
    art = save_artifact(model, run, [task], str(path), tmp_path / "art")
    for f in data.iterdir():
        f.unlink()
    data.rmdir()
    server = build_server([load_artifact(art)])
    assert server.tasks["custom_tagging"].labels == task.labels
    out = predict(server, [{"task": "custom_tagging", "words": ["john", "loves", "paris"], "id": "x"}], batch_size=2)
    assert len(out[0]["tags"]) == 3 and set(out[0]["tags"]) <= set(task.labels)
