"""Every DeepSpeed (and transformers-DeepSpeed) name this package reaches for that is not a stable
public API: private methods, attributes DeepSpeed sets on parameters and optimizers, and a file name
inside its C++ sources. Each is checked here by name and signature, and the installed deepspeed
must satisfy the pin in pyproject.toml, so an upgrade fails in CI with the name that moved, not in a
user's resume. When a check fails: fix the code that uses the name, then move the pin."""
import inspect
import json
import tomllib
from pathlib import Path

import pytest
import torch

from tests.tiny import REPO, build_zero3, save_tiny, train_steps


def _params(fn) -> list[str]:
    return [n for n in inspect.signature(fn).parameters if n != "self"]


def test_the_installed_deepspeed_is_inside_the_pin():
    import deepspeed
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in deps if Requirement(d).name == "deepspeed"]
    assert any(s.operator == "<" for s in pin.specifier), f"deepspeed needs an upper bound in pyproject: {pin}"
    assert pin.specifier.contains(deepspeed.__version__), \
        f"deepspeed {deepspeed.__version__} is outside pyproject's {pin}: check the internals below, then move the pin"


# (module, attribute path, the parameters our calls pass by name or position, in order)
FUNCTIONS = [
    # engine/checkpoint.py: full fp32 masters and Adam moments (ZeRO-1/2/3)
    ("deepspeed.utils", "safe_get_full_fp32_param", ["param"]),
    ("deepspeed.utils", "safe_get_full_optimizer_state", ["param", "optim_state_key"]),
    ("deepspeed.utils", "safe_set_full_fp32_param", ["param", "value"]),
    ("deepspeed.utils", "safe_set_full_optimizer_state", ["param", "value", "optim_state_key"]),
    # engine/checkpoint.py _set_full: this rank's slice under ZeRO-3, by hand (private)
    ("deepspeed.runtime.zero.stage3", "DeepSpeedZeroOptimizer_Stage3._get_fp32_opt_state_partition",
     ["param", "release_swap_buffers", "optim_state_key"]),
    ("deepspeed.runtime.zero.stage3", "DeepSpeedZeroOptimizer_Stage3._get_param_partition_rank", ["param"]),
    # artifacts.py, checkpoint.py, models/glm/checkpoint.py
    ("deepspeed", "zero.GatheredParameters.__init__", ["params", "modifier_rank", "fwd_module", "enabled"]),
    ("deepspeed", "zero.Init.__init__", None),  # keywords: config_dict_or_path, dtype (checked below)
    ("deepspeed", "initialize", None),  # keywords: model, optimizer, lr_scheduler, config
    ("deepspeed", "init_distributed", None),  # keywords: dist_backend, auto_mpi_discovery, timeout, verbose
    ("deepspeed.accelerator", "get_accelerator", []),
    # models/loading.py: build the backbone partitioned, then forget the global
    ("transformers.integrations", "HfDeepSpeedConfig.__init__", ["config_file_or_dict"]),
    ("transformers.integrations.deepspeed", "unset_hf_deepspeed_config", []),
]
KEYWORDS = {
    "zero.Init.__init__": {"config_dict_or_path", "dtype"},
    "initialize": {"model", "optimizer", "lr_scheduler", "config"},
    "init_distributed": {"dist_backend", "auto_mpi_discovery", "timeout", "verbose"},
}


@pytest.mark.parametrize("module, path, params", FUNCTIONS, ids=[f[1] for f in FUNCTIONS])
def test_internal_function_exists_with_the_signature_we_call(module, path, params):
    import importlib

    obj = importlib.import_module(module)
    for part in path.split("."):
        assert hasattr(obj, part), f"{module}.{path}: {part} is gone"
        obj = getattr(obj, part)
    if params is not None:
        assert _params(obj)[:len(params)] == params, f"{module}.{path}{inspect.signature(obj)}: we call it with {params}"
    else:
        missing = KEYWORDS[path] - set(_params(obj))
        assert not missing, f"{module}.{path}{inspect.signature(obj)}: no keyword(s) {sorted(missing)}"


def test_cpu_shared_memory_buffer_name():
    """engine/comm.py unlinks the /dev/shm segment of DeepSpeed's CPU all-reduce by this name."""
    import deepspeed

    src = Path(deepspeed.__file__).parent / "ops" / "csrc" / "cpu" / "comm" / "shm.cpp"
    assert '#define SHM_BUFFER_NAME "deepspeed_allreduce_buffer"' in src.read_text()


# ------------------------------------------------------------------------------ on live engines

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny("bert", tmp_path_factory.mktemp("bert"))


def test_zero3_attributes_checkpoints_and_counts_read(model_dir, tmp_path):
    """ZeRO-3: what ds_setup, checkpoint, artifacts and throughput read off parameters and the optimizer."""
    from deepprompt.engine.ds_setup import inner_optimizer

    _, built, task = build_zero3(model_dir, f"output_dir={tmp_path}")
    train_steps(built, task, 1)
    opt = built.engine.optimizer
    assert type(opt).__name__ == "DeepSpeedZeroOptimizer_Stage3"
    assert isinstance(opt.fp32_partitioned_groups_flat, list) and opt.fp32_partitioned_groups_flat
    assert isinstance(inner_optimizer(built.engine), torch.optim.AdamW)  # engine.optimizer.optimizer
    assert built.engine.lr_scheduler is not None
    frozen = [p for p in built.model.parameters() if not p.requires_grad]
    for p in frozen:
        assert {"ds_id", "ds_tensor", "ds_numel", "ds_shape"} <= set(vars(p)), "ZeRO-3 parameter attributes"
        assert p.ds_tensor.ds_numel >= 0  # models/glm/checkpoint.py reads the partition's own size
    for p in (p for p in built.model.parameters() if p.requires_grad):
        assert p._z3_optimizer is opt
        part, _ = opt._get_fp32_opt_state_partition(p, release_swap_buffers=False, optim_state_key="exp_avg")
        assert torch.is_tensor(part) and opt._get_param_partition_rank(p) == 0


def test_zero2_attributes_checkpoints_read(model_dir, tmp_path):
    """ZeRO-1/2: the fp32 groups ds_setup.master_partitions reads and the mapping checkpoint._set_full tests."""
    ds = json.loads((REPO / "ds_configs" / "zero3.json").read_text())
    ds["zero_optimization"] = {"stage": 2}
    path = tmp_path / "zero2.json"
    path.write_text(json.dumps(ds))
    _, built, task = build_zero3(model_dir, f"output_dir={tmp_path}", ds_config=str(path))
    train_steps(built, task, 1)
    opt = built.engine.optimizer
    assert type(opt).__name__ == "DeepSpeedZeroOptimizer"
    assert isinstance(opt.single_partition_of_fp32_groups, list) and opt.single_partition_of_fp32_groups
    assert all(getattr(p, "_hp_mapping", None) is not None for p in built.model.parameters() if p.requires_grad)


def test_zero3_persistence_internals_ds_setup_relies_on(model_dir, tmp_path):
    """ds_setup.keep_whole, layout.frozen_held / shard_group and memory.py's volumes: persistence is decided
    by size alone in mark_persistent_parameters, the optimizer's persistent list IS the offload's
    (the one _post_step re-gathers after every step), and the hpZ attributes exist on every parameter."""
    import deepspeed
    from deepspeed.runtime.zero.parameter_offload import DeepSpeedZeRoOffload
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    assert _params(DeepSpeedZeRoOffload.mark_persistent_parameters) == ["param_threshold", "model_threshold"]
    source = Path(inspect.getsourcefile(DeepSpeedZeroOptimizer_Stage3)).read_text()
    post_step = source[source.index("def _post_step"):source.index("def step(")]
    assert "self.persistent_parameters[0].all_gather(self.persistent_parameters)" in post_step
    _, built, task = build_zero3(model_dir, f"output_dir={tmp_path}")
    opt = built.engine.optimizer
    assert opt.persistent_parameters is opt.parameter_offload.persistent_parameters
    for p in built.model.parameters():
        assert {"ds_persist", "ds_process_group", "ds_zero_param_process_group", "ds_secondary_tensor",
                "ds_secondary_tensor_num_of_groups"} <= set(vars(p))
    # MiCS is gone: ds_setup refuses its keys itself, naming the same issue
    from deepspeed.runtime.config import _REMOVED_ZERO_CONFIG_KEYS
    assert "mics_shard_size" in _REMOVED_ZERO_CONFIG_KEYS and "8489" in _REMOVED_ZERO_CONFIG_KEYS["mics_shard_size"]
    assert "zero_hpz_partition_size" in deepspeed.runtime.zero.config.DeepSpeedZeroConfig.model_fields
