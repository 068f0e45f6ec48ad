"""Prompt methods: parameter counts, output shapes, prompt depth, and that each one can learn."""
from __future__ import annotations

import copy

import pytest
import torch

import deepprompt.prompts  # noqa: F401  (registers every method)
from deepprompt.config import PromptConfig
from deepprompt.errors import ConfigError
from deepprompt.models.heads import TokenClassificationHead
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.prompts.base import PromptMethod, PromptOutput
from deepprompt.prompts.prefix import resolve_layers
from deepprompt.registry import PROMPTS
from deepprompt.spec import BackboneSpec
from tests.conftest import tiny_backbone

SPEC = BackboneSpec(family="bert", num_layers=3, hidden=48, num_heads=4, max_positions=64, init_std=0.2)

CONFIGS = [
    pytest.param(PromptConfig(method="finetune"), id="finetune"),
    pytest.param(PromptConfig(method="prompt", length=5), id="prompt"),
    pytest.param(PromptConfig(method="ptuning", length=5), id="ptuning-default-encoder"),
    pytest.param(PromptConfig(method="ptuning", length=5, encoder_hidden=20), id="ptuning-enc20"),
    pytest.param(PromptConfig(method="ptuning", length=5, encoder_hidden=21), id="ptuning-enc21-odd"),
    pytest.param(PromptConfig(method="prefix", length=5), id="prefix"),
    pytest.param(PromptConfig(method="prefix", length=5, reparam=True, reparam_hidden=16), id="prefix-reparam"),
    pytest.param(PromptConfig(method="prefix", length=5, layers=[-1]), id="prefix-top-layer"),
    pytest.param(PromptConfig(method="prefix", length=5, layers=[0, 2]), id="prefix-layers-0-2"),
    pytest.param(PromptConfig(method="prefix", length=5, layers=[2, 0], reparam=True, reparam_hidden=16),
                 id="prefix-reparam-layers-2-0"),
]


def build(cfg: PromptConfig, spec: BackboneSpec = SPEC) -> PromptMethod:
    torch.manual_seed(0)
    return PROMPTS.get(cfg.method)(cfg, spec)


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_method_is_registered():
    assert {"finetune", "prompt", "ptuning", "prefix"} <= set(PROMPTS.names())
    for _, cls in PROMPTS.items():
        assert issubclass(cls, PromptMethod)


def test_configs_cover_every_registered_method():
    covered = {p.values[0].method for p in CONFIGS}
    assert covered == set(PROMPTS.names())


@pytest.mark.parametrize("cfg", CONFIGS)
def test_parameter_count_matches_formula(cfg):
    method = build(cfg)
    assert n_params(method) == type(method).num_params(cfg, SPEC)
    assert all(p.requires_grad for p in method.parameters())


def test_prefix_formula_by_hand():
    h, p, cls = SPEC.hidden, 5, PROMPTS.get("prefix")
    assert cls.num_params(PromptConfig(length=p), SPEC) == p * 3 * 2 * h == 1440
    assert cls.num_params(PromptConfig(length=p, layers=[-1]), SPEC) == p * 1 * 2 * h
    assert cls.num_params(PromptConfig(length=p, layers=[0, 2]), SPEC) == p * 2 * 2 * h
    r = 16
    assert cls.num_params(PromptConfig(length=p, reparam=True, reparam_hidden=r), SPEC) == (
        p * h + (h * r + r) + (r * 3 * 2 * h + 3 * 2 * h))


def test_input_prompt_formulas_by_hand():
    h, p = SPEC.hidden, 5
    assert PROMPTS.get("prompt").num_params(PromptConfig(method="prompt", length=p), SPEC) == p * h == 240
    assert PROMPTS.get("finetune").num_params(PromptConfig(method="finetune"), SPEC) == 0
    # P-Tuning v1: embeddings + 2-layer bi-LSTM (hidden e/2 per direction) + Linear(e,h) ReLU Linear(h,h)
    e, d = 20, 10
    lstm_layer1 = 2 * (4 * d * h + 4 * d * d + 4 * d + 4 * d)
    lstm_layer2 = 2 * (4 * d * e + 4 * d * d + 4 * d + 4 * d)
    mlp = (e * h + h) + (h * h + h)
    cfg = PromptConfig(method="ptuning", length=p, encoder_hidden=e)
    assert PROMPTS.get("ptuning").num_params(cfg, SPEC) == p * h + lstm_layer1 + lstm_layer2 + mlp


@pytest.mark.parametrize("cfg", CONFIGS)
def test_output_shapes(cfg):
    method = build(cfg).eval()
    b = 3
    out = method(b)
    assert isinstance(out, PromptOutput)
    if cfg.method == "prefix":
        assert out.input_embeds is None
        assert list(out.layer_kv) == resolve_layers(cfg.layers, SPEC.num_layers)
        for k, v in out.layer_kv.values():
            assert k.shape == v.shape == (b, SPEC.num_heads, cfg.length, SPEC.head_dim)
    elif cfg.method in ("prompt", "ptuning"):
        assert out.layer_kv == {}
        assert out.input_embeds.shape == (b, cfg.length, SPEC.hidden)
        # the same prompt for every example (no dropout in eval mode)
        assert torch.equal(out.input_embeds[0], out.input_embeds[-1])
    else:
        assert out.input_embeds is None and out.layer_kv == {}


@pytest.mark.parametrize("layers", [None, [0, 2], [-1]])
def test_prefix_layout_matches_its_embedding(layers):
    """Without reparameterisation, row p of the embedding is (layer, key/value, head, head_dim) for token p."""
    cfg = PromptConfig(method="prefix", length=4, layers=layers)
    method = build(cfg).eval()
    out = method(2)
    chosen = resolve_layers(layers, SPEC.num_layers)
    table = method.embedding.weight.detach().view(cfg.length, len(chosen), 2, SPEC.num_heads, SPEC.head_dim)
    for i, layer in enumerate(chosen):
        k, v = out.layer_kv[layer]
        for b in range(2):
            assert torch.equal(k[b], table[:, i, 0].transpose(0, 1))
            assert torch.equal(v[b], table[:, i, 1].transpose(0, 1))


def test_prefix_layers_get_distinct_prefixes():
    out = build(PromptConfig(method="prefix", length=4)).eval()(1)
    keys = [out.layer_kv[i][0] for i in range(SPEC.num_layers)]
    vals = [out.layer_kv[i][1] for i in range(SPEC.num_layers)]
    tensors = keys + vals
    for a in range(len(tensors)):
        for c in range(a + 1, len(tensors)):
            assert not torch.equal(tensors[a], tensors[c])


def test_prefix_dropout_is_per_example_in_training():
    method = build(PromptConfig(method="prefix", length=4, dropout=0.5)).train()
    k, _ = method(2).layer_kv[0]
    assert not torch.equal(k[0], k[1])
    method.eval()
    k, _ = method(2).layer_kv[0]
    assert torch.equal(k[0], k[1])


# ----------------------------------------------------------------------------- resolve_layers

@pytest.mark.parametrize("layers,expected", [
    (None, [0, 1, 2, 3]),
    ([0], [0]),
    ([-1], [3]),
    ([-4, -3, -2, -1], [0, 1, 2, 3]),
    ([3, 0], [0, 3]),
    ([1, -1], [1, 3]),
])
def test_resolve_layers(layers, expected):
    assert resolve_layers(layers, 4) == expected


@pytest.mark.parametrize("layers", [[4], [-5], [0, 7], [100]])
def test_resolve_layers_out_of_range(layers):
    with pytest.raises(ConfigError, match=r"prompt\.layers"):
        resolve_layers(layers, 4)


@pytest.mark.parametrize("layers", [[1, 1], [0, -4], [3, -1]])
def test_resolve_layers_same_layer_twice(layers):
    with pytest.raises(ConfigError, match=r"prompt\.layers"):
        resolve_layers(layers, 4)


def test_prefix_method_rejects_bad_layers():
    with pytest.raises(ConfigError, match=r"prompt\.layers"):
        build(PromptConfig(method="prefix", layers=[3]))


# ----------------------------------------------------------------------------- learning

TRAIN = [
    pytest.param(PromptConfig(method="finetune"), 2e-3, id="finetune"),
    pytest.param(PromptConfig(method="prompt", length=4), 2e-2, id="prompt"),
    pytest.param(PromptConfig(method="ptuning", length=4, encoder_hidden=20), 2e-2, id="ptuning"),
    pytest.param(PromptConfig(method="prefix", length=4), 2e-2, id="prefix"),
    pytest.param(PromptConfig(method="prefix", length=4, reparam=True, reparam_hidden=16), 2e-2,
                 id="prefix-reparam"),
    pytest.param(PromptConfig(method="prefix", length=4, layers=[0, 2]), 2e-2, id="prefix-layers-0-2"),
]


HI = 15  # token ids 3..14: a small vocabulary keeps id % 3 learnable in a few dozen steps


def token_task(n=16, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, HI, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::3, -3:] = 0  # some padded sequences
    ids[mask == 0] = 0
    labels = (ids % 3).masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train(model, method, params, lr, steps=60):
    batch = token_task()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        out = model(batch, "t")
        assert out.logits.shape == (16, 10, 3)
        opt.zero_grad()
        out.loss.backward()
        if step == 0:  # every prompt parameter is reached by the gradient
            for name, p in method.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        opt.step()
        losses.append(out.loss.item())
    return losses


@pytest.mark.parametrize("cfg,lr", TRAIN)
def test_method_learns_and_freezes_backbone(cfg, lr, tmp_path):
    backbone, adapter = tiny_backbone("bert", tmp_path)
    spec = adapter.spec()
    torch.manual_seed(0)
    method = PROMPTS.get(cfg.method)(cfg, spec)
    model = PromptedModel(backbone, adapter, method, {"t": TokenClassificationHead(spec.hidden, 3)})
    before = copy.deepcopy(backbone.state_dict())

    if method.freezes_backbone:
        assert not any(p.requires_grad for p in backbone.parameters())
    else:
        assert all(p.requires_grad for p in backbone.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in method.parameters()) == type(method).num_params(cfg, spec)

    losses = train(model, method, trainable, lr)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, f"{cfg.method}: loss {first:.3f} -> {last:.3f}"

    after = backbone.state_dict()
    if method.freezes_backbone:
        assert not any(p.requires_grad for p in backbone.parameters())
        for name, t in before.items():
            assert torch.equal(t, after[name]), f"frozen backbone weight {name} changed"
    else:
        changed = [n for n, t in before.items() if not torch.equal(t, after[n])]
        assert changed, "finetune did not change the backbone"
        assert any("encoder.layer.0.attention" in n for n in changed)


@pytest.mark.parametrize("cfg,lr", [p for p in TRAIN if p.id != "finetune"])
def test_prompt_alone_lowers_the_loss(cfg, lr, tmp_path):
    """With the head frozen too, only the prompt parameters train; they must still move the loss."""
    backbone, adapter = tiny_backbone("bert", tmp_path)
    spec = adapter.spec()
    torch.manual_seed(0)
    method = PROMPTS.get(cfg.method)(cfg, spec)
    head = TokenClassificationHead(spec.hidden, 3).requires_grad_(False)
    model = PromptedModel(backbone, adapter, method, {"t": head})
    assert [id(p) for p in model.parameters() if p.requires_grad] == [id(p) for p in method.parameters()]
    losses = train(model, method, list(method.parameters()), lr)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, f"{cfg.method}: loss {first:.3f} -> {last:.3f}"
