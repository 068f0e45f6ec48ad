"""Raw records in a SuperGLUE task's own format (no label) through the serving path give the same
predictions as the task's features read from its files."""
import json

import pytest
import torch

from deepprompt.artifacts import load_artifact, save_artifact
from deepprompt.engine.serving import build_server, predict
from tests.artifact_utils import plain_model, run_config, train_briefly
from tests.tasks.sentence_tiny import save_sentence_bert
from tests.tiny import FIXTURES


@pytest.mark.parametrize("task, folder", [("rte", "RTE"), ("copa", "COPA")])
def test_raw_records_predict_like_the_file_features(tmp_path, task, folder):
    path = save_sentence_bert(tmp_path / "bert")
    run = run_config(path, f"task.name={task}", f"task.data_dir={FIXTURES / 'superglue' / folder}",
                     "task.max_seq_length=64")
    model, t = plain_model(run)
    train_briefly(model, t, steps=2)
    art = save_artifact(model, run, [t], str(path), tmp_path / "artifact")
    rows = [json.loads(line) for line in (FIXTURES / "superglue" / folder / "val.jsonl").read_text().splitlines()]
    records = [{"task": task, **{k: v for k, v in r.items() if k != "label"}} for r in rows]
    out = predict(build_server([load_artifact(art)]), records, batch_size=3)
    with torch.no_grad():
        feats = t.features("dev")[:]
        expected = t.predict(model(t.collate(feats), task).logits, feats)
    assert [r["label"] for r in out] == [p["label"] for p in expected]
    assert all(r["label"] in t.labels for r in out) and out[0]["premise"] == rows[0]["premise"]
