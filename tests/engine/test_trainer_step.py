"""The training loop's per-step bookkeeping: ONE collective per optimizer step whatever the
gradient accumulation, real tokens counted exactly, and the throughput/device figures of results.json."""
from __future__ import annotations

import pytest

from deepprompt.config import load_config
from deepprompt.engine import comm, throughput
from tests.tiny import FIXTURES, REPO, save_tiny_bert


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def test_one_collective_per_step_and_every_real_token_counted(model_dir, tmp_path, monkeypatch):
    from deepprompt.engine.trainer import Trainer

    steps = 6
    run = load_config(None, [f"model.path={model_dir}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4",
                             "task.max_seq_length=32", f"train.max_steps={steps}", "train.batch_size=8",
                             "train.micro_batch_size=4", "train.eval_every=0", "train.save_every=0",
                             "train.eval_batch_size=8", "train.peak_tflops=0.5", f"output_dir={tmp_path / 'out'}"])
    reduced = []
    real_reduce = comm.all_reduce
    monkeypatch.setattr(comm, "all_reduce", lambda t, op="sum", async_op=False:
                        reduced.append(t.numel()) or real_reduce(t, op, async_op))
    trainer = Trainer(run, str(REPO / "ds_configs/zero3.json"))
    assert trainer.grad_accum == 2  # 8 = micro 4 x accumulation 2 x 1 rank
    task = trainer.tasks[0]
    per_batch = []
    real_collate = task.collate
    monkeypatch.setattr(task, "collate", lambda feats: (lambda b: per_batch.append(
        (int(b["attention_mask"].sum()), b["attention_mask"].shape[0])) or b)(real_collate(feats)))
    reduced.clear()
    trainer.loop()
    assert reduced == [5] * steps  # one [loss, tokens, rows, stop, save-due] per step, not per micro-batch
    skip = trainer.meter.first_counted
    assert skip == 1  # the first step of a 6-step run is warm-up
    counted = per_batch[2 * skip:]  # two micro-batches per step
    assert trainer.meter.tokens == sum(t for t, _ in counted) and trainer.meter.rows == sum(r for _, r in counted)
    assert trainer.meter.steps == steps - skip

    results = trainer.finish()
    tp = results["throughput"]
    assert tp["steps_timed"] == steps - skip and tp["tokens_per_s"] > 0 and tp["step_time_s"] > 0
    assert tp["flops_per_token"] > 0
    assert tp["mfu"] == pytest.approx(tp["achieved_tflops_per_device"] / 0.5)
    assert results["device"]["accelerator"] == "cpu" and results["device"]["backend"] == "gloo"
    assert results["peak_accelerator_memory_mb_per_rank"] == [None]
    log = (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == steps  # every step logged, though its loss reached the host one step late


def test_flops_per_token_by_hand():
    # N = 1000 matmul params, 2 layers, h = 8, s = 10 real tokens, P = 4
    attn = 4 * 2 * 8 * (10 + 4)  # 896 forward
    frozen = throughput.FlopsModel(1000, 2, 8, 4, finetune=False, checkpointing=False, backward_layers=2)
    assert frozen.per_token(10) == 4 * 1000 + 3 * attn
    ft = throughput.FlopsModel(1000, 2, 8, 0, finetune=True, checkpointing=True, backward_layers=2)
    assert ft.per_token(10) == 8 * 1000 + 4 * (4 * 2 * 8 * 10)
    top = throughput.FlopsModel(1000, 2, 8, 4, finetune=False, checkpointing=False, backward_layers=1)
    assert top.per_token(10) == 2 * 1000 + 1000 + attn + attn  # backward through the top layer only


def test_default_peaks():
    assert throughput.default_peak_tflops("NVIDIA H200", "bf16") == 989.0
    assert throughput.default_peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0
    assert throughput.default_peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert throughput.default_peak_tflops("NVIDIA H100 80GB HBM3", "fp32") is None
    assert throughput.default_peak_tflops(None, "bf16") is None
