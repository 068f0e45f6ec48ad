"""A tiny grouped-query decoder (llama) on a generation task through the real entry point: 2 ranks
under ZeRO-3 with evaluation by generation (an odd dev set: one rank generates on padding), and a
SIGTERM + resume that continues bit for bit."""
from __future__ import annotations

import json
import os
import signal
import sys

import pytest
import torch

from deepprompt.engine.signals import EXIT_PREEMPTED
from tests.decoder_tiny import save_tiny_decoder, write_generation_data
from tests.engine.test_resume import final_state, losses, run, run_until_step
from tests.tiny import free_port

VENV_BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder")
    return save_tiny_decoder(root / "model", "llama"), write_generation_data(root / "data", n_train=64, n_dev=7)


def args(files, out, steps, *extra):
    model, data = files
    return [f"model.path={model}", "task.name=generation", f"task.data_dir={data}", "prompt.length=4",
            "task.max_seq_length=32", "task.max_new_tokens=3", f"train.max_steps={steps}", "train.batch_size=8",
            "train.micro_batch_size=4", "train.eval_batch_size=2", "train.lr=3e-2", "prompt.dropout=0.0",
            f"output_dir={out}", *extra]


def command(files, out, ranks, steps, *extra):
    script = ["launcher/train.py", "--ds_config", "ds_configs/zero3.json", *args(files, out, steps, *extra)]
    if ranks == 1:
        return [sys.executable, *script]
    return [os.path.join(VENV_BIN, "deepspeed"), "--num_gpus", str(ranks), "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), *script]


@pytest.mark.multirank
def test_two_rank_zero3_generation_run_evaluates_by_generating(files, tmp_path):
    out = tmp_path / "run"
    proc = run(command(files, out, 2, 30, "train.eval_every=15", "task.do_sample=true", "task.sample_seed=3"),
               timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["world_size"] == 2 and r["steps"] == 30
    assert r["frozen_backbone"]["unchanged"] is True
    assert r["train_loss"]["last"] < r["train_loss"]["first"]
    dev = r["tasks"]["generation"]["last"]
    assert {"dev_rouge1", "dev_rouge2", "dev_rougeL", "dev_bleu4", "dev_exact_match"} <= set(dev)
    # trainable = P x layers x 2 x kv_heads x head_dim
    assert r["params"]["trainable"] == 4 * 2 * 2 * 2 * 8


def test_sigterm_and_resume_of_a_generation_run_is_bit_identical(files, tmp_path):
    extra = ("train.eval_every=0", "train.save_every=3")
    ref = tmp_path / "ref"
    proc = run(command(files, ref, 1, 12, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run"
    code, output = run_until_step(command(files, out, 1, 12, *extra), out, 4, signal.SIGTERM)
    assert code == EXIT_PREEMPTED, output[-3000:]
    proc = run(command(files, out, 1, 12, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["resumed_from"] is not None
    assert losses(out) == losses(ref)
    a, b = final_state(ref), final_state(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_launcher_on_a_generation_artifact_reproduces_the_runs_dev_scores(files, tmp_path):
    out = tmp_path / "run"
    proc = run(command(files, out, 1, 40, "train.eval_every=0", "train.lr=3e-1", "train.warmup_ratio=0"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = json.loads((out / "results.json").read_text())["tasks"]["generation"]["last"]
    assert last["dev_exact_match"] > 0  # it learned the copy task, so equality below means something
    scored = tmp_path / "eval"
    proc = run([sys.executable, "launcher/evaluate.py", "--artifact", str(out / "artifact"), "--splits", "dev",
                f"output_dir={scored}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((scored / "eval_results.json").read_text())
    assert r["task"] == "generation" and r["num_examples"] == {"dev": 7}
    assert {f"dev_{k}": v for k, v in r["metrics"]["dev"].items()} == last
