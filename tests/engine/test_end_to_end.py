"""Training runs through the real entry point: 1 rank in a subprocess, 2 ranks through the real
DeepSpeed launcher with the README's hostfile and flags."""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.tiny import FIXTURES, REPO, save_tiny, save_tiny_bert, free_port, launch_env

VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def common_args(model, out, method="prefix", steps=30):
    lr = "1e-3" if method == "finetune" else "3e-2"
    return [f"model.path={model}", f"task.data_dir={FIXTURES / 'wnut16'}", f"prompt.method={method}",
            "prompt.length=4", "task.max_seq_length=32", f"train.max_steps={steps}", "train.batch_size=8", "train.micro_batch_size=4",
            "train.eval_every=10", "train.eval_batch_size=8", f"train.lr={lr}", f"output_dir={out}"]


def run_single(args, timeout=300):
    return subprocess.run([sys.executable, "launcher/train.py", "--ds_config", "ds_configs/zero3.json", *args],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.multirank
def test_two_rank_zero3_run_through_the_launcher(tiny_model, tmp_path):
    out = tmp_path / "run"
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--hostfile", "hostfile.example", "--no_ssh_check",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "launcher/train.py", "--ds_config", "ds_configs/zero3.json", *common_args(tiny_model, out)]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    for key in ("method", "model", "world_size", "steps", "seed", "params", "train_loss", "tasks", "artifact",
                "resumed_from"):
        assert key in r
    assert r["resumed_from"] is None
    assert len(r["peak_rss_mb_per_rank"]) == 2 and all(100 < mb < 20000 for mb in r["peak_rss_mb_per_rank"])
    from pathlib import Path
    assert (Path(r["artifact"]) / "prompts.safetensors").is_file() and (Path(r["artifact"]) / "prompts.json").is_file()
    assert r["world_size"] == 2 and r["steps"] == 30 and r["method"] == "prefix"
    p = r["params"]
    # the optimizer holds fp32 master + 2 Adam moments of the TRAINABLE params only (plus DeepSpeed's
    # alignment padding of each rank's flat partition), never anything of the frozen backbone
    assert 3 * p["trainable"] <= p["optimizer_state_numel"] <= 3 * p["trainable"] + 3 * 2 * 64
    assert p["optimizer_state_numel"] < 0.2 * 3 * p["total"]
    frozen = p["total"] - p["trainable"]
    assert r["frozen_backbone"]["unchanged"] is True and r["frozen_backbone"]["numel"] == frozen
    # ZeRO-3 shards the frozen backbone: each rank stores about half of it, never all of it
    assert len(p["frozen_numel_per_rank"]) == 2
    assert all(0.45 * frozen <= n <= 0.55 * frozen for n in p["frozen_numel_per_rank"])
    assert r["train_loss"]["last"] < r["train_loss"]["first"]
    task = r["tasks"]["wnut16"]
    assert {"dev_f1", "test_f1"} <= set(task["last"]) and {"dev_f1", "test_f1", "step"} <= set(task["best_dev"])
    assert (out / "tensorboard").is_dir()
    # every rank keeps its own full log; only rank 0 prints INFO to the console
    for rank in (0, 1):
        assert "world 2 rank(s)" in (out / "logs" / f"rank{rank}.log").read_text()
    assert proc.stderr.count("world 2 rank(s)") + proc.stdout.count("world 2 rank(s)") == 1


@pytest.mark.parametrize("method", ["finetune", "prompt", "ptuning", "prefix"])
def test_every_method_trains_on_one_rank(tiny_model, tmp_path, method):
    out = tmp_path / method
    proc = run_single(common_args(tiny_model, out, method, steps=20))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["train_loss"]["last"] < 0.8 * r["train_loss"]["first"]
    if method == "finetune":
        assert r["params"]["trainable"] == r["params"]["total"] and r["frozen_backbone"]["unchanged"] is None
    else:
        assert r["frozen_backbone"]["unchanged"] is True


@pytest.mark.parametrize("override, message", [
    ("model.path=/no/such/model", "model.path: /no/such/model does not exist"),
    ("prompt.method=lora", "prompt.method: unknown prompt method 'lora'"),
    ("train.batch_size=6", "batch sizes do not multiply out: train_batch_size 6 is not divisible by micro batch 4"),
])
def test_bad_input_is_one_line(tiny_model, tmp_path, override, message):
    proc = run_single([*common_args(tiny_model, tmp_path / "bad"), override], timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("deepprompt: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_prompt_longer_than_positions_is_refused(tiny_model, tmp_path):
    # the tiny model has 64 positions; an input prompt of 40 + max_seq_length 32 cannot fit
    args = [*common_args(tiny_model, tmp_path / "bad", "prompt"), "prompt.length=40", "task.max_seq_length=32"]
    proc = run_single(args, timeout=120)
    assert proc.returncode == 2
    assert "prompt.length: 40 prompt tokens + task.max_seq_length 32 = 72 exceeds the backbone's 64 positions" in proc.stderr


@pytest.mark.parametrize("family", ["roberta", "deberta-v2", "mpnet"])
def test_prefix_trains_on_other_backbone_families(tmp_path, family):
    model = save_tiny(family, tmp_path / family)
    out = tmp_path / "run"
    proc = run_single(common_args(model, out, "prefix", steps=20))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["train_loss"]["last"] < 0.8 * r["train_loss"]["first"]
    assert r["frozen_backbone"]["unchanged"] is True


def test_bf16_from_the_deepspeed_json(tiny_model, tmp_path):
    out = tmp_path / "bf16"
    proc = subprocess.run([sys.executable, "launcher/train.py", "--ds_config", "ds_configs/zero3_bf16.json",
                           *common_args(tiny_model, out, "prefix", steps=20)],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["precision"] == "bf16"
    # bf16 weights, but the optimizer keeps an fp32 master copy of the trainable params only
    assert r["params"]["optimizer_state"]["master"] >= r["params"]["trainable"]
    assert r["train_loss"]["last"] < 0.8 * r["train_loss"]["first"] and r["frozen_backbone"]["unchanged"] is True


def test_installed_command_trains_by_epochs_on_a_cosine_schedule(tiny_model, tmp_path):
    """``deepprompt train`` (``python -m deepprompt`` is the console script's entry point) with HF's
    ``--deepspeed`` spelling; train.epochs becomes steps from the data; the lr follows the cosine."""
    out = tmp_path / "run"
    args = [a for a in common_args(tiny_model, out) if not a.startswith("train.max_steps=")]
    proc = subprocess.run([sys.executable, "-m", "deepprompt", "train", "--deepspeed", "ds_configs/zero3.json", *args,
                           "train.max_steps=null", "train.epochs=2", "train.lr_scheduler=cosine",
                           "train.warmup_ratio=0.2"], cwd=REPO, env=launch_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sentences = len([b for b in (FIXTURES / "wnut16" / "train").read_text().split("\n\n") if b.strip()])
    steps = math.ceil(2 * sentences / 8)  # global batch 8
    assert f"train.epochs 2 = {steps} steps ({sentences} training examples / global batch 8 per step)" in proc.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["steps"] == r["max_steps"] == steps and r["train_loss"]["last"] < r["train_loss"]["first"]
    lrs = [json.loads(line)["lr"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    warmup = int(0.2 * steps)
    # step s+1 runs at factor(s), and train_log records the rate each step trained at
    factor = [(s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
              for s in range(steps)]
    assert lrs == pytest.approx([3e-2 * f for f in factor])
    saved = json.loads((out / "run_config.json").read_text())["train"]
    assert (saved["max_steps"], saved["epochs"], saved["lr_scheduler"]) == (None, 2.0, "cosine")
