"""SuperGLUE through the real entry point, on the fixtures and a tiny random backbone, one run per
head family, each producing results.json with the task's metrics: classification (RTE) on 2 ranks
under ZeRO-3 through the DeepSpeed launcher; multiple choice (COPA) on 1 rank (ZeRO-3 too)."""
import json
import os
import subprocess
import sys

import pytest

from tests.tasks.sentence_tiny import save_sentence_bert
from tests.tiny import FIXTURES, REPO, free_port, launch_env

VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_sentence_bert(tmp_path_factory.mktemp("sentence_bert"))


def _args(model, task, folder, out):
    return [f"model.path={model}", f"task.name={task}", f"task.data_dir={FIXTURES / 'superglue' / folder}",
            "prompt.length=4", "task.max_seq_length=64", "train.max_steps=20", "train.batch_size=8",
            "train.micro_batch_size=4", "train.eval_every=10", "train.eval_batch_size=4", "train.lr=3e-2",
            f"output_dir={out}"]


def _check(out, task, head, world):
    r = json.loads((out / "results.json").read_text())
    assert r["world_size"] == world and r["steps"] == 20
    assert r["frozen_backbone"]["unchanged"] is True
    assert 0 < r["train_loss"]["first"] < 10 and 0 < r["train_loss"]["last"] < 10  # finite, not diverged
    t = r["tasks"][task]
    assert t["main_metric"] == "acc"
    # SuperGLUE's test split is unlabelled: dev metrics only, no test_* keys
    assert set(t["last"]) == {"dev_acc"} and set(t["best_dev"]) == {"dev_acc", "step"}
    assert 0.0 <= t["last"]["dev_acc"] <= 100.0
    desc = json.loads((out / "artifact" / "prompts.json").read_text())
    assert [(x["name"], x["head"]) for x in desc["tasks"]] == [(task, head)]


@pytest.mark.multirank
def test_rte_two_rank_zero3_run_through_the_launcher(tiny_model, tmp_path):
    out = tmp_path / "run"
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--hostfile", "hostfile.example", "--no_ssh_check",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "launcher/train.py", "--ds_config", "ds_configs/zero3.json", *_args(tiny_model, "rte", "RTE", out)]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check(out, "rte", "classification", world=2)


def test_copa_multiple_choice_run(tiny_model, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "launcher/train.py", "--ds_config", "ds_configs/zero3.json",
           *_args(tiny_model, "copa", "COPA", out)]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(out, "copa", "multiple_choice", world=1)
