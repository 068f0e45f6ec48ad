"""A per-layer key/value prefix inside each family's self-attention, checked against hand-written math.

The prefixed attention of one layer is recomputed here from that layer's own weights over
[prefix; tokens], with one padded sequence in the batch:

* BERT/RoBERTa: softmax(q [pk; k]^T / sqrt(d) + mask) [pv; v].
* DeBERTa-v2: token->token scores are the full disentangled c2c + c2p + p2c terms over the relative
  distances of transformers' ``build_relative_position``; token->prefix scores are content-only
  q.pk; everything is divided by sqrt(d * 3).
* MPNet: softmax(q [pk; k]^T / sqrt(d) + [0; relative-position bias] + mask) [pv; v], then its
  output projection ``o``; the bias of query i and key j is the learned bucket of distance j - i.
"""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
from transformers import AutoModel
from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

from tests.conftest import make_batch, tiny_backbone, tiny_config

CASES = [
    pytest.param("bert", {}, id="bert"),
    pytest.param("roberta", {}, id="roberta"),
    pytest.param("deberta-v2", {"share_att_key": True}, id="deberta-v2-shared-key"),
    pytest.param("deberta-v2", {"share_att_key": False}, id="deberta-v2-own-pos-proj"),
    # v3-style layer-normed relative embeddings, coarser log buckets
    pytest.param("deberta-v2", {"norm_rel_ebd": "layer_norm", "position_buckets": 4, "max_relative_positions": 16},
                 id="deberta-v3-style"),
    # no buckets and a short span: distances beyond +-4 are clamped
    pytest.param("deberta-v2", {"share_att_key": False, "position_buckets": -1, "max_relative_positions": 4},
                 id="deberta-v2-clamped"),
    pytest.param("mpnet", {}, id="mpnet"),
]
LENGTHS = (7, 5)  # the second sequence has two padding positions
P = 3


@contextlib.contextmanager
def capture_attention(adapter):
    """Record, per layer, the self-attention module's input hidden states and its output [B, L, h]."""
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    handles = []
    for i, module in enumerate(adapter.attention_modules()):
        def pre(mod, args, kwargs, i=i):
            inputs[i] = args[0] if args else kwargs["hidden_states"]

        def post(mod, args, kwargs, out, i=i):
            outputs[i] = out[0] if isinstance(out, tuple) else out

        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))
    try:
        yield inputs, outputs
    finally:
        for h in handles:
            h.remove()


def run(model, adapter, batch, layer_kv):
    adapter.set_prefix(layer_kv)
    with capture_attention(adapter) as (inputs, outputs):
        last = adapter.forward(**batch)
    adapter.set_prefix({})
    return inputs, outputs, last


def random_prefix(model, batch_size, p=P, seed=1, requires_grad=False):
    c = model.config
    d = c.hidden_size // c.num_attention_heads
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, c.num_attention_heads, p, d)
    k = torch.randn(shape, generator=g, dtype=torch.float64)
    v = torch.randn(shape, generator=g, dtype=torch.float64)
    return k.requires_grad_(requires_grad), v.requires_grad_(requires_grad)


def heads(x, num_heads):
    """[B, L, H*d] -> [B, H, L, d]"""
    b, n, _ = x.shape
    return x.view(b, n, num_heads, -1).transpose(1, 2)


def linear(module, x):
    return x @ module.weight.T + module.bias


def reference_bert(attn, x, mask, pk, pv):
    """Hand-written prefixed BERT/RoBERTa self-attention. x [B, L, h], mask [B, L] (1 = real)."""
    nh = attn.num_attention_heads
    q, k, v = (heads(linear(m, x), nh) for m in (attn.query, attn.key, attn.value))
    d = q.shape[-1]
    keys = torch.cat([pk, k], dim=2)
    values = torch.cat([pv, v], dim=2)
    scores = torch.einsum("bhid,bhjd->bhij", q, keys) / math.sqrt(d)
    visible = torch.cat([torch.ones_like(mask[:, :pk.shape[2]]), mask], dim=1).bool()  # [B, P+L]
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    ctx = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), values)
    return ctx.transpose(1, 2).flatten(2)


def reference_deberta(attn, x, mask, pk, pv, rel_embeddings, config):
    """Hand-written prefixed DeBERTa-v2 disentangled self-attention (c2c + c2p + p2c, prefix content-only)."""
    nh = attn.num_attention_heads
    q, k, v = (heads(linear(m, x), nh) for m in (attn.query_proj, attn.key_proj, attn.value_proj))
    b, _, n, d = q.shape
    s = math.sqrt(d * 3)  # c2c, c2p and p2c each add a term

    # the relative span and bucketing as the config resolves them (buckets if set, else max distance)
    buckets = config.position_buckets
    max_distance = config.max_relative_positions if config.max_relative_positions > 0 \
        else config.max_position_embeddings
    span = buckets if buckets > 0 else max_distance
    rel = rel_embeddings[: 2 * span]  # [2*span, h]
    pos_key = linear(attn.key_proj if attn.share_att_key else attn.pos_key_proj, rel)
    pos_query = linear(attn.query_proj if attn.share_att_key else attn.pos_query_proj, rel)
    pos_key = pos_key.view(2 * span, nh, d)    # [2*span, H, d]
    pos_query = pos_query.view(2 * span, nh, d)

    # r[i, j]: (bucketed) relative distance of query i to key j, as transformers builds it
    r = build_relative_position(x[0], x[0], bucket_size=buckets, max_position=max_distance)[0]
    assert r.shape == (n, n)
    c2c = torch.empty(b, nh, n, n, dtype=x.dtype)
    c2p = torch.empty_like(c2c)
    p2c = torch.empty_like(c2c)
    for i in range(n):
        for j in range(n):
            c2p_idx = min(max(int(r[i, j]) + span, 0), 2 * span - 1)   # query content -> key position
            p2c_idx = min(max(-int(r[j, i]) + span, 0), 2 * span - 1)  # key content <- query position
            c2c[:, :, i, j] = (q[:, :, i] * k[:, :, j]).sum(-1)
            c2p[:, :, i, j] = (q[:, :, i] * pos_key[c2p_idx]).sum(-1)
            p2c[:, :, i, j] = (k[:, :, j] * pos_query[p2c_idx]).sum(-1)
    token_scores = (c2c + c2p + p2c) / s
    prefix_scores = torch.einsum("bhid,bhpd->bhip", q, pk) / s  # no position for a prefix key
    scores = torch.cat([prefix_scores, token_scores], dim=-1)
    visible = torch.cat([torch.ones_like(mask[:, :pk.shape[2]]), mask], dim=1).bool()
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    ctx = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), torch.cat([pv, v], dim=2))
    return ctx.transpose(1, 2).flatten(2)


def reference_mpnet(attn, x, mask, pk, pv, rel_bias):
    """Hand-written prefixed MPNet self-attention; ``rel_bias`` is the encoder's [buckets, H] table."""
    nh = attn.num_attention_heads
    q, k, v = (heads(linear(m, x), nh) for m in (attn.q, attn.k, attn.v))
    n, d = q.shape[2], q.shape[3]
    distance = torch.tensor([[j - i for j in range(n)] for i in range(n)])  # key position - query position
    bias = rel_bias.weight[MPNetEncoder.relative_position_bucket(distance, num_buckets=32)]  # [L, L, H]
    token_scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(d) + bias.permute(2, 0, 1)
    prefix_scores = torch.einsum("bhid,bhpd->bhip", q, pk) / math.sqrt(d)  # no position for a prefix key
    scores = torch.cat([prefix_scores, token_scores], dim=-1)
    visible = torch.cat([torch.ones_like(mask[:, :pk.shape[2]]), mask], dim=1).bool()
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    ctx = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), torch.cat([pv, v], dim=2))
    return linear(attn.o, ctx.transpose(1, 2).flatten(2))


def reference(family, model, attn, x, mask, pk, pv):
    """The hand-written prefixed attention of ``family`` for one layer."""
    if family == "deberta-v2":
        return reference_deberta(attn, x, mask, pk, pv, model.encoder.get_rel_embedding(), model.config)
    if family == "mpnet":
        return reference_mpnet(attn, x, mask, pk, pv, model.encoder.relative_attention_bias)
    return reference_bert(attn, x, mask, pk, pv)


def tiny(family, overrides, tmp_path, **kw):
    model, adapter = tiny_backbone(family, tmp_path, **overrides, **kw)
    return model.double(), adapter


@pytest.mark.parametrize("layer", [0, 2])
@pytest.mark.parametrize("family,overrides", CASES)
def test_prefixed_attention_matches_hand_written_reference(family, overrides, layer, tmp_path):
    model, adapter = tiny(family, overrides, tmp_path)
    batch = make_batch(family, LENGTHS)
    pk, pv = random_prefix(model, len(LENGTHS))
    with torch.no_grad():
        inputs, outputs, _ = run(model, adapter, batch, {layer: (pk, pv)})
        ref = reference(family, model, adapter.attention_modules()[layer], inputs[layer], batch["attention_mask"],
                        pk, pv)
    got = outputs[layer]
    assert got.shape == ref.shape == (len(LENGTHS), max(LENGTHS), model.config.hidden_size)
    for b, n in enumerate(LENGTHS):  # compare real (non-padded) query positions only
        torch.testing.assert_close(got[b, :n], ref[b, :n], rtol=0, atol=1e-10)
    # and the prefix matters: the same layer without it is far from the reference
    with torch.no_grad():
        _, plain, _ = run(model, adapter, batch, {})
    assert not torch.allclose(plain[layer][0], ref[0], atol=1e-3)


@pytest.mark.parametrize("family,overrides", CASES)
def test_reference_without_prefix_matches_the_unpatched_model(family, overrides, tmp_path):
    """Sanity check of the references themselves: with P=0 they reproduce the plain attention."""
    model, adapter = tiny(family, overrides, tmp_path)
    batch = make_batch(family, LENGTHS)
    pk, pv = random_prefix(model, len(LENGTHS), p=0)
    with torch.no_grad():
        inputs, outputs, _ = run(model, adapter, batch, {})
        for layer, attn in enumerate(adapter.attention_modules()):
            ref = reference(family, model, attn, inputs[layer], batch["attention_mask"], pk, pv)
            for b, n in enumerate(LENGTHS):
                torch.testing.assert_close(outputs[layer][b, :n], ref[b, :n], rtol=0, atol=1e-10)


@pytest.mark.parametrize("family,overrides", CASES)
def test_prefix_does_not_shift_positions(family, overrides, tmp_path):
    model, adapter = tiny(family, overrides, tmp_path)
    batch = make_batch(family, LENGTHS)
    emb = []
    handle = model.embeddings.register_forward_hook(lambda m, a, out: emb.append(out))
    try:
        with torch.no_grad():
            run(model, adapter, batch, {})
            run(model, adapter, batch, {i: random_prefix(model, len(LENGTHS), seed=i) for i in range(3)})
    finally:
        handle.remove()
    assert len(emb) == 2
    assert torch.equal(emb[0], emb[1])


@pytest.mark.parametrize("family,overrides", CASES)
def test_empty_prefix_equals_no_prefix(family, overrides, tmp_path):
    model, adapter = tiny(family, overrides, tmp_path)
    batch = make_batch(family, LENGTHS)
    empty = {i: random_prefix(model, len(LENGTHS), p=0) for i in range(3)}
    with torch.no_grad():
        _, plain, plain_last = run(model, adapter, batch, {})
        _, prefixed, prefixed_last = run(model, adapter, batch, empty)
    for layer in range(3):
        torch.testing.assert_close(prefixed[layer], plain[layer], rtol=0, atol=1e-12)
    torch.testing.assert_close(prefixed_last, plain_last, rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", [1, 2])
@pytest.mark.parametrize("family,overrides", CASES)
def test_prompt_depth_leaves_lower_layers_untouched(family, overrides, layer, tmp_path):
    model, adapter = tiny(family, overrides, tmp_path)
    batch = make_batch(family, LENGTHS)
    with torch.no_grad():
        _, plain, _ = run(model, adapter, batch, {})
        _, prefixed, _ = run(model, adapter, batch, {layer: random_prefix(model, len(LENGTHS))})
    for below in range(layer):
        assert torch.equal(prefixed[below], plain[below]), f"layer {below} changed by a prefix on layer {layer}"
    for at_or_above in range(layer, 3):
        assert not torch.allclose(prefixed[at_or_above], plain[at_or_above], atol=1e-4)


@pytest.mark.parametrize("family,overrides", CASES)
def test_gradients_reach_the_prefix(family, overrides, tmp_path):
    model, adapter = tiny(family, overrides, tmp_path)
    model.requires_grad_(False)
    batch = make_batch(family, LENGTHS)
    prefix = {i: random_prefix(model, len(LENGTHS), seed=i, requires_grad=True) for i in (0, 2)}
    _, _, last = run(model, adapter, batch, prefix)
    (last * torch.linspace(-1, 1, last.shape[-1], dtype=last.dtype)).sum().backward()
    for layer, (k, v) in prefix.items():
        for t, name in ((k, "key"), (v, "value")):
            assert t.grad is not None, f"no grad for the layer-{layer} prefix {name}"
            assert t.grad.shape == t.shape
            assert torch.isfinite(t.grad).all()
            assert t.grad.abs().sum() > 0, f"zero grad for the layer-{layer} prefix {name}"


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_bert_family_loads_with_the_deepprompt_attention(family, tmp_path):
    model, _ = tiny_backbone(family, tmp_path)
    assert model.config._attn_implementation == "deepprompt"


@pytest.mark.parametrize("family,overrides", CASES)
def test_no_prefix_matches_stock_transformers(family, overrides, tmp_path):
    """Without a prefix the adapted model computes what the stock (eager) model does."""
    model, adapter = tiny(family, overrides, tmp_path)
    extra = {} if family == "deberta-v2" else {"add_pooling_layer": False}
    stock = AutoModel.from_config(tiny_config(family, **overrides), attn_implementation="eager", **extra)
    stock = stock.double().eval()
    if family != "deberta-v2":
        assert stock.config._attn_implementation == "eager"
    stock.load_state_dict(model.state_dict())
    batch = make_batch(family, LENGTHS)
    with torch.no_grad():
        _, _, last = run(model, adapter, batch, {})
        ref = stock(**batch).last_hidden_state
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(last[b, :n], ref[b, :n], rtol=0, atol=1e-10)


@pytest.mark.parametrize("family", ["bert", "roberta", "deberta-v2", "mpnet"])
def test_adapter_for_a_model_built_in_process(family, tmp_path):
    """adapter_for() on a freshly constructed model installs the prefix path too (no from_pretrained)."""
    from deepprompt.models.backbones import adapter_for

    extra = {} if family == "deberta-v2" else {"add_pooling_layer": False}
    loaded, loaded_adapter = tiny(family, {}, tmp_path)  # loaded from disk with load_kwargs
    model = AutoModel.from_config(tiny_config(family), **extra).double().eval()
    model.load_state_dict(loaded.state_dict())
    adapter = adapter_for(model)
    assert adapter.family == family
    if family in ("bert", "roberta"):
        assert model.config._attn_implementation == "deepprompt"
    batch = make_batch(family, LENGTHS)
    prefix = {1: random_prefix(model, len(LENGTHS))}
    with torch.no_grad():
        _, _, plain = run(model, adapter, batch, {})
        _, _, got = run(model, adapter, batch, prefix)
        _, _, ref = run(loaded, loaded_adapter, batch, prefix)
    assert not torch.allclose(got, plain, atol=1e-4)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
