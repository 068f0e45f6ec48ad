"""ZeRO-3 in this process (one rank): the frozen backbone, gathered, is bit-identical to the
checkpoint after training; the optimizer holds state for the trainable parameters only."""
import deepspeed
import pytest
import torch
from safetensors.torch import load_file

from deepprompt.engine import ds_setup
from tests.tiny import build_zero3, save_tiny_bert, train_steps


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = save_tiny_bert(tmp_path_factory.mktemp("bert"))
    run, built, task = build_zero3(path, "train.lr=3e-2")
    fingerprint = ds_setup.frozen_fingerprint(built.model)
    prompt_before = _gathered(built.model.prompt)
    train_steps(built, task, 6)
    return built, path, fingerprint, prompt_before


def _gathered(module):
    out = {}
    for name, p in module.named_parameters():
        with deepspeed.zero.GatheredParameters([p]):
            out[name] = p.data.detach().clone()
    return out


def test_backbone_is_zero3_partitioned_and_prompts_stay_whole(trained):
    built = trained[0]
    assert all(hasattr(p, "ds_id") for p in built.model.backbone.parameters())
    # "auto" persistence keeps prompt and head tensors gathered on every rank between steps
    assert all(p.ds_persist for p in built.model.prompt.parameters())
    assert all(p.ds_persist for p in built.model.heads.parameters())


def test_frozen_weights_gathered_are_bit_identical_to_the_checkpoint(trained):
    built, path = trained[0], trained[1]
    original = load_file(str(path / "model.safetensors"))
    after = _gathered(built.model.backbone)
    assert set(after) <= set(original)
    for name, value in after.items():
        assert torch.equal(value, original[name]), name


def test_prompt_moved(trained):
    built, prompt_before = trained[0], trained[3]
    after = _gathered(built.model.prompt)
    assert any(not torch.equal(after[n], prompt_before[n]) for n in after)


def test_optimizer_state_covers_only_trainable_params(trained):
    built = trained[0]
    state = ds_setup.optimizer_state_numel(built.engine)
    trainable = built.trainable_params
    assert trainable < 0.1 * built.total_params
    assert 2 * trainable <= state["moments"] <= 2 * trainable + 2 * 64  # Adam m and v (+ alignment pad)
    assert trainable <= state["master"] <= trainable + 64


def test_fingerprint_catches_a_changed_frozen_weight(trained):
    built, fingerprint = trained[0], trained[2]
    assert ds_setup.frozen_fingerprint(built.model) == fingerprint
    p = next(p for p in built.model.backbone.parameters() if not p.requires_grad)
    shard = getattr(p, "ds_tensor", p).data
    shard.view(-1)[0] += 1.0
    try:
        assert ds_setup.frozen_fingerprint(built.model) != fingerprint
    finally:
        shard.view(-1)[0] -= 1.0


def test_bf16_zero3_reduces_the_trainable_gradients_in_fp32(tmp_path):
    """DeepSpeed's ZeRO-3 optimizer itself (CPU bf16 works here) takes the fp32 reduction dtype."""
    import json

    from tests.tiny import REPO

    ds = json.loads((REPO / "ds_configs" / "zero3.json").read_text())
    ds["bf16"] = {"enabled": True}
    (tmp_path / "bf16.json").write_text(json.dumps(ds))
    run, built, task = build_zero3(save_tiny_bert(tmp_path / "bert"), ds_config=str(tmp_path / "bf16.json"))
    assert built.precision == "bf16"
    assert built.engine.optimizer.communication_data_type == torch.float32
    train_steps(built, task, 2)


# ----------------------------------------------------------------------------- a reparameterised prefix

def test_the_reparam_mlp_trains_at_its_own_rate_and_everything_else_at_train_lr(tmp_path):
    """Adam's first step moves every weight with a gradient by its group's rate (|m / sqrt(v)| = 1):
    the MLP's by train.lr x prompt.reparam_lr_scale, the prefix embedding and the head by train.lr;
    the schedule keeps the ratio at every step."""
    path = save_tiny_bert(tmp_path / "bert")
    _, built, task = build_zero3(path, "prompt.reparam=true", "prompt.reparam_hidden=16", "prompt.dropout=0",
                                 "train.lr=1e-2", "prompt.reparam_lr_scale=0.1", "train.warmup_ratio=0")
    model = built.model
    groups = built.engine.optimizer.fp16_groups  # ZeRO-3's param_groups hold its flat partitions
    mlp = {id(p) for p in model.prompt.reparam.parameters()}
    assert [{id(p) for p in g} for g in groups[1:]] == [mlp]
    assert sum(len(g) for g in groups) == len([p for p in model.parameters() if p.requires_grad])
    lr = built.engine.get_lr()
    assert lr == pytest.approx([1e-2, 1e-3])
    before = {**_gathered(model.prompt), **_gathered(model.heads)}
    train_steps(built, task, 1)
    after = {**_gathered(model.prompt), **_gathered(model.heads)}
    for name, value in after.items():
        step = (value - before[name]).abs().max().item()
        assert step == pytest.approx(1e-3 if name.startswith("reparam.") else 1e-2, rel=1e-3), name
    train_steps(built, task, 3)
    now = built.engine.get_lr()
    assert now[0] < lr[0] and now[1] == pytest.approx(0.1 * now[0])


def test_a_raw_prefix_keeps_one_optimizer_group(tmp_path):
    _, built, _ = build_zero3(save_tiny_bert(tmp_path / "bert"), "prompt.reparam_lr_scale=0.1")
    assert len(built.engine.optimizer.param_groups) == 1


def test_a_checkpoint_with_other_optimizer_groups_is_refused_in_one_line(tmp_path):
    """A reparameterised run saved before the MLP had a group of its own (one group) cannot resume
    into two: the moments were made at another rate."""
    from deepprompt.engine import checkpoint
    from deepprompt.errors import ConfigError

    path = save_tiny_bert(tmp_path / "bert")
    reparam = ("prompt.reparam=true", "prompt.reparam_hidden=16", f"output_dir={tmp_path / 'run'}")
    run, built, task = build_zero3(path, *reparam, "prompt.reparam_lr_scale=1")
    assert len(built.engine.optimizer.param_groups) == 1
    train_steps(built, task, 1)
    saved = checkpoint.save(built.engine, built.model, run, 1, {}, keep=1)
    _, built, _ = build_zero3(path, *reparam)
    with pytest.raises(ConfigError) as e:
        checkpoint.load(built.engine, built.model, saved)
    assert "saved with 1 optimizer group(s), this run has 2" in str(e.value) and "\n" not in str(e.value)
