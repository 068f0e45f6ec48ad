"""Decoder LLMs (llama, mistral, qwen2, qwen3, glm, glm4) with grouped-query attention: the
prefixed attention of every layer against a float64 reference written here.

Reference, per layer, from the layer's own projections: q, k, v (kv_heads heads; Qwen3's per-head
q/k norms), rotary embedding of the real tokens at positions 0..n-1 counted by hand from the
padding (the rotation itself is the model's ``apply_rotary_pos_emb``; the prefix is not rotated),
key/value heads repeated for their query groups, then
softmax(q [pk; k]^T * scale + mask) [pv; v] -> o_proj, where every query sees all P prefix columns
and the real tokens causally (never padding keys). Checked for right and for left padding.
"""
from __future__ import annotations

import sys

import pytest
import torch

from deepprompt.config import PromptConfig
from deepprompt.prompts.prefix import DeepPrefix
from tests.decoder_tiny import DECODERS, padded_batch, tiny_decoder

P = 3


def capture(adapter):
    inputs, outputs, handles = {}, {}, []
    for i, module in enumerate(adapter.attention_modules()):
        handles.append(module.register_forward_pre_hook(
            lambda m, a, kw, i=i: inputs.__setitem__(i, a[0] if a else kw["hidden_states"]), with_kwargs=True))
        handles.append(module.register_forward_hook(
            lambda m, a, kw, out, i=i: outputs.__setitem__(i, out[0]), with_kwargs=True))
    return inputs, outputs, handles


def random_prefix(spec, batch: int, p: int = P, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, spec.num_kv_heads, p, spec.head_dim)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def reference_attention(model, attn, x, mask2d, pk, pv):
    b, n, _ = x.shape
    d = attn.head_dim
    q = attn.q_proj(x).view(b, n, -1, d)
    k = attn.k_proj(x).view(b, n, -1, d)
    v = attn.v_proj(x).view(b, n, -1, d).transpose(1, 2)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    positions = torch.stack([torch.cumsum(row, 0) - 1 for row in mask2d]).clamp(min=0)
    cos, sin = model.model.rotary_emb(x, positions)
    q, k = sys.modules[type(attn).__module__].apply_rotary_pos_emb(q, k, cos, sin)
    groups = q.shape[1] // k.shape[1]
    keys = torch.cat([pk, k], 2).repeat_interleave(groups, 1)
    values = torch.cat([pv, v], 2).repeat_interleave(groups, 1)
    scores = q @ keys.transpose(-1, -2) * attn.scaling
    real = mask2d.bool()
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    visible = torch.cat([torch.ones(b, n, pk.shape[2], dtype=torch.bool), causal[None] & real[:, None, :]], -1)
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    out = (scores.softmax(-1) @ values).transpose(1, 2).reshape(b, n, -1)
    return attn.o_proj(out)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("model_type", DECODERS)
def test_prefixed_attention_matches_float64_reference(model_type, side):
    model, adapter = tiny_decoder(model_type, dtype=torch.float64)
    spec = adapter.spec()
    assert spec.num_kv_heads < spec.num_heads
    batch = padded_batch(side=side)
    kv = {i: random_prefix(spec, 2, seed=i) for i in range(spec.num_layers)}
    adapter.set_prefix(kv)
    inputs, outputs, handles = capture(adapter)
    with torch.no_grad():
        adapter.forward(**batch)
        for i, attn in enumerate(adapter.attention_modules()):
            ref = reference_attention(model, attn, inputs[i], batch["attention_mask"], *kv[i])
            real = batch["attention_mask"].bool()
            torch.testing.assert_close(outputs[i][real], ref[real], rtol=0, atol=1e-10)
    for h in handles:
        h.remove()


@pytest.mark.parametrize("model_type", DECODERS)
def test_left_and_right_padding_give_the_same_real_token_states(model_type):
    model, adapter = tiny_decoder(model_type, dtype=torch.float64)
    spec = adapter.spec()
    adapter.set_prefix({i: random_prefix(spec, 2, seed=i) for i in range(spec.num_layers)})
    with torch.no_grad():
        right = adapter.forward(**(r := padded_batch(side="right")))
        left = adapter.forward(**(le := padded_batch(side="left")))
    torch.testing.assert_close(right[r["attention_mask"].bool()], left[le["attention_mask"].bool()],
                               rtol=0, atol=1e-10)


@pytest.mark.parametrize("model_type", DECODERS)
def test_empty_prefix_is_bit_identical_to_no_prefix_and_to_stock_sdpa(model_type):
    from transformers import AutoModelForCausalLM

    model, adapter = tiny_decoder(model_type)
    spec = adapter.spec()
    batch = padded_batch(lengths=(6, 6))
    with torch.no_grad():
        adapter.set_prefix({})
        none = adapter.forward(**batch)
        adapter.set_prefix({i: random_prefix(spec, 2, p=0) for i in range(spec.num_layers)})
        empty = adapter.forward(**batch)
        adapter.set_prefix({})
        stock = AutoModelForCausalLM.from_config(model.config, attn_implementation="sdpa").eval()
        stock.load_state_dict(model.state_dict())
        ref = stock.model(**batch).last_hidden_state
    assert torch.equal(none, empty)
    assert torch.equal(none, ref)


@pytest.mark.parametrize("model_type", DECODERS)
@pytest.mark.parametrize("layers", [None, [-1]])
def test_prefix_parameter_count_is_p_layers_2_kv_heads_head_dim(model_type, layers):
    _, adapter = tiny_decoder(model_type)
    spec = adapter.spec()
    cfg = PromptConfig(method="prefix", length=5, layers=layers)
    prefix = DeepPrefix(cfg, spec)
    n_layers = spec.num_layers if layers is None else 1
    formula = 5 * n_layers * 2 * spec.num_kv_heads * spec.head_dim
    assert formula < 5 * n_layers * 2 * spec.hidden  # grouped-query attention: fewer than hidden per token
    assert sum(p.numel() for p in prefix.parameters()) == formula == DeepPrefix.num_params(cfg, spec)
    out = prefix(3).layer_kv
    k, v = out[spec.num_layers - 1]
    assert k.shape == v.shape == (3, spec.num_kv_heads, 5, spec.head_dim)


def test_gradients_reach_the_prefix_of_every_layer():
    _, adapter = tiny_decoder("qwen3")
    spec = adapter.spec()
    kv = {i: tuple(t.float().requires_grad_() for t in random_prefix(spec, 2, seed=i)) for i in range(2)}
    adapter.set_prefix(kv)
    adapter.forward(**padded_batch(side="left")).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for pair in kv.values() for t in pair)


def test_activation_checkpointing_gives_the_same_prefix_gradients():
    from deepprompt.models.heads import LMHead
    from deepprompt.models.prompted_model import PromptedModel

    grads = []
    for checkpointing in (False, True):
        model, adapter = tiny_decoder("mistral", dtype=torch.float64)
        torch.manual_seed(0)
        prefix = DeepPrefix(PromptConfig(method="prefix", length=3, dropout=0.0), adapter.spec()).double()
        pm = PromptedModel(model, adapter, prefix, {"t": LMHead(32)}).train()
        if checkpointing:
            adapter.enable_checkpointing()
            assert adapter.checkpointing_enabled()
        batch = padded_batch(side="left")
        batch["labels"] = torch.where(batch["attention_mask"].bool(), batch["input_ids"], -100)
        pm(batch, "t").loss.backward()
        grads.append(prefix.embedding.weight.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)
