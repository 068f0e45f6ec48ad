"""Prompt artifacts: save under ZeRO-3 -> load -> apply gives the same outputs (under ZeRO-3 or
plain PyTorch); the wrong backbone is refused; nothing is unpickled."""
from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch

from deepprompt.artifacts import (DESCRIPTION_FILE, FORMAT, TENSORS_FILE, apply_artifact, load_artifact,
                                  save_artifact, weights_fingerprint)
from deepprompt.config import load_config
from deepprompt.engine import comm, setup
from deepprompt.errors import ConfigError
from deepprompt.models.loading import load_tokenizer_and_config
from deepprompt.tasks import build_task
from tests.artifact_utils import dev_batch, plain_model, run_config, train_briefly
from tests.tiny import FIXTURES, REPO, save_tiny_bert

ZERO3 = str(REPO / "ds_configs/zero3.json")


def _build_zero3(path, seed: int):
    cfg = load_config(None, [f"model.path={path}", f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4",
                             "task.max_seq_length=32", "train.batch_size=4", "train.micro_batch_size=4",
                             "train.lr=3e-2", "train.max_steps=10", f"train.seed={seed}"])
    tokenizer, _ = load_tokenizer_and_config(str(path))
    task = build_task(cfg.task, tokenizer)
    return cfg, task, setup.build_for(cfg, ZERO3, [task])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A prefix trained 4 steps under ZeRO-3 (in this process, one rank), saved, and its dev logits."""
    path = save_tiny_bert(tmp_path_factory.mktemp("bert"))
    comm.init_distributed()
    cfg, task, built = _build_zero3(path, seed=42)
    feats = task.features("train")
    for step in range(4):
        loss = built.engine(task.collate(feats[4 * step: 4 * step + 4]), task.name).loss
        built.engine.backward(loss)
        built.engine.step()
    built.engine.eval()
    with torch.no_grad():
        logits = built.engine(dev_batch(task), task.name).logits
    out = save_artifact(built.engine, cfg, [task], str(path), tmp_path_factory.mktemp("art") / "artifact",
                        extra={"steps": 4})
    return path, out, logits, task


def test_files_and_description(saved):
    path, out, _, task = saved
    assert sorted(p.name for p in out.iterdir()) == [DESCRIPTION_FILE, TENSORS_FILE]
    desc = json.loads((out / DESCRIPTION_FILE).read_text())
    assert desc["format"] == FORMAT and desc["format_version"] == 1
    assert desc["method"] == "prefix" and desc["includes_backbone"] is False and desc["extra"] == {"steps": 4}
    assert desc["prompt"]["length"] == 4 and desc["run"]["prompt"] == desc["prompt"]
    b = desc["backbone"]
    assert b["path"] == str(path) and b["model_type"] == "bert" and b["family"] == "bert"
    assert len(b["config_sha256"]) == 64 and b["weights_fingerprint"]["files"][0][0] == "model.safetensors"
    assert desc["spec"] == {"family": "bert", "num_layers": 2, "hidden": 32, "num_heads": 4, "max_positions": 64,
                            "init_std": 0.2}
    (saved_task,) = desc["tasks"]
    assert {k: v for k, v in saved_task.items() if k != "config"} == {
        "name": "wnut16", "head": "token", "labels": task.labels, "max_seq_length": 32}
    assert saved_task["config"]["name"] == "wnut16" and saved_task["config"]["max_seq_length"] == 32
    # P x layers x 2 x hidden, and the head: nothing of the backbone
    assert desc["tensors"] == {"prompt.embedding.weight": {"shape": [4, 2 * 2 * 32], "dtype": "float32"},
                               "heads.wnut16.out.weight": {"shape": [len(task.labels), 32], "dtype": "float32"},
                               "heads.wnut16.out.bias": {"shape": [len(task.labels)], "dtype": "float32"}}
    assert (out / TENSORS_FILE).stat().st_size < 10_000


def test_zero3_round_trip_gives_identical_outputs(saved):
    path, out, logits, task = saved
    cfg, task, built = _build_zero3(path, seed=7)  # another seed: another random prompt and head
    built.engine.eval()
    with torch.no_grad():
        before = built.engine(dev_batch(task), task.name).logits
        assert not torch.allclose(before, logits, atol=1e-3)
        apply_artifact(built.engine, load_artifact(out))
        after = built.engine(dev_batch(task), task.name).logits
    torch.testing.assert_close(after, logits, rtol=0, atol=1e-6)


def test_applies_without_deepspeed(saved):
    path, out, logits, task = saved
    model, task = plain_model(run_config(path), seed=3)
    apply_artifact(model, load_artifact(out / DESCRIPTION_FILE))  # the JSON path works too
    with torch.no_grad():
        torch.testing.assert_close(model(dev_batch(task), task.name).logits, logits, rtol=0, atol=1e-6)


def test_other_backbone_is_refused_in_one_line(saved, tmp_path):
    _, out, _, _ = saved
    other = save_tiny_bert(tmp_path / "other", num_layers=3)
    model, _ = plain_model(run_config(other))
    with pytest.raises(ConfigError) as e:
        apply_artifact(model, load_artifact(out))
    msg = str(e.value)
    assert "\n" not in msg and "was made on" in msg and str(other) in msg and "config.json sha256" in msg


def test_shape_mismatch_is_refused(saved):
    path, out, _, _ = saved
    model, _ = plain_model(run_config(path, "prompt.length=6"))
    with pytest.raises(ConfigError, match=r"prompt\.embedding\.weight has shape \(4, 128\) but the model's is \(6, 128\)"):
        apply_artifact(model, load_artifact(out))


def test_loading_never_unpickles(saved, monkeypatch):
    _, out, _, _ = saved

    def refuse(*a, **k):
        raise AssertionError("unpickling during load_artifact")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, name, refuse)
    art = load_artifact(out)
    assert set(art.tensors) == set(art.description["tensors"])
    # the tensor file is plain safetensors: an 8-byte header length, then a JSON header
    raw = (out / TENSORS_FILE).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["prompt.embedding.weight"]["dtype"] == "F32"


def test_not_an_artifact(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_artifact(tmp_path)
    (tmp_path / DESCRIPTION_FILE).write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="not a deepprompt prompt artifact"):
        load_artifact(tmp_path)


def test_finetune_exports_heads_only(tmp_path):
    path = save_tiny_bert(tmp_path / "bert")
    run = run_config(path, "prompt.method=finetune")
    model, task = plain_model(run)
    out = save_artifact(model, run, [task], str(path), tmp_path / "artifact")
    art = load_artifact(out)
    assert art.description["includes_backbone"] is False and "not included" in art.description["note"]
    assert all(k.startswith("heads.") for k in art.tensors)
    fresh, _ = plain_model(run, seed=5)
    apply_artifact(fresh, art)
    torch.testing.assert_close(fresh.heads["wnut16"].out.weight, model.heads["wnut16"].out.weight, rtol=0, atol=0)


def test_weights_fingerprint_reads_the_ends_of_each_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"a" * (3 << 20))
    (tmp_path / "config.json").write_text("{}")  # not a weight file
    first = weights_fingerprint(tmp_path)
    assert first["files"] == [["model.safetensors", 3 << 20]]
    assert weights_fingerprint(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"a" * ((3 << 20) - 1) + b"b")  # last byte differs
    assert weights_fingerprint(tmp_path)["sha256"] != first["sha256"]


def test_plain_round_trip_after_training(tmp_path):
    path = save_tiny_bert(tmp_path / "bert")
    run = run_config(path, "prompt.reparam=true", "prompt.reparam_hidden=16", "prompt.layers=[-1]")
    model, task = plain_model(run)
    train_briefly(model, task, steps=3)
    out = save_artifact(model, run, [task], str(path), tmp_path / "artifact")
    fresh, _ = plain_model(run, seed=9)
    apply_artifact(fresh, load_artifact(out))
    with torch.no_grad():
        torch.testing.assert_close(fresh(dev_batch(task), task.name).logits, model(dev_batch(task), task.name).logits,
                                   rtol=0, atol=0)


def test_a_truncated_or_not_utf8_artifact_is_one_line_naming_the_file(saved, tmp_path):
    _, out, _, _ = saved
    for f in out.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    tensors = tmp_path / TENSORS_FILE
    tensors.write_bytes(tensors.read_bytes()[:-10])
    with pytest.raises(ConfigError) as e:
        load_artifact(tmp_path)
    assert str(e.value).startswith(f"{tensors}: not a readable safetensors file (incomplete metadata")
    desc = tmp_path / DESCRIPTION_FILE
    desc.write_bytes(desc.read_bytes().replace(b'"format"', b'"f\xf6rmat"', 1))
    with pytest.raises(ConfigError, match=rf"{DESCRIPTION_FILE}:\d+: not UTF-8 text \(byte 0xf6 .*save it as UTF-8$"):
        load_artifact(tmp_path)


@pytest.fixture(scope="module")
def plain_saved(tmp_path_factory):
    """An artifact of an untrained plain (no DeepSpeed) model: quick, for damaging its files."""
    path = save_tiny_bert(tmp_path_factory.mktemp("bert"))
    run = run_config(path)
    model, task = plain_model(run)
    return save_artifact(model, run, [task], str(path), tmp_path_factory.mktemp("art") / "artifact")


@pytest.mark.parametrize("damage, problem", [
    (lambda d: d.pop("backbone"), r"backbone is missing, expected an object"),
    (lambda d: d.pop("method"), r"method is missing, expected a string"),
    (lambda d: d.pop("run"), r"run is missing, expected an object"),
    (lambda d: d["backbone"].pop("config_sha256"), r"backbone.config_sha256 is missing, expected a string"),
    (lambda d: d["tasks"][0].update(labels="O"), r"tasks\[0\].labels is 'O', expected a list"),
    (lambda d: d["tasks"].append(7), r"tasks\[1\] is 7, expected an object"),
    (lambda d: d.update(tensors=[1]), r"tensors is \[1\], expected an object"),
    (lambda d: d["tensors"]["prompt.embedding.weight"].pop("shape"), r"tensors.prompt.embedding.weight has no shape"),
    (lambda d: d["spec"].pop("hidden"), r"spec is not a backbone spec \(.*hidden"),
    (lambda d: d.update(format_version="1"), r"format_version is '1', not a number"),
])
def test_a_description_missing_a_field_is_one_line_naming_the_field(plain_saved, tmp_path, damage, problem):
    """Every reader indexes the description directly (serving, evaluation, init_from, PEFT export):
    a field missing or of another type is refused when loading, not met as a KeyError later."""
    out = plain_saved
    for f in out.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    desc = json.loads((out / DESCRIPTION_FILE).read_text())
    damage(desc)
    (tmp_path / DESCRIPTION_FILE).write_text(json.dumps(desc))
    with pytest.raises(ConfigError, match=rf"^{tmp_path / DESCRIPTION_FILE}: {problem}.*save the artifact again$") as e:
        load_artifact(tmp_path)
    assert "\n" not in str(e.value)


def test_an_artifact_directory_that_is_a_file_is_one_line(tmp_path):
    path = save_tiny_bert(tmp_path / "bert")
    run = run_config(path)
    model, task = plain_model(run)
    (tmp_path / "artifact").write_text("mine")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'artifact'}: is a file, not a directory to write the "
                                          r"artifact into; give another path$"):
        save_artifact(model, run, [task], str(path), tmp_path / "artifact")
    assert (tmp_path / "artifact").read_text() == "mine"


def test_tensors_and_description_from_two_saves_are_refused(tmp_path):
    """The two files are renamed one after the other: a save cut between them leaves the new tensors
    beside the old description, alike in every shape. The recorded SHA-256 of the tensors refuses the
    pair; an artifact saved before the hash was recorded still loads."""
    path = save_tiny_bert(tmp_path / "bert")
    run = run_config(path)
    model, task = plain_model(run)
    early = save_artifact(model, run, [task], str(path), tmp_path / "early")
    train_briefly(model, task, steps=2)
    late = save_artifact(model, run, [task], str(path), tmp_path / "late")
    assert (early / TENSORS_FILE).read_bytes() != (late / TENSORS_FILE).read_bytes()
    (early / TENSORS_FILE).write_bytes((late / TENSORS_FILE).read_bytes())  # the cut save: tensors renamed, not its JSON
    with pytest.raises(ConfigError, match=rf"^{early / TENSORS_FILE}: not the tensors {DESCRIPTION_FILE} was saved "
                                          r"with \(its SHA-256 differs\): .*restore both files from one copy$"):
        load_artifact(early)
    desc = json.loads((early / DESCRIPTION_FILE).read_text())
    del desc["tensors_sha256"]  # as artifacts were written before
    (early / DESCRIPTION_FILE).write_text(json.dumps(desc))
    assert load_artifact(early).tensors.keys() == load_artifact(late).tensors.keys()
