import json
from pathlib import Path

import pytest

from deepprompt.config import RunConfig, config_from_dict, field_docs, load_config, reference_markdown
from deepprompt.engine.ds_setup import read_ds_config, resolve_ds_config
from deepprompt.engine.preflight import check_names
from deepprompt.errors import ConfigError
from deepprompt.tasks import option_families

REPO = Path(__file__).parent.parent


def load_and_check_names(overrides: list[str]) -> RunConfig:
    """What a run's start-up sees: the typed config (config.py, a leaf) and then the registry names
    (engine/preflight.check_names, where the registries are used)."""
    cfg = load_config(None, overrides)
    check_names(cfg)
    return cfg


def test_registry_names_are_checked_by_the_preflight_not_the_config():
    cfg = load_config(None, ["prompt.method=foo"])  # config.py knows no registry
    with pytest.raises(ConfigError, match=r"^prompt.method: unknown prompt method 'foo'"):
        check_names(cfg)


def test_a_task_familys_keys_are_typed_by_its_task_class():
    from deepprompt.tasks.qa import QATask

    qa = load_and_check_names(["task.name=squad", "task.doc_stride=16", "task.n_best=5"])
    opts = QATask.options_of(qa.task)
    assert (opts.doc_stride, opts.n_best, opts.max_query_length) == (16, 5, 64)  # given, given, the default
    assert qa.to_dict()["task"]["doc_stride"] == 16  # written beside the common keys, as given
    # a QA key on an NER task: one line naming the key and the task
    with pytest.raises(ConfigError, match=r"^task\.doc_stride: unknown config key for task wnut16 \(known: "):
        load_and_check_names(["task.doc_stride=16"])
    with pytest.raises(ConfigError, match=r"^tasks\[0\]\.n_best: unknown config key for task wnut16"):
        load_and_check_names(["tasks=[{name: wnut16, n_best: 3}, {name: squad, n_best: 3}]"])
    with pytest.raises(ConfigError, match=r"^task\.doc_stride: expected int, got 'wide'$"):
        load_and_check_names(["task.name=squad", "task.doc_stride=wide"])
    with pytest.raises(ConfigError, match=r"^task\.word_column: expected int"):
        load_and_check_names(["task.name=custom_tagging", "task.word_column=first"])
    custom = load_and_check_names(["task.name=custom_classification", "task.text_column=sentence"])
    from deepprompt.registry import TASKS
    assert TASKS.get("custom_classification").options_of(custom.task).text_column == "sentence"


def test_a_saved_config_with_the_old_family_keys_at_their_defaults_still_loads():
    from deepprompt.config.sections import LEGACY_TASK_DEFAULTS, without_legacy_defaults

    old = {"name": "wnut16", **LEGACY_TASK_DEFAULTS}  # every task section carried them before
    check_names(config_from_dict({"task": without_legacy_defaults(old)}))
    with pytest.raises(ConfigError, match=r"^task\.labels: unknown config key for task wnut16"):
        check_names(config_from_dict({"task": old}))  # given on purpose: refused


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
    (["prompt.reparam_lr_scale=0"], "prompt.reparam_lr_scale: must be a finite number > 0"),
    (["prompt.reparam_lr_scale=nan"], "prompt.reparam_lr_scale: expected a finite number, got 'nan'"),
    (["prompt.reparam_lr_scale=inf"], "prompt.reparam_lr_scale: expected a finite number, got 'inf'"),
    (["prompt.encoder_hidden=0"], "prompt.encoder_hidden: must be > 0"),
    (["task.head_dropout=1.5"], "task.head_dropout: must be in [0, 1)"),
    (["task.max_train_examples=0"], "task.max_train_examples: must be >= 1"),
    (["train.weight_decay=-0.1"], "train.weight_decay: must be >= 0"),
    (["train.max_grad_norm=-1"], "train.max_grad_norm: must be >= 0"),
    (["prompt"], "expected key=value"),
    (["task.name=squad", "task.train_file=a.json", "task.train_files=[b.json]"], "task.train_files: set task.train_file"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_and_check_names(overrides)
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
        cfg = load_config(str(path))
        check_names(cfg)  # the registry names too
        assert isinstance(cfg, RunConfig), path


def test_every_shipped_ds_config_resolves():
    configs = sorted((REPO / "ds_configs").glob("*.json"))
    assert configs
    for path in configs:
        ds = resolve_ds_config(read_ds_config(str(path)), load_config(), world_size=2, hidden=384, src=str(path))
        assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2
        assert "auto" not in json.dumps(ds).replace("stage3_param_persistence_threshold\": \"auto", ""), path


def test_every_key_is_documented_and_docs_config_md_is_current():
    missing = [key for key, _, doc in field_docs() if not doc]
    assert not missing, f"config keys without a docstring: {missing}"
    page = (REPO / "docs" / "config.md").read_text()
    undocumented = [key for key, _, _ in field_docs() if f"| `{key}` |" not in page]
    assert not undocumented, f"config keys missing from docs/config.md: {undocumented}"
    assert page == reference_markdown(option_families()), \
        "docs/config.md is out of date: python -m deepprompt config-docs > docs/config.md"


def test_config_docs_command_prints_the_reference():
    import subprocess
    import sys

    from tests.tiny import launch_env

    out = subprocess.run([sys.executable, "-m", "deepprompt", "config-docs"], cwd=REPO, env=launch_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == reference_markdown(option_families())


# ------------------------------------------------------------------------------ multi-task runs

MULTI = """
task: {max_seq_length: 64, data_dir: /data/ner}
tasks:
  - {name: wnut16}
  - {name: wnut16, data_dir: /data/other, max_train_examples: 10}
mixer: {policy: temperature, temperature: 3}
"""


def _multi(tmp_path, text=MULTI):
    f = tmp_path / "multi.yaml"
    f.write_text(text)
    return f


def test_a_single_task_config_is_one_task():
    cfg = load_config()
    assert cfg.tasks is None and [t.name for t in cfg.task_configs()] == ["wnut16"]


def test_task_keys_are_every_entrys_defaults_and_entries_override_by_index_or_name(tmp_path):
    # the same task twice is refused (one head per name) ...
    with pytest.raises(ConfigError, match="tasks: task 'wnut16' is listed 2 times"):
        load_config(str(_multi(tmp_path)))
    # ... so rename the second through the file, then check defaults and per-entry overrides
    f = _multi(tmp_path, MULTI.replace("- {name: wnut16, data_dir", "- {name: wnut16x, data_dir"))
    from deepprompt.registry import TASKS
    from deepprompt.tasks.ner import Wnut16
    if "wnut16x" not in TASKS:
        TASKS.register("wnut16x")(type("Wnut16x", (Wnut16,), {}))
    cfg = load_config(str(f), ["task.head_dropout=0.3", "tasks.0.max_train_examples=5",
                               "tasks.wnut16x.max_seq_length=32", "mixer.cap=100"])
    a, b = cfg.task_configs()
    assert (a.name, a.data_dir, a.max_seq_length, a.max_train_examples, a.head_dropout) == \
        ("wnut16", "/data/ner", 64, 5, 0.3)
    assert (b.name, b.data_dir, b.max_seq_length, b.max_train_examples, b.head_dropout) == \
        ("wnut16x", "/data/other", 32, 10, 0.3)
    assert (cfg.mixer.policy, cfg.mixer.temperature, cfg.mixer.cap) == ("temperature", 3.0, 100)
    w = load_config(str(f), ["mixer.policy=weights", "mixer.weights={wnut16: 1, wnut16x: 3}"]).mixer.weights
    assert w == {"wnut16": 1.0, "wnut16x": 3.0}
    # the resolved config (run_config.json, an artifact's "run") loads back to the same config
    assert load_config(None, []).to_dict() != cfg.to_dict()
    from deepprompt.config import config_from_dict
    assert config_from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("overrides, message", [
    (["tasks=[]"], "tasks: must list at least one task"),
    (["tasks=[{name: wnut16}, {name: nope}]"], "tasks[1].name: unknown task 'nope'"),
    (["tasks=[{name: wnut16, max_seq_len: 3}]"], "tasks[0].max_seq_len: unknown config key (did you mean tasks[0].max_seq_length?)"),
    (["mixer.policy=zipf"], "mixer.policy: unknown policy 'zipf'"),
    (["mixer.temperature=0"], "mixer.temperature: must be > 0"),
    (["mixer.cap=0"], "mixer.cap: must be >= 1"),
    (["mixer.weights={wnut16: 1}"], "mixer.weights: only used by mixer.policy=weights"),
    (["mixer.policy=weights"], "mixer.weights: mixer.policy=weights needs a weight per task"),
    (["mixer.policy=weights", "mixer.weights={other: 1}"], "mixer.weights: names ['other'] unknown; no weight for ['wnut16']"),
    (["mixer.policy=weights", "mixer.weights={wnut16: -1}"], "mixer.weights: weights must be > 0"),
    (["tasks=[{name: wnut16}, {name: conll03}]", "mixer.policy=weights", "mixer.weights={wnut16: 1, conll03: 0}"],
     "mixer.weights: conll03 at weight 0 would never be trained, yet be evaluated, exported and averaged into the "
     "BEST-DEV criterion; remove it from tasks"),
    (["prompt.init_head=true"], "prompt.init_head: needs prompt.init_from"),
    # an entry's own checks name the entry's key, not task.* (which entry would that be?)
    (["tasks=[{name: wnut16}, {name: conll03, folds: 3, fold: 3}]"], "tasks[1].fold: must be in 0..2 (tasks[1].folds=3)"),
    (["tasks=[{name: wnut16, max_seq_length: 4}, {name: conll03}]"], "tasks[0].max_seq_length: must be >= 8"),
    (["tasks=[{name: wnut16}, {name: conll03, max_train_examples: 0}]"], "tasks[1].max_train_examples: must be >= 1"),
])
def test_bad_multi_task_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_and_check_names(overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_an_override_of_a_missing_entry_names_the_entries(tmp_path):
    f = tmp_path / "one.yaml"
    f.write_text("tasks:\n  - {name: wnut16}\n")
    with pytest.raises(ConfigError, match=r"tasks\.3: no such entry \(use an index 0\.\.0 or a name: wnut16\)"):
        load_config(str(f), ["tasks.3.data_dir=x"])
    assert load_config(str(f), ["tasks.wnut16.data_dir=x"]).tasks[0].data_dir == "x"


@pytest.mark.parametrize("override, message", [
    ("tasks.wnut16.max_seq_length=64", "tasks.wnut16.max_seq_length: this run has one task (no tasks: list); "
                                       "write task.max_seq_length=..."),
    ("tasks.0.data_dir=x", "tasks.0.data_dir: this run has one task"),
])
def test_an_entry_override_on_a_single_task_run_says_to_write_task_key(override, message):
    # it said "tasks: expected a list, got {'wnut16': ...}", which reads as a fault in the file
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------ the file itself

def test_a_config_file_that_is_not_utf8_names_file_and_line(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_bytes(b"train:\n  max_steps: 5\n# caf\xe9\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert str(e.value) == f"{f}:3: not UTF-8 text (byte 0xe9 at byte offset 27); save it as UTF-8"


@pytest.mark.parametrize("text, got", [("- train\n- task\n", "list ['train', 'task']"), ("5\n", "int 5"),
                                       ('"prefix"\n', "str 'prefix'")])
def test_a_config_file_whose_top_level_is_not_a_mapping_is_one_line(tmp_path, text, got):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert str(e.value) == f"{f}: expected a mapping of sections (model:, prompt:, task:, train: ...), got {got}"


@pytest.mark.parametrize("overrides", [[], ["train.lr=0.1"]])
def test_a_section_given_as_a_scalar_is_refused_even_with_an_override_of_that_section(tmp_path, overrides):
    f = tmp_path / "run.yaml"
    f.write_text("train: 5\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(f), overrides)
    assert str(e.value) == f"{f}: train: expected a mapping, got 5"
    from deepprompt.config import config_from_dict
    with pytest.raises(ConfigError, match=r"^train: expected a mapping, got 5$"):  # no file (an artifact's run)
        config_from_dict({"train": 5}, ["train.lr=0.1"])


def test_an_empty_config_file_runs_the_default_job_and_says_so(tmp_path, caplog):
    f = tmp_path / "run.yaml"
    for text in ("", "# nothing set yet\n", "{}\n"):
        f.write_text(text)
        caplog.clear()
        with caplog.at_level("WARNING", logger="deepprompt"):
            assert load_config(str(f)) == load_config()
        assert [r.getMessage() for r in caplog.records] == [
            f"{f}: the config file is empty: running the embedded default job (plus any key=value overrides)"]


# ------------------------------------------------------------------------------ no value silently lost

@pytest.mark.parametrize("text, line, key", [
    ("train:\n  lr: 0.1\n  seed: 3\n  lr: 0.2\n", 4, "lr"),  # in a section
    ("train:\n  lr: 0.1\nprompt:\n  length: 8\ntrain:\n  seed: 3\n", 5, "train"),  # a section twice
    ("train: {lr: 0.1, lr: 0.2}\n", 1, "lr"),  # in a flow mapping
    ("tasks:\n  - {name: a, fold: 0}\n  - name: b\n    fold: 1\n    fold: 2\n", 5, "fold"),  # in a list entry
])
def test_a_key_given_twice_in_a_yaml_file_names_file_and_line(tmp_path, text, line, key):
    f = tmp_path / "run.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(f))
    assert str(e.value).startswith(f"{f}:{line}: not valid YAML: {key!r} is given twice (first on line ")


def test_a_merge_keys_values_may_still_be_overridden(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("tasks:\n  - &ner {name: wnut16, max_seq_length: 64}\n  - <<: *ner\n    name: other\n")
    assert [(t.name, t.max_seq_length) for t in load_config(str(f)).tasks] == [("wnut16", 64), ("other", 64)]


def test_a_key_given_twice_in_a_json_file_or_an_override_value_is_one_line(tmp_path):
    f = tmp_path / "run.json"
    f.write_text('{"train": {"lr": 0.1, "seed": 3, "lr": 0.2}}')
    with pytest.raises(ConfigError, match=r"run\.json: not valid JSON \(key 'lr' is given twice in one object"):
        load_config(str(f))
    with pytest.raises(ConfigError, match=r"^train\.lr_scheduler_kwargs: 'power' is given twice in "):
        load_config(None, ["train.lr_scheduler_kwargs={power: 1, power: 2}"])


@pytest.mark.parametrize("text, overrides, message", [
    ("train:\n  lr: .nan\n", [], "train.lr: expected a finite number, got nan"),
    ("train:\n  dist_timeout_s: .inf\n", [], "train.dist_timeout_s: expected a finite number, got inf"),
    (None, ["train.lr=inf"], "train.lr: expected a finite number, got 'inf'"),
    (None, ["train.weight_decay=1e400"], "train.weight_decay: expected a finite number, got '1e400'"),
    (None, ["train.max_steps=null", "train.epochs=.inf"], "train.epochs: expected a finite number, got inf"),
    (None, ["mixer.policy=weights", "mixer.weights={wnut16: .nan}"], "mixer.weights.wnut16: expected a finite number"),
    (None, ["train.lr=1" + "0" * 400], "train.lr: expected float, got 1000"),  # too large for a float
    ('{"train": {"max_grad_norm": NaN}}', [], "train.max_grad_norm: expected a finite number, got nan"),
])
def test_a_number_that_is_not_finite_is_refused_naming_the_key(tmp_path, text, overrides, message):
    path = None
    if text is not None:
        path = tmp_path / ("run.json" if text.startswith("{") else "run.yaml")
        path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path and str(path), overrides)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("item, why", [("=3", "no key before ="), (" = 3", "no key before ="),
                                       ("train..lr=1", "an empty name in the key"), (".lr=1", "an empty name in the key"),
                                       ("train.=1", "an empty name in the key")])
def test_an_override_with_an_empty_key_names_the_override(item, why):
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert str(e.value) == f"override {item!r}: {why} (expected key=value, e.g. prompt.length=16)"


@pytest.mark.parametrize("item, comment", [("output_dir=runs/a #2", "#2"), ("task.data_dir=#x", "#x"),
                                           ("train={lr: 0.1} # fast", "# fast")])
def test_an_override_value_that_yaml_would_cut_at_a_comment_is_refused(item, comment):
    """YAML drops `` #...``: output_dir=runs/a #2 wrote to runs/a without a word."""
    key, raw = item.split("=", 1)
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert str(e.value) == (f"{key}: YAML reads {comment!r} in {raw!r} as a comment and would drop it; quote the "
                            f"value ({key}='{raw}') or leave the ' #' out")
    assert load_config(None, ["output_dir='runs/a #2'"]).output_dir == "runs/a #2"
    assert load_config(None, ["output_dir=runs/a#2"]).output_dir == "runs/a#2"  # not a comment in YAML


def test_a_mapping_override_merges_into_earlier_overrides_of_that_section():
    cfg = load_config(None, ["train.seed=3", "train={lr: 0.1}", "train.lr_scheduler=polynomial",
                             "train.lr_scheduler_kwargs={power: 2}", "train.lr_scheduler_kwargs={lr_end: 1e-5}"])
    assert (cfg.train.seed, cfg.train.lr) == (3, 0.1)  # train.seed=3 was dropped before
    assert cfg.train.lr_scheduler_kwargs == {"power": 2.0, "lr_end": 1e-5}
    assert load_config(None, ["train.lr=0.1", "train.lr=0.2"]).train.lr == 0.2  # the same key: the last one counts


# ------------------------------------------------------------------------------ the DeepSpeed JSON

@pytest.mark.parametrize("text, message", [
    ('{"train_micro_batch_size_per_gpu": 8, "train_micro_batch_size_per_gpu": 16}',
     "not valid JSON (key 'train_micro_batch_size_per_gpu' is given twice in one object"),
    ('{"zero_optimisation": {"stage": 3}}', "zero_optimisation: not a DeepSpeed key, DeepSpeed would ignore it "
                                            "(did you mean zero_optimization?)"),
    ('{"train_micro_batch_size": 8}', "train_micro_batch_size: not a DeepSpeed key, DeepSpeed would ignore it "
                                     "(did you mean train_micro_batch_size_per_gpu?)"),
    ('{"bfloat16": {"enabled": true}}', "bfloat16: write it as bf16"),
    ('{"zero_optimization": null}', "zero_optimization: expected an object, got None"),
    ('{"bf16": "true"}', "bf16: expected an object, got 'true'"),
    ('{"fp16": {"enabled": "yes"}}', "fp16.enabled: expected true, false or \"auto\", got 'yes'"),
    ('{"zero_optimization": {"stage": "3"}}', "zero_optimization.stage: expected 0, 1, 2 or 3, got '3'"),
    ('{"gradient_clipping": NaN}', "not valid JSON (gradient_clipping is nan, not a finite number; write a finite number, or null)"),
    ('{"gradient_clipping": -1}', "gradient_clipping: expected a number >= 0 or \"auto\", got -1"),
])
def test_a_deepspeed_json_that_deepspeed_would_read_otherwise_is_one_line_naming_the_key(tmp_path, text, message):
    f = tmp_path / "ds.json"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        read_ds_config(str(f))
    assert str(e.value).startswith(f"{f}: {message}") and "\n" not in str(e.value)


@pytest.mark.parametrize("zero, message", [
    ({"stage": 3, "stage3_prefetch_bucket": 5}, "zero_optimization.stage3_prefetch_bucket: extra inputs are not "
                                                "permitted, got 5"),
    ({"stage": 3, "offload_param": {"device": "gpu"}}, "zero_optimization.offload_param.device: input should be"),
    ({"stage": 3, "reduce_bucket_size": "big"}, "zero_optimization.reduce_bucket_size: input should be a valid integer"),
    ({"stage": 3, "zero_hpz_partition_size": "two"}, "zero_optimization.zero_hpz_partition_size: expected a positive "
                                                     "integer or \"auto\", got 'two'"),
])
def test_the_zero_section_is_checked_by_deepspeeds_own_model_before_anything_loads(zero, message):
    with pytest.raises(ConfigError) as e:
        resolve_ds_config({"zero_optimization": zero}, load_config(), world_size=2, hidden=384, src="ds.json")
    assert str(e.value).startswith(f"ds.json: {message}") and "\n" not in str(e.value)
    ok = {"zero_optimization": {"stage": 3}, "seq_parallel_communication_data_type": "fp32", "_comment": "x"}
    resolve_ds_config(ok, load_config(), world_size=2, hidden=384, src="ds.json")  # real DeepSpeed keys pass
