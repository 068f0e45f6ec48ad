"""Finding and reading a backbone: a bad model directory is one line naming the file at fault."""
import pytest
import torch

from deepprompt.errors import ConfigError
from deepprompt.models.loading import load_hf_backbone, load_tokenizer_and_config, resolve_model_path
from tests.tiny import save_tiny_bert


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_a_model_path_that_is_a_file_is_not_reported_missing(tiny_model):
    with pytest.raises(ConfigError) as e:
        resolve_model_path(str(tiny_model / "model.safetensors"))
    assert str(e.value).startswith(f"model.path: {tiny_model / 'model.safetensors'} is a file; it must be a "
                                   f"checkpoint directory") and "does not exist" not in str(e.value)


def test_truncated_weights_name_the_file(tiny_model, tmp_path):
    broken = _copy(tiny_model, tmp_path / "m")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError) as e:
        load_hf_backbone(str(broken), torch.float32, None, {})
    assert str(e.value).startswith(f"model.path: {weights}: not a readable safetensors file (incomplete metadata")


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "tokenizer_config.json"])
def test_config_and_tokenizer_files_that_are_not_utf8_name_the_file(tiny_model, tmp_path, name):
    broken = _copy(tiny_model, tmp_path / "m")
    data = (broken / name).read_bytes()
    (broken / name).write_bytes(data[:40] + b"\xe9" + data[40:])
    with pytest.raises(ConfigError, match=rf"{name}:\d+: not UTF-8 text \(byte 0xe9 at byte offset 40\); save it as UTF-8$"):
        load_tokenizer_and_config(str(broken))


def test_a_weight_the_checkpoint_lacks_is_refused_not_left_random(tiny_model, tmp_path):
    """transformers initialises a weight missing from the files at random and only logs it; frozen,
    the backbone would stay partly random for the whole run. A key it does not use (the pooler that
    add_pooling_layer=False drops) is no problem."""
    from safetensors.torch import load_file, save_file

    broken = _copy(tiny_model, tmp_path / "m")
    weights = load_file(str(broken / "model.safetensors"))
    assert any(k.startswith("pooler.") for k in weights)  # present in the files, unused: still loads
    load_hf_backbone(str(broken), torch.float32, None, {"add_pooling_layer": False})
    del weights["encoder.layer.1.attention.self.query.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError) as e:
        load_hf_backbone(str(broken), torch.float32, None, {"add_pooling_layer": False})
    assert str(e.value) == (f"model.path: {broken}: 1 weight(s) of BertModel are not in its checkpoint files "
                            f"(e.g. encoder.layer.1.attention.self.query.weight) and would start random, then stay "
                            f"frozen; the files are of another architecture or saved under other names")


def test_a_missing_weight_is_refused_under_zero3_too(tiny_model, tmp_path):
    """Under ZeRO-3 the backbone is built partitioned (HfDeepSpeedConfig): the same check holds there."""
    from safetensors.torch import load_file, save_file

    from tests.tiny import build_zero3

    broken = _copy(tiny_model, tmp_path / "m")
    weights = load_file(str(broken / "model.safetensors"))
    del weights["embeddings.word_embeddings.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"^model.path: .*: 1 weight\(s\) of BertModel are not in its checkpoint "
                                          r"files \(e.g. embeddings.word_embeddings.weight\)"):
        build_zero3(broken)


def test_a_decoder_saved_without_its_lm_head_loads_for_heads_of_their_own_only(tmp_path):
    """A decoder saved as ``*Model`` (an embedding model, say) has no ``lm_head.weight``: classification and
    token heads never read it, so it loads; the heads that score through it (lm, a decoder's cloze) refuse
    it before any step rather than train against a random frozen projection. Any other missing weight is
    still refused."""
    from safetensors.torch import load_file, save_file

    from deepprompt.models.backbones.decoder import DecoderAdapter
    from deepprompt.models.heads import ClassificationHead, ClozeHead, LMHead
    from tests.decoder_tiny import save_tiny_decoder

    path = save_tiny_decoder(tmp_path / "m")
    full = DecoderAdapter(DecoderAdapter.load_model(str(path), torch.float32))
    assert full.lm_head_loaded
    weights = load_file(str(path / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    adapter = DecoderAdapter(DecoderAdapter.load_model(str(path), torch.float32))
    assert not adapter.lm_head_loaded
    ClassificationHead(32, 3).bind(adapter)
    for head, name in ((LMHead(32), "lm"), (ClozeHead(32), "cloze")):
        with pytest.raises(ConfigError, match=rf"^task head {name}: model.path has no LM head weights"):
            head.bind(adapter)
    del weights["model.norm.weight"]
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConfigError, match=r"2 weight\(s\) of LlamaForCausalLM are not in its checkpoint files"):
        DecoderAdapter.load_model(str(path), torch.float32)
