"""Multi-task training and MPT-2 through the real entry point: a 2-rank ZeRO-3 run over a tagging
and a classification task finishes and reports both; stage 2 starts from its artifact; a resumed
multi-task run draws and reads exactly what an uninterrupted one does."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from deepprompt.engine import checkpoint
from tests.tiny import FIXTURES, REPO, save_tiny_bert, free_port, launch_env

VENV_BIN = os.path.dirname(sys.executable)
# two task families: token tagging and sentence(-pair) classification
SECOND, SECOND_DIR = "rte", FIXTURES / "superglue" / "RTE"  # RTE has no labelled test split


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bert"), dropout=0.0)


def multi_args(model, out, steps=12, *extra):
    return [f"model.path={model}", "task.max_seq_length=32", "prompt.length=4",
            f"tasks=[{{name: wnut16, data_dir: {FIXTURES / 'wnut16'}}}, {{name: {SECOND}, data_dir: {SECOND_DIR}}}]",
            "mixer.policy=equal", f"train.max_steps={steps}", "train.batch_size=8", "train.micro_batch_size=4",
            "train.eval_every=6", "train.eval_batch_size=8", "train.lr=3e-2", "prompt.dropout=0.0",
            "task.head_dropout=0.0", f"output_dir={out}", *extra]


def run(cmd, timeout=600):
    return subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout)


def one_rank(*args):
    return [sys.executable, "launcher/train.py", "--ds_config", "ds_configs/zero3.json", *args]


def train_log(out):
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.multirank
def test_two_rank_zero3_multitask_run_then_stage2_from_its_artifact(model_dir, tmp_path):
    out = tmp_path / "stage1"
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "launcher/train.py", "--ds_config", "ds_configs/zero3.json",
           *multi_args(model_dir, out)]
    proc = run(cmd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["world_size"] == 2 and set(r["tasks"]) == {"wnut16", SECOND}
    # every task is evaluated on dev (and test where it has one), last and best-dev
    assert {"dev_f1", "test_f1"} <= set(r["tasks"]["wnut16"]["last"])
    assert {"dev_f1", "test_f1", "step"} <= set(r["tasks"]["wnut16"]["best_dev"])
    assert set(r["tasks"][SECOND]["last"]) == {"dev_acc"} and set(r["tasks"][SECOND]["best_dev"]) == {"dev_acc", "step"}
    # the mixture actually drawn, as the per-step log shows it
    drawn = r["mixture"]["steps"]
    log = train_log(out)
    assert sum(drawn.values()) == 12 and all(n > 0 for n in drawn.values())
    assert {name: sum(1 for line in log if line["task"] == name) for name in drawn} == drawn
    assert r["mixture"]["rates"] == {"wnut16": 0.5, SECOND: 0.5}
    assert r["best_dev_criterion"] == f"mean(wnut16 {r['tasks']['wnut16']['main_metric']}, " \
                                      f"{SECOND} {r['tasks'][SECOND]['main_metric']})"
    assert r["frozen_backbone"]["unchanged"] is True
    desc = json.loads((out / "artifact" / "prompts.json").read_text())
    assert [t["name"] for t in desc["tasks"]] == ["wnut16", SECOND]

    # stage 2: one task, the same launcher, the prompt (and the wnut16 head) from stage 1
    out2 = tmp_path / "stage2"
    proc = run(one_rank(f"model.path={model_dir}", f"task.data_dir={FIXTURES / 'wnut16'}", "task.max_seq_length=32",
                        "prompt.length=4", "train.max_steps=4", "train.batch_size=8", "train.micro_batch_size=4",
                        "train.eval_every=0", f"output_dir={out2}", f"prompt.init_from={out / 'artifact'}",
                        "prompt.init_head=true"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r2 = json.loads((out2 / "results.json").read_text())
    assert r2["init_from"]["heads"] == ["wnut16"] and r2["init_from"]["stage1_tasks"] == ["wnut16", SECOND]
    assert set(r2["tasks"]) == {"wnut16"} and r2["mixture"]["steps"] == {"wnut16": 4}
    # a mismatched prompt is one line, exit 2
    proc = run(one_rank(f"model.path={model_dir}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=6",
                        "task.max_seq_length=32", f"output_dir={tmp_path / 'bad'}", f"prompt.init_from={out / 'artifact'}"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "prompt.init_from: artifact" in proc.stderr and "has prompt.length=4 but this run has prompt.length=6" in proc.stderr


def test_a_resumed_multitask_run_draws_and_trains_exactly_as_an_uninterrupted_one(model_dir, tmp_path):
    ref = tmp_path / "ref"
    proc = run(one_rank(*multi_args(model_dir, ref, 12, "train.save_every=4", "train.keep_checkpoints=0")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the same run killed after its step-4 save: keep only that checkpoint, re-run the same command
    cut = tmp_path / "cut"
    shutil.copytree(ref, cut)
    root = checkpoint.checkpoint_root(cut)
    for later in ("step_00000008", "step_00000012"):
        shutil.rmtree(root / later)
    (root / "latest").write_text("step_00000004\n")
    (cut / "results.json").unlink()
    state = checkpoint.read_state(root / "step_00000004")
    assert sum(t["steps_drawn"] for t in state["mixer"]["tasks"].values()) == 4
    proc = run(one_rank(*multi_args(model_dir, cut, 12, "train.save_every=4", "train.keep_checkpoints=0")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r, r_ref = json.loads((cut / "results.json").read_text()), json.loads((ref / "results.json").read_text())
    assert r["resumed_from"] == 4
    assert train_log(cut) == train_log(ref)  # task and loss of every step, bit for bit
    assert r["mixture"] == r_ref["mixture"]
    a, b = (load_file(str(checkpoint.find_latest(d) / checkpoint.TENSORS)) for d in (ref, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
