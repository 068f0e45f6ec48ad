"""``train.activation_checkpointing`` through ``ds_setup.build`` under ZeRO-3 with a frozen backbone:
in-process (1 rank) the losses and the prompt gradients equal a run without it, and 2 ranks through
the real launcher train to the same losses.

Frozen weights + non-reentrant checkpointing crashed in the backward before DeepSpeed PR #8148
(transformers#47254): the recompute's ZeRO-3 release re-partitioned a frozen weight that torch's
checkpoint still held. deepspeed 0.19.8 has the fix; one test takes it out again to show that these
tests meet exactly that crash without it.
"""
import json
import os
import subprocess

import pytest
import torch
from deepspeed.runtime.zero import partitioned_param_coordinator
from deepspeed.utils import safe_get_full_grad
from torch.utils.checkpoint import CheckpointError

from deepprompt.errors import ConfigError
from tests.engine.test_end_to_end import VENV_BIN, common_args
from tests.models.glm.tiny_glm import save_tiny_glm
from tests.tiny import REPO, build_zero3, free_port, launch_env, save_tiny_bert


@pytest.fixture(scope="module", params=["bert", "glm"])
def model_dir(request, tmp_path_factory):
    """A tiny model with dropout 0.1 (hidden and attention) on disk, with its tokenizer."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "glm":
        return save_tiny_glm(root / "glm", hidden_dropout=0.1, attention_dropout=0.1)[0]
    return save_tiny_bert(root / "bert")


def zero3_steps(model_dir, checkpointing: bool, steps: int = 3):
    """Per-step losses and the first step's full (gathered) prompt gradients, dropout on and seeded."""
    _, built, task = build_zero3(model_dir, f"train.activation_checkpointing={str(checkpointing).lower()}",
                                 "train.lr=3e-2", "prompt.dropout=0.1")
    assert built.adapter.checkpointing_enabled() is checkpointing
    assert all(hasattr(p, "ds_id") and not p.requires_grad for p in built.model.backbone.parameters())
    built.engine.train()
    feats = task.features("train")
    losses, grads = [], {}
    for step in range(steps):
        torch.manual_seed(100 + step)
        loss = built.engine(task.collate(feats[4 * step:4 * step + 4]), task.name).loss
        built.engine.backward(loss)
        if step == 0:
            grads = {n: safe_get_full_grad(p).clone() for n, p in built.model.prompt.named_parameters()}
        built.engine.step()
        losses.append(loss.item())
    return losses, grads


def test_zero3_frozen_backbone_checkpointed_equals_plain(model_dir):
    plain_losses, plain_grads = zero3_steps(model_dir, checkpointing=False)
    losses, grads = zero3_steps(model_dir, checkpointing=True)
    assert losses == pytest.approx(plain_losses, rel=1e-6, abs=0)
    assert grads.keys() == plain_grads.keys() and grads
    for name, g in plain_grads.items():
        assert g.abs().max() > 0, name
        assert (grads[name] - g).abs().max() <= 1e-6 * g.abs().max(), name


def test_without_deepspeeds_recompute_fix_the_backward_crashes(model_dir, monkeypatch):
    """Take PR #8148's attribution of recomputed frozen weights out: the upstream crash comes back
    (the frozen weight is re-partitioned to shape [0] under the checkpoint's feet)."""
    monkeypatch.setattr(partitioned_param_coordinator, "update_recompute_parameters", lambda *a: None)
    with pytest.raises(CheckpointError, match="recomputed metadata"):
        zero3_steps(model_dir, checkpointing=True, steps=1)


def test_a_deepspeed_without_the_fix_is_refused(monkeypatch):
    from deepprompt.engine import ds_setup

    monkeypatch.delattr(partitioned_param_coordinator, "update_recompute_parameters")
    with pytest.raises(ConfigError, match="train.activation_checkpointing: deepspeed .* PR #8148"):
        ds_setup.check_zero3_recompute_of_frozen_params()


def _launch(model, out, *extra):
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--hostfile", "hostfile.example", "--no_ssh_check",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "launcher/train.py",
           "--ds_config", "ds_configs/zero3.json", *common_args(model, out, steps=10), "train.eval_every=0", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    return json.loads((out / "results.json").read_text()), losses


@pytest.mark.multirank
def test_two_rank_run_with_checkpointing_trains_like_without(tmp_path):
    """2 ranks, ZeRO-3, dropout on (seeded per step and rank): the same losses step by step."""
    model = save_tiny_bert(tmp_path / "bert")
    plain, plain_losses = _launch(model, tmp_path / "plain")
    r, losses = _launch(model, tmp_path / "ckpt", "train.activation_checkpointing=true")
    assert r["world_size"] == 2 and r["steps"] == 10 and len(losses) == 10
    assert r["frozen_backbone"]["unchanged"] is True
    assert r["train_loss"]["last"] < r["train_loss"]["first"]
    assert losses == pytest.approx(plain_losses, rel=1e-5)
    assert json.loads((tmp_path / "ckpt" / "run_config.json").read_text())["train"]["activation_checkpointing"] is True
