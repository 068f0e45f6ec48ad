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
