"""MPT-2 stage 2 (prompt.init_from): a run built from a multi-task stage-1 artifact starts from
exactly the saved prompt (and, with init_head, head) values, in the parameters AND in ZeRO-3's fp32
master copy the optimizer steps from; every mismatch is refused in one line before weights load.
In this process, one rank."""
from __future__ import annotations

import pytest
import torch
from deepspeed.utils import safe_get_full_fp32_param

from deepprompt.artifacts import exported_parameters, gathered, save_artifact
from deepprompt.config import load_config
from deepprompt.engine import comm, init_from, setup
from deepprompt.errors import ConfigError
from deepprompt.models.loading import load_tokenizer_and_config
from deepprompt.tasks import build_task
from tests.tiny import FIXTURES, REPO, save_tiny_bert

ZERO3 = str(REPO / "ds_configs/zero3.json")
WNUT = FIXTURES / "wnut16"


def _register(name: str) -> str:
    """A second tagging task reading the same fixture files (a test-only name; registered once)."""
    from deepprompt.registry import TASKS
    from deepprompt.tasks.ner import Wnut16
    if name not in TASKS:
        TASKS.register(name)(type(name.replace("-", "_"), (Wnut16,), {}))
    return name


def _config(model, *overrides):
    return load_config(None, [f"model.path={model}", f"task.data_dir={WNUT}", "prompt.length=4",
                              "task.max_seq_length=32", "train.batch_size=4", "train.micro_batch_size=4",
                              "train.lr=3e-2", "train.max_steps=10", *overrides])


def _build(run, model, init=None):
    tokenizer, _ = load_tokenizer_and_config(str(model))
    tasks = [build_task(c, tokenizer) for c in run.task_configs()]
    return tasks, setup.build_for(run, ZERO3, tasks, init=init)


def _prepare(run, model):
    tokenizer, _ = load_tokenizer_and_config(str(model))
    tasks = [build_task(c, tokenizer) for c in run.task_configs()]
    return init_from.prepare(run, str(model), "bert", tasks)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Two tasks trained under ZeRO-3 with one shared prompt (alternating steps), saved."""
    model = save_tiny_bert(tmp_path_factory.mktemp("bert"))
    comm.init_distributed()
    other = _register("ner-copy")
    run = _config(model, f"tasks=[{{name: wnut16}}, {{name: {other}}}]")
    tasks, built = _build(run, model)
    for step in range(6):
        task = tasks[step % 2]
        feats = task.features("train")
        loss = built.engine(task.collate(feats[4 * step: 4 * step + 4]), task.name).loss
        built.engine.backward(loss)
        built.engine.step()
    out = save_artifact(built.engine, run, tasks, str(model), tmp_path_factory.mktemp("s1") / "artifact")
    from deepprompt.artifacts import load_artifact
    return model, out, load_artifact(out).tensors


def _state(built):
    params = exported_parameters(built.model)
    with gathered(list(params.values())):
        values = {k: p.detach().clone() for k, p in params.items()}
    masters = {k: safe_get_full_fp32_param(p).clone() for k, p in params.items()}
    return values, masters


def test_stage2_starts_from_exactly_the_saved_values(stage1):
    model, out, saved = stage1
    run = _config(model, f"prompt.init_from={out}", "prompt.init_head=true")
    init, summary = _prepare(run, model)
    assert summary["stage1_tasks"] == ["wnut16", "ner-copy"] and summary["heads"] == ["wnut16"]
    _, built = _build(run, model, init=init)
    values, masters = _state(built)
    assert set(values) == {k for k in saved if k.startswith("prompt.") or k.startswith("heads.wnut16.")}
    for k in values:  # bit-identical, in the parameter and in the fp32 master the optimizer steps from
        assert torch.equal(values[k], saved[k]) and torch.equal(masters[k], saved[k]), k
    # without init_head only the prompt is taken (the head stays the seed's fresh one)
    _, summary = _prepare(_config(model, f"prompt.init_from={out}"), model)
    assert summary["heads"] == [] and summary["prompt_tensors"] == ["prompt.embedding.weight"]


@pytest.mark.parametrize("override, message", [
    ("prompt.length=6", "has prompt.length=4 but this run has prompt.length=6"),
    ("prompt.method=prompt", "has prompt.method='prefix' but this run has prompt.method='prompt'"),
    ("prompt.layers=[-1]", "has prompt.layers=None but this run has prompt.layers=[-1]"),
    ("prompt.method=finetune", "only prompt methods"),
])
def test_a_different_prompt_is_refused_in_one_line(stage1, override, message):
    model, out, _ = stage1
    with pytest.raises(ConfigError) as e:
        _prepare(_config(model, f"prompt.init_from={out}", override), model)
    assert message in str(e.value) and str(out) in str(e.value) and "\n" not in str(e.value)


def test_another_backbone_is_refused_in_one_line(stage1, tmp_path):
    _, out, _ = stage1
    other = save_tiny_bert(tmp_path / "other", num_layers=3)
    with pytest.raises(ConfigError) as e:
        _prepare(_config(other, f"prompt.init_from={out}"), other)
    assert "was made on" in str(e.value) and str(other) in str(e.value) and "\n" not in str(e.value)


def test_init_head_needs_a_task_of_stage_1_and_a_missing_artifact_is_named(stage1, tmp_path):
    model, out, _ = stage1
    run = _config(model, f"task.name={_register('unseen-ner')}", f"prompt.init_from={out}", "prompt.init_head=true")
    with pytest.raises(ConfigError, match=r"prompt.init_head: artifact .* has heads for wnut16, ner-copy, none of "
                                          r"this run's tasks \(unseen-ner\)"):
        _prepare(run, model)
    with pytest.raises(ConfigError, match=r"prompt.init_from: --artifact: .*nowhere.* does not exist"):
        _prepare(_config(model, f"prompt.init_from={tmp_path / 'nowhere'}"), model)
