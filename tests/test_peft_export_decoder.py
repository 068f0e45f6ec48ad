"""PEFT export of a decoder's prefix (CAUSAL_LM, grouped-query shapes): the exported adapter gives
the same logits under PEFT as the artifact under deepprompt, although PEFT numbers the real tokens
from P (the exported keys are rotated forward by P positions)."""
from __future__ import annotations

import pytest
import torch

from deepprompt.artifacts import save_artifact
from deepprompt.peft_export import export_peft
from tests.decoder_tiny import save_tiny_decoder, write_generation_data
from tests.engine.test_decoder_serving import plain_decoder_model


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "glm4"])
def test_exported_decoder_prefix_gives_the_same_logits_under_peft(model_type, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    path = save_tiny_decoder(tmp_path / "model", model_type)
    data = write_generation_data(tmp_path / "data", n_train=2, n_dev=1)
    model, run, task = plain_decoder_model(path, data, "generation", "prompt.length=3")
    art = save_artifact(model, run, [task], str(path), tmp_path / "artifact")
    out = export_peft(art, tmp_path / "peft")
    cfg = __import__("json").loads((out / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["num_attention_heads"] == 2
    assert cfg["token_dim"] == model.adapter.spec().kv_width
    ids = torch.tensor([[5, 9, 7, 11, 4, 6], [8, 12, 13, 14, 15, 16]])
    with torch.no_grad():
        ours = model({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, "generation").logits
        base = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="sdpa").eval()
        theirs = PeftModel.from_pretrained(base, str(out)).eval()(input_ids=ids).logits
        plain = base(input_ids=ids).logits
    assert not torch.allclose(plain, ours, atol=1e-3)  # the prefix matters
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
