"""GLM checkpoints: the original layout (one file or model-parallel shards), the hub layout, and
ZeRO-3 partitioned loading all give the same model."""
import json
import os
import subprocess

import pytest
import torch

from deepprompt.errors import ConfigError
from deepprompt.models.backbones.glm import GLMAdapter
from deepprompt.models.glm.checkpoint import MP_FILE, merge_model_parallel, split_model_parallel
from deepprompt.models.glm.config import PRESETS, GLMConfig
from deepprompt.models.loading import load_tokenizer_and_config, resolve_model_path
from tests.engine.test_end_to_end import VENV_BIN
from tests.tiny import free_port, launch_env
from tests.models.glm import zero3_worker
from tests.models.glm.tiny_glm import save_tiny_glm, write_gpt2_files
from tests.tiny import REPO

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model, {layout: directory}) for one tiny random GLM written in every layout."""
    root = tmp_path_factory.mktemp("glm")
    one, model = save_tiny_glm(root / "original")
    two, _ = save_tiny_glm(root / "mp2", mp=2)
    hub = root / "hub"
    hub.mkdir()
    write_gpt2_files(hub)
    c = model.config
    (hub / "config.json").write_text(json.dumps({
        "model_type": "glm", "architectures": ["GLMModel"], "num_layers": c.num_hidden_layers,
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_attention_heads": c.num_attention_heads,
        "max_sequence_length": c.max_position_embeddings, "output_dropout_prob": 0.0, "attention_dropout_prob": 0.0}))
    from safetensors.torch import save_file
    save_file({"glm." + k: v.contiguous() for k, v in model.state_dict().items()}, str(hub / "model.safetensors"))
    hub_bin = root / "hub_bin"
    hub_bin.mkdir()
    for f in ("config.json", "vocab.json", "merges.txt"):
        (hub_bin / f).write_bytes((hub / f).read_bytes())
    torch.save({"glm." + k: v for k, v in model.state_dict().items()}, hub_bin / "pytorch_model.bin")
    return model, {"original": one, "mp2": two, "hub": hub, "hub_bin": hub_bin}


def logits(model, seed=0):
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(seed))
    return model.lm_logits(model(ids, sep=torch.tensor([5, 9])).last_hidden_state)


@pytest.mark.parametrize("layout", ["original", "mp2", "hub", "hub_bin"])
def test_every_layout_loads_the_same_model(saved, layout):
    model, dirs = saved
    path = resolve_model_path(str(dirs[layout]))
    tok, cfg = load_tokenizer_and_config(path)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (2, 32, model.config.vocab_size)
    assert tok.convert_tokens_to_ids("[MASK]") == 303
    loaded = GLMAdapter.load_model(path, torch.float32).eval()
    assert torch.equal(logits(loaded), logits(model))


def test_model_parallel_split_follows_the_megatron_layout(saved):
    model, dirs = saved
    full = model.state_dict()
    parts = [torch.load(dirs["mp2"] / MP_FILE.format(r), weights_only=True)["module"] for r in range(2)]
    h = 32
    qkv = full["transformer.layers.0.attention.query_key_value.weight"]
    for r in range(2):  # rank r keeps its half of the heads of Q, of K and of V, in that order
        mine = parts[r]["transformer.layers.0.attention.query_key_value.weight"]
        want = torch.cat([qkv[i * h + r * h // 2: i * h + (r + 1) * h // 2] for i in range(3)])
        assert torch.equal(mine, want)
    assert parts[1]["transformer.layers.1.mlp.dense_4h_to_h.weight"].shape == (h, 2 * h)  # columns
    assert parts[1]["transformer.layers.1.mlp.dense_h_to_4h.weight"].shape == (2 * h, h)  # rows
    assert torch.equal(parts[1]["transformer.layers.1.attention.dense.bias"], full["transformer.layers.1.attention.dense.bias"])
    for name, t in full.items():
        assert torch.equal(merge_model_parallel(name, split_model_parallel(name, t, 4)), t)


def test_wrong_shape_is_one_line_naming_the_tensor(saved, tmp_path):
    _, dirs = saved
    for f in dirs["original"].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((tmp_path / "glm_config.json").read_text())
    (tmp_path / "glm_config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 32}))
    with pytest.raises(ConfigError, match=r"transformer.position_embeddings.weight has shape \(64, 32\), the config gives \(32, 32\)"):
        GLMAdapter.load_model(str(tmp_path), torch.float32)
    (tmp_path / "glm_config.json").write_text(json.dumps({**cfg, "num_layer": 3}))
    with pytest.raises(ConfigError, match="glm_config.json: unknown key 'num_layer'"):
        load_tokenizer_and_config(str(tmp_path))


@pytest.mark.parametrize("layout, name", [("hub", "model.safetensors"), ("original", MP_FILE.format(0))])
def test_a_truncated_weight_file_is_one_line_naming_it(saved, tmp_path, layout, name):
    _, dirs = saved
    for f in dirs[layout].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:-100])  # a copy cut short
    with pytest.raises(ConfigError) as e:
        GLMAdapter.load_model(str(tmp_path), torch.float32)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / name}: not a readable ") and "truncated or corrupt" in msg and "\n" not in msg


@pytest.mark.parametrize("layout, name", [("original", "glm_config.json"), ("hub", "config.json"),
                                          ("hub", "vocab.json"), ("hub", "merges.txt")])
def test_a_glm_text_file_that_is_not_utf8_is_one_line_naming_it(saved, tmp_path, layout, name):
    _, dirs = saved
    for f in dirs[layout].iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / name).write_bytes(b"\xff" + (tmp_path / name).read_bytes())
    with pytest.raises(ConfigError, match=rf"{name}:1: not UTF-8 text \(byte 0xff at byte offset 0\); save it as UTF-8$"):
        load_tokenizer_and_config(resolve_model_path(str(tmp_path)))


def test_presets_have_the_published_sizes():
    assert 330e6 < PRESETS["glm-large"].num_params() < 340e6
    assert 1.8e9 < PRESETS["glm-xlarge"].num_params() < 2.1e9
    assert 9.8e9 < PRESETS["glm-xxlarge"].num_params() < 10.0e9
    xx = PRESETS["glm-xxlarge"]
    assert (xx.num_hidden_layers, xx.hidden_size, xx.num_attention_heads, xx.max_position_embeddings) == (48, 4096, 64, 1024)
    from tests.models.glm.tiny_glm import tiny_model
    m = tiny_model()
    assert sum(p.numel() for p in m.parameters()) == m.config.num_params()
    out = subprocess.run([os.path.join(VENV_BIN, "python"), "-m", "deepprompt", "list", "backbones"], cwd=REPO,
                         env=launch_env(), capture_output=True, text=True, timeout=120)
    assert {"glm", "glm-large", "glm-xlarge", "glm-xxlarge"} <= set(out.stdout.split())
    with pytest.raises(ConfigError, match="shape preset without a tokenizer"):
        load_tokenizer_and_config(resolve_model_path("glm-xxlarge"))
    assert GLMConfig().model_type == "glm-original"


def _check_zero3(results: list[dict], model):
    """Every rank gathered the original tensors back; logits equal the plain model's."""
    plain = zero3_worker.prompted(model)
    want = plain(zero3_worker.fixed_batch(), "t")
    for r in results:
        for k, v in model.state_dict().items():
            assert torch.equal(r["state"][k], v), k
        torch.testing.assert_close(r["logits"], want.logits, atol=1e-5, rtol=1e-5)
        assert abs(r["loss"] - want.loss.item()) < 1e-5
        assert not torch.allclose(r["logits_after_step"], r["logits"])  # the step moved the prefix


@pytest.mark.parametrize("ds_config", ["ds_configs/zero3.json", "ds_configs/zero3_offload.json"])
def test_zero3_one_rank_in_process(saved, tmp_path, ds_config):
    model, dirs = saved
    r = zero3_worker.run(str(dirs["mp2"]), str(tmp_path), ds_config)
    assert r["local_numel"] >= model.config.num_params()
    _check_zero3([r], model)


@pytest.mark.multirank
def test_zero3_two_ranks_load_mp_shards_and_run_the_cloze_head(saved, tmp_path):
    model, dirs = saved
    cmd = [os.path.join(VENV_BIN, "deepspeed"), "--num_gpus", "2", "--no_ssh_check", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "tests/models/glm/zero3_worker.py", str(dirs["mp2"]), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    n = model.config.num_params()
    assert all(r["world"] == 2 and r["local_numel"] < 0.6 * n for r in results)  # each rank stores about half
    _check_zero3(results, model)


@pytest.mark.parametrize("text, message", [
    ('{"weight_map": {"a": "m-1.safetensors",', r"model\.safetensors\.index\.json:1: not valid JSON \(Expecting"),
    ('{"metadata": {}}', r"model\.safetensors\.index\.json: no \"weight_map\" object"),
    ('{"weight_map": {"a": 3}}', r"model\.safetensors\.index\.json: no \"weight_map\" object"),
])
def test_a_sharded_index_that_does_not_read_is_one_line(tmp_path, text, message):
    from deepprompt.models.glm.checkpoint import _weight_map

    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        _weight_map(tmp_path / "model.safetensors.index.json")
