"""The native GLM: its numerics against a float64 reference, the A/B mask, and deep prompts on it."""
import math

import pytest
import torch

from deepprompt.config import load_config
from deepprompt.models.backbones.glm import GLMAdapter
from deepprompt.models.glm.model import glm_attention_mask
from deepprompt.models.assembly import HeadSpec, assemble
from tests.models.glm.tiny_glm import tiny_model

B, L = 2, 7


def ids(seed=0, vocab=64):
    return torch.randint(0, vocab, (B, L), generator=torch.Generator().manual_seed(seed))


def reference_forward(model, input_ids, sep, prefix=None):
    """GLM written out in float64 from the original's formulas: 2-D position embeddings, pre-LN
    blocks, scores/sqrt(d) with masked scores s*M - 65504(1-M), tanh GeLU, final LayerNorm.
    ``prefix``: {layer: (k, v)} [B, heads, P, d], columns visible to every token."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    c = model.config
    heads, d = c.num_attention_heads, c.head_dim
    ln = lambda x, p: torch.nn.functional.layer_norm(x, (c.hidden_size,), sd[p + ".weight"], sd[p + ".bias"], 1e-5)
    lin = lambda x, p: x @ sd[p + ".weight"].T + sd[p + ".bias"]
    gelu = lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    b, n = input_ids.shape
    x = sd["word_embeddings.weight"][input_ids] + sd["transformer.position_embeddings.weight"][:n] \
        + sd["transformer.block_position_embeddings.weight"][0]
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    m = ((j < sep[:, None, None]) | (j <= i)).double()[:, None]  # [B, 1, L, L]
    for layer in range(c.num_hidden_layers):
        p = f"transformer.layers.{layer}."
        q, k, v = lin(ln(x, p + "input_layernorm"), p + "attention.query_key_value").view(b, n, 3, heads, d) \
            .permute(2, 0, 3, 1, 4)
        mask = m
        if prefix and layer in prefix:
            pk, pv = (t.double() for t in prefix[layer])
            k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            mask = torch.cat([torch.ones(b, 1, n, pk.shape[2], dtype=torch.float64), m], -1)
        s = (q / math.sqrt(d)) @ k.transpose(-1, -2)
        s = s * mask - 65504 * (1 - mask)
        ctx = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        x = x + lin(ctx, p + "attention.dense")
        h = lin(gelu(lin(ln(x, p + "post_attention_layernorm"), p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")
        x = x + h
    return ln(x, "transformer.final_layernorm")


def test_forward_matches_float64_reference_with_a_prefix_and_part_b():
    model = tiny_model()
    x, sep = ids(), torch.tensor([4, 7])
    g = torch.Generator().manual_seed(1)
    prefix = {1: (torch.randn(B, 4, 3, 8, generator=g), torch.randn(B, 4, 3, 8, generator=g))}
    adapter = GLMAdapter(model)
    adapter.set_prefix(prefix)
    got = model(x, sep=sep).last_hidden_state
    want = reference_forward(model, x, sep, prefix)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    # the prefix changes the output (it really reaches layer 1's attention) ...
    adapter.set_prefix({})
    plain = model(x, sep=sep).last_hidden_state
    assert (plain - got).abs().max() > 1e-3
    torch.testing.assert_close(plain.double(), reference_forward(model, x, sep), atol=1e-5, rtol=1e-5)
    # ... and a prefix of length 0 is exactly no prefix
    empty = torch.zeros(B, 4, 0, 8)
    adapter.set_prefix({0: (empty, empty), 1: (empty, empty)})
    assert torch.equal(model(x, sep=sep).last_hidden_state, plain)


def test_mask_part_a_bidirectional_part_b_causal():
    m = glm_attention_mask(5, torch.tensor([2]))[0, 0]
    assert m.tolist() == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    model, sep = tiny_model(), torch.tensor([3, 3])
    x = ids()
    base = model(x, sep=sep).last_hidden_state
    later = x.clone()
    later[:, 5] = (later[:, 5] + 1) % 64  # a token of part B
    out = model(later, sep=sep).last_hidden_state
    torch.testing.assert_close(out[:, :5], base[:, :5])  # nothing before it moves (A and earlier B)
    assert (out[:, 5:] - base[:, 5:]).abs().max() > 1e-4
    a_tok = x.clone()
    a_tok[:, 2] = (a_tok[:, 2] + 1) % 64  # the last token of part A: every token sees it
    out = model(a_tok, sep=sep).last_hidden_state
    assert ((out - base).abs().amax(-1) > 1e-5).all()


def test_padding_keys_are_invisible():
    model = tiny_model()
    x = ids()
    mask = torch.ones(B, L, dtype=torch.long)
    mask[0, 5:] = 0
    out = model(x, attention_mask=mask).last_hidden_state
    y = x.clone()
    y[0, 5:] = 3
    torch.testing.assert_close(model(y, attention_mask=mask).last_hidden_state[0, :5], out[0, :5])


def _prompted(method, head="classification", reparam=False, layers=None, seed=0):
    model = tiny_model(seed)
    adapter = GLMAdapter(model)
    over = [f"prompt.method={method}", "prompt.length=3", "prompt.dropout=0", f"prompt.reparam={str(reparam).lower()}",
            "prompt.reparam_hidden=16"]
    if layers is not None:
        over.append(f"prompt.layers={layers}")
    cfg = load_config(None, over).prompt
    torch.manual_seed(seed)
    return assemble(model, adapter, cfg, [HeadSpec("t", head, 3, dropout=0.0)])


def _batch(head):
    b = {"input_ids": ids(), "attention_mask": torch.ones(B, L, dtype=torch.long), "labels": torch.tensor([0, 2])}
    if head == "cloze":
        b.update(mask_positions=torch.tensor([2, 5]), candidate_ids=torch.tensor([[3, 4, 5], [9, 8, 7]]))
    return b


@pytest.mark.parametrize("method,reparam,layers,head", [
    ("prefix", False, None, "classification"), ("prefix", True, "[-1]", "cloze"), ("prompt", False, None, "cloze"),
    ("ptuning", False, None, "classification"), ("finetune", False, None, "classification")])
def test_every_method_trains_and_frozen_weights_do_not_move(method, reparam, layers, head):
    pm = _prompted(method, head, reparam, layers)
    frozen = {n: p.detach().clone() for n, p in pm.backbone.named_parameters()}
    trainable = [p for p in pm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(5):
        out = pm(_batch(head), "t")
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    moved = [n for n, p in pm.backbone.named_parameters() if not torch.equal(p, frozen[n])]
    if method == "finetune":
        assert moved
    else:
        assert not moved and all(not p.requires_grad for p in pm.backbone.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in pm.prompt.parameters())


def test_cloze_head_scores_candidates_with_the_tied_lm_projection():
    pm = _prompted("prefix", "cloze")
    batch = _batch("cloze")
    out = pm(batch, "t")
    hidden = pm.backbone(batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    full = pm.backbone.lm_logits(hidden)  # [B, L, vocab], with the prefix still set from the forward
    want = torch.stack([full[b, batch["mask_positions"][b], batch["candidate_ids"][b]] for b in range(B)])
    torch.testing.assert_close(out.logits, want)
    assert sum(p.numel() for p in pm.heads.parameters()) == 0


def test_a_hidden_prefix_column_gets_no_attention():
    """The per-example prefix mask (MultiPrompt) reaches the attention kernel: a hidden column is
    exactly as if that prefix were shorter, and hiding it for one example leaves the other alone."""
    model = tiny_model()
    adapter = GLMAdapter(model)
    x, sep = ids(), torch.tensor([4, 7])
    g = torch.Generator().manual_seed(2)
    pk, pv = torch.randn(B, 4, 3, 8, generator=g), torch.randn(B, 4, 3, 8, generator=g)
    visible = torch.tensor([[True, True, False], [True, True, True]])
    adapter.set_prefix({1: (pk, pv)}, {1: visible})
    masked = model(x, sep=sep).last_hidden_state
    adapter.set_prefix({1: (pk[:, :, :2], pv[:, :, :2])})
    shorter = model(x, sep=sep).last_hidden_state
    adapter.set_prefix({1: (pk, pv)})
    full = model(x, sep=sep).last_hidden_state
    torch.testing.assert_close(masked[0], shorter[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(masked[1], full[1], rtol=0, atol=1e-6)
    assert (masked[0] - full[0]).abs().max() > 1e-4


def test_a_query_row_never_sees_nothing():
    """Left padding before part B, or an all-padding example, leaves a padding query with no
    visible key; such a row sees every key instead (a fully masked row is NaN on some kernels),
    while every real query keeps exactly its GLM row."""
    key_valid = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    m = glm_attention_mask(5, torch.tensor([2, 5]), key_valid)[:, 0]
    assert m.any(-1).all()
    assert m[0, 0].all() and m[0, 1].all() and m[1].all()  # the padding queries
    assert m[0, 2:].tolist() == [[0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]  # part B, causal


def _nan_on_empty_rows(q, k, v, attn_mask, scale, dropout_p=0.0):
    """Attention as kernels without a guard compute it: a row with no visible key is NaN."""
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize("kernel", ["torch", "nan_on_empty_rows"])
def test_padding_rows_stay_finite_and_never_leak(kernel, monkeypatch):
    """An all-padding example and a left-padded one in the batch, a prefix hidden from the
    all-padding one: outputs and gradients are finite, and the real example is what it is alone,
    also with a kernel that turns a fully masked row into NaN (torch's CPU kernels give 0)."""
    if kernel != "torch":
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", _nan_on_empty_rows)
    model = tiny_model()
    adapter = GLMAdapter(model)
    x, sep = ids(), torch.tensor([4, 4])
    attention_mask = torch.ones(B, L, dtype=torch.long)
    attention_mask[1] = 0
    g = torch.Generator().manual_seed(3)
    pk = torch.randn(B, 4, 3, 8, generator=g).requires_grad_(True)
    pv = torch.randn(B, 4, 3, 8, generator=g).requires_grad_(True)
    hide_for_padding = torch.tensor([[True] * 3, [False] * 3])
    adapter.set_prefix({0: (pk, pv), 1: (pk, pv)}, {0: hide_for_padding, 1: hide_for_padding})
    out = model(x, attention_mask=attention_mask, sep=sep).last_hidden_state
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(pk.grad).all() and torch.isfinite(pv.grad).all()
    adapter.set_prefix({0: (pk[:1], pv[:1]), 1: (pk[:1], pv[:1])})
    alone = model(x[:1], attention_mask=attention_mask[:1], sep=sep[:1]).last_hidden_state
    torch.testing.assert_close(out[:1], alone, rtol=0, atol=1e-6)
    left = attention_mask.clone()
    left[0, :2] = 0  # left padding before part B: padding queries 0 and 1 see no real key
    adapter.set_prefix({0: (pk, pv)}, {0: hide_for_padding})
    assert torch.isfinite(model(x, attention_mask=left, sep=sep).last_hidden_state).all()


def test_attention_dropout_applies_only_while_training():
    x = ids()
    model = tiny_model(attention_dropout=0.5)
    with torch.no_grad():
        a, b = (model.train()(x).last_hidden_state for _ in range(2))
        assert (a - b).abs().max() > 1e-3  # training: a new dropout draw each forward
        e1, e2 = (model.eval()(x).last_hidden_state for _ in range(2))
        assert torch.equal(e1, e2)
        still = tiny_model(attention_dropout=0.0).train()  # and it is the attention's dropout that drew
        assert torch.equal(still(x).last_hidden_state, still(x).last_hidden_state)
