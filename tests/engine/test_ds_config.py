import pytest

from deepprompt.config import load_config
from deepprompt.engine.ds_setup import public, resolve_ds_config
from deepprompt.errors import ConfigError
from tests.tiny import REPO


def resolve(ds, world=2, **train):
    cfg = load_config(None, [f"train.{k}={v}" for k, v in train.items()])
    return resolve_ds_config(ds, cfg, world_size=world, hidden=64, src="ds.json")


def test_auto_fills_from_run_config():
    ds = resolve({"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
                  "gradient_accumulation_steps": "auto", "gradient_clipping": "auto"},
                 world=2, batch_size=32, micro_batch_size=4, max_grad_norm=0.5)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (32, 4, 4)
    assert ds["gradient_clipping"] == 0.5


def test_indivisible_batch_names_the_numbers():
    with pytest.raises(ConfigError) as e:
        resolve({}, world=2, batch_size=30, micro_batch_size=4)
    msg = str(e.value)
    assert "30" in msg and "4 x world size 2 = 8" in msg and msg.startswith("ds.json:")


def test_explicit_numbers_must_multiply_out():
    with pytest.raises(ConfigError, match=r"train_batch_size 32 != micro batch 4 x gradient_accumulation_steps 2 x world size 2 = 16"):
        resolve({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2})


def test_optimizer_block_is_refused():
    with pytest.raises(ConfigError, match="'optimizer'"):
        resolve({"optimizer": {"type": "Adam"}})


def test_precision_auto_is_fp32_on_cpu():
    ds = resolve({"bf16": {"enabled": "auto"}}, batch_size=8, micro_batch_size=4)
    assert ds["_precision"] == "fp32" and ds["bf16"]["enabled"] is False


@pytest.mark.parametrize("shipped", sorted(p.name for p in (REPO / "ds_configs").glob("*.json")))
def test_gradients_are_reduced_in_fp32_under_bf16(shipped):
    """Read back by DeepSpeed's own config parser: what its engine uses for the gradient reduction
    (unset, bf16 training reduces in bf16)."""
    import json

    import torch
    from deepspeed.runtime.config import get_communication_data_type

    raw = json.loads((REPO / "ds_configs" / shipped).read_text())
    raw["bf16"] = {"enabled": True}
    ds = resolve(raw, batch_size=8, micro_batch_size=4)
    assert ds["_precision"] == "bf16"
    assert get_communication_data_type(public(ds)) == torch.float32


def test_an_explicit_communication_dtype_is_kept():
    ds = resolve({"communication_data_type": "bf16"}, batch_size=8, micro_batch_size=4)
    assert ds["communication_data_type"] == "bf16"


# ------------------------------------------------------------------ a number in the JSON vs the run config

@pytest.mark.parametrize("json_key, value, run_key, ours", [
    ("train_batch_size", 64, "batch_size", 16),
    ("train_micro_batch_size_per_gpu", 2, "micro_batch_size", 4),
])
def test_a_json_batch_number_that_disagrees_with_the_run_config_is_refused(json_key, value, run_key, ours):
    with pytest.raises(ConfigError) as e:
        resolve({json_key: value}, world=2, batch_size=16, micro_batch_size=4)
    assert str(e.value) == (f"ds.json: {json_key} {value} disagrees with train.{run_key} {ours} of the run config; "
                            f"set it in one place (\"auto\" in the JSON takes the run config's)")


def test_a_json_batch_number_wins_over_a_run_config_default_and_is_recorded():
    from deepprompt.engine.ds_setup import record_batch

    cfg = load_config(None, [])  # train.batch_size / micro_batch_size at their defaults (32 / 16)
    ds = resolve_ds_config({"train_batch_size": 64, "train_micro_batch_size_per_gpu": 8}, cfg, world_size=2,
                           hidden=64, src="ds.json")
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (64, 8, 4)
    record_batch(cfg, ds)  # what run_config.json and the checkpoint signature then say
    assert (cfg.train.batch_size, cfg.train.micro_batch_size) == (64, 8)
    # the same numbers on both sides agree
    assert resolve({"train_batch_size": 16}, batch_size=16, micro_batch_size=4)["train_batch_size"] == 16


def test_json_gradient_accumulation_sets_the_global_batch_only_when_nobody_else_does():
    cfg = load_config(None, [])
    ds = resolve_ds_config({"gradient_accumulation_steps": 2}, cfg, world_size=2, hidden=64, src="ds.json")
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (64, 16, 2)
    with pytest.raises(ConfigError) as e:  # train.batch_size set in the run config: both keys are named
        resolve({"gradient_accumulation_steps": 4}, world=2, batch_size=16, micro_batch_size=4)
    assert str(e.value) == ("ds.json: batch sizes do not multiply out: train_batch_size 16 != micro batch 4 x "
                            "gradient_accumulation_steps 4 x world size 2 = 32 (train_batch_size is train.batch_size "
                            "of the run config)")


def test_a_ds_config_that_is_not_utf8_is_one_line(tmp_path):
    from deepprompt.engine.ds_setup import read_ds_config

    f = tmp_path / "ds.json"
    f.write_bytes(b'{\n  "_comment": "r\xe9sum\xe9"\n}\n')
    with pytest.raises(ConfigError, match=r"ds.json:2: not UTF-8 text \(byte 0xe9 at byte offset 18\); save it as UTF-8$"):
        read_ds_config(str(f))
