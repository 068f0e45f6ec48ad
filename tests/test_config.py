import json
from pathlib import Path

import pytest

from deepprompt.config import RunConfig, field_docs, load_config
from deepprompt.engine.ds_setup import read_ds_config, resolve_ds_config
from deepprompt.errors import ConfigError

REPO = Path(__file__).parent.parent


def test_defaults_are_the_embedded_default_run():
    cfg = load_config()
    assert (cfg.model.path, cfg.task.name, cfg.prompt.method) == ("all-minilm-l6-v2", "wnut16", "prefix")


def test_file_then_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("prompt:\n  method: prompt\n  length: 8\ntrain:\n  max_steps: 5\n")
    cfg = load_config(str(f), ["prompt.length=32", "train.lr=3e-2", "prompt.layers=[-2, -1]", "output_dir=runs/x"])
    assert cfg.prompt.method == "prompt" and cfg.prompt.length == 32 and cfg.train.max_steps == 5
    assert cfg.train.lr == pytest.approx(0.03) and cfg.prompt.layers == [-2, -1] and cfg.output_dir == "runs/x"


def test_json_config(tmp_path):
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"train": {"seed": 7}}))
    assert load_config(str(f)).train.seed == 7


@pytest.mark.parametrize("overrides, key", [
    (["prompt.method=foo"], "prompt.method: unknown prompt method 'foo'"),
    (["prompt.lenght=3"], "did you mean prompt.length"),
    (["task.name=nope"], "task.name: unknown task"),
    (["train.max_steps=0"], "train.max_steps: must be > 0"),
    (["train.lr=abc"], "train.lr: expected float"),
    (["prompt.length=-1"], "prompt.length"),
    (["prompt.length=0"], "prompt.length: must be >= 1"),
    (["prompt.layers=[]"], "prompt.layers: must name at least one layer"),
    (["prompt"], "expected key=value"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  max_steps: 5\n  lr: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(str(f))


def test_every_shipped_run_config_loads():
    configs = sorted((REPO / "launcher" / "configs").glob("*.yaml"))
    assert configs, "no shipped run configs found"
    for path in configs:
        assert isinstance(load_config(str(path)), RunConfig), path


def test_every_shipped_ds_config_resolves():
    configs = sorted((REPO / "ds_configs").glob("*.json"))
    assert configs
    for path in configs:
        ds = resolve_ds_config(read_ds_config(str(path)), load_config(), world_size=2, hidden=384, src=str(path))
        assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2
        assert "auto" not in json.dumps(ds).replace("stage3_param_persistence_threshold\": \"auto", ""), path


def test_every_key_is_documented():
    missing = [key for key, _, doc in field_docs() if not doc]
    assert not missing, f"config keys without a docstring: {missing}"
    readme = (REPO / "README.md").read_text()
    undocumented = [key for key, _, _ in field_docs() if f"`{key}`" not in readme]
    assert not undocumented, f"config keys missing from the README's table: {undocumented}"
