"""PEFT export: the adapter loads with ``PeftModel.from_pretrained``, its prefix encoder yields
exactly our keys/values, and its forward equals ours once PEFT's position shift is undone."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from deepprompt.artifacts import save_artifact
from deepprompt.errors import ConfigError
from deepprompt.peft_export import CONFIG_FILE, WEIGHTS_FILE, export_peft
from tests.artifact_utils import dev_batch, plain_model, run_config, train_briefly
from tests.tiny import REPO, save_tiny, save_tiny_bert

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def trained_artifact(path, out, *overrides):
    run = run_config(path, *overrides)
    model, task = plain_model(run)
    train_briefly(model, task)
    return model, task, save_artifact(model, run, [task], str(path), out)


def load_peft(backbone_path, adapter_dir):
    from transformers import AutoModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(AutoModel.from_pretrained(backbone_path), str(adapter_dir)).eval()


@pytest.mark.parametrize("overrides", [(), ("prompt.reparam=true", "prompt.reparam_hidden=16")],
                         ids=["embedding", "reparam"])
def test_peft_prefix_equals_ours(bert, tmp_path, overrides):
    model, task, art = trained_artifact(bert, tmp_path / "artifact", *overrides)
    out = export_peft(art, tmp_path / "peft")
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["num_virtual_tokens"] == 4
    assert config["num_layers"] == 2 and config["token_dim"] == 32 and config["prefix_projection"] is False

    pm = load_peft(bert, out)
    assert isinstance(pm, peft.PeftModelForFeatureExtraction)
    batch = dev_batch(task)
    b, length = batch["input_ids"].shape
    with torch.no_grad():
        cache = pm.get_prompt(b)
        ours = model.prompt(b).layer_kv
        for layer in range(2):  # PEFT's prefix encoder gives exactly our keys and values
            assert torch.equal(cache.layers[layer].keys, ours[layer][0])
            assert torch.equal(cache.layers[layer].values, ours[layer][1])

        model.adapter.set_prefix(ours)
        hidden = model.adapter.forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        # PEFT adds P to position_ids (and starts BERT's positions at P without them): pass
        # arange(L) - P and the tokens sit at deepprompt's positions 0..L-1
        positions = torch.arange(length).expand(b, -1) - 4
        same = pm(**inputs, position_ids=positions).last_hidden_state
        shifted = pm(**inputs).last_hidden_state
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(same[real], hidden[real], rtol=0, atol=1e-5)
    assert (shifted[real] - hidden[real]).abs().max() > 1e-2  # PEFT's default: positions shifted by P


def test_roberta_equal_once_positions_are_given(tmp_path):
    """RoBERTa numbers positions from padding_idx + 1; PEFT shifts those by P as well."""
    path = save_tiny("roberta", tmp_path / "roberta")
    model, task, art = trained_artifact(path, tmp_path / "artifact")
    pm = load_peft(path, export_peft(art, tmp_path / "peft"))
    batch = dev_batch(task)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pad = model.backbone.config.pad_token_id
    real = ids.ne(pad)
    positions = torch.cumsum(real.long(), 1) * real + pad  # RoBERTa's own position ids
    with torch.no_grad():
        model.adapter.set_prefix(model.prompt(ids.shape[0]).layer_kv)
        hidden = model.adapter.forward(input_ids=ids, attention_mask=mask)
        same = pm(input_ids=ids, attention_mask=mask, position_ids=positions - 4).last_hidden_state
    torch.testing.assert_close(same[mask.bool()], hidden[mask.bool()], rtol=0, atol=1e-5)


def test_export_from_a_model(bert, tmp_path):
    model, task, art = trained_artifact(bert, tmp_path / "artifact")
    a = export_peft(art, tmp_path / "from_artifact")
    m = export_peft(model, tmp_path / "from_model")
    assert (a / WEIGHTS_FILE).read_bytes() == (m / WEIGHTS_FILE).read_bytes()


def test_partial_depth_is_refused(bert, tmp_path):
    _, _, art = trained_artifact(bert, tmp_path / "artifact", "prompt.layers=[-1]")
    with pytest.raises(ConfigError, match=r"prompt.layers=\[-1\] puts a prefix on 1 of 2 layers; PEFT prefix tuning "
                                          r"has one on every layer"):
        export_peft(art, tmp_path / "peft")


@pytest.mark.parametrize("method", ["prompt", "finetune"])
def test_other_methods_are_refused(bert, tmp_path, method):
    run = run_config(bert, f"prompt.method={method}")
    model, task = plain_model(run)
    art = save_artifact(model, run, [task], str(bert), tmp_path / "artifact")
    with pytest.raises(ConfigError, match=f"method '{method}' is not a key/value prefix"):
        export_peft(art, tmp_path / "peft")


def test_deberta_is_refused(tmp_path):
    path = save_tiny("deberta-v2", tmp_path / "deberta")
    run = run_config(path)
    model, task = plain_model(run)
    art = save_artifact(model, run, [task], str(path), tmp_path / "artifact")
    with pytest.raises(ConfigError, match="family 'deberta-v2' is not supported"):
        export_peft(art, tmp_path / "peft")



@pytest.mark.parametrize("blocker", ["out_dir", CONFIG_FILE])
def test_a_path_in_the_way_of_the_adapter_is_one_line(bert, tmp_path, blocker):
    """out_dir a file, or a directory where adapter_config.json goes: one line naming it (was a
    FileExistsError / IsADirectoryError traceback)."""
    _, _, art = trained_artifact(bert, tmp_path / "artifact")
    out = tmp_path / "peft"
    if blocker == "out_dir":
        out.write_text("mine")
        says = rf"^{out}: is a file, not a directory to write the PEFT adapter into; give another path$"
    else:
        (out / CONFIG_FILE).mkdir(parents=True)
        says = rf"^{out / CONFIG_FILE}: cannot write it \(Is a directory\)$"
    with pytest.raises(ConfigError, match=says):
        export_peft(art, out)
    assert not [p.name for p in (out if out.is_dir() else tmp_path).iterdir() if p.name.startswith(".")]  # no temp

def test_command_line(bert, tmp_path):
    _, _, art = trained_artifact(bert, tmp_path / "artifact")
    proc = subprocess.run([sys.executable, "-m", "deepprompt", "export-peft", str(art), str(tmp_path / "peft")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "peft" / WEIGHTS_FILE).is_file() and (tmp_path / "peft" / CONFIG_FILE).is_file()
    proc = subprocess.run([sys.executable, "-m", "deepprompt", "export-peft", str(tmp_path / "nothing"),
                           str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("deepprompt: error: --artifact:")
