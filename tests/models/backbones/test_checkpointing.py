"""Activation checkpointing (``BackboneAdapter.enable_checkpointing``): per layer, non-reentrant.

For every family the loss and every trainable gradient with checkpointing equal those without
(fp32, 1e-6 relative), with dropout ON in the backbone and the prompt: the recompute replays the
forward's RNG state. The prefix reaches attention through ``PREFIX_ATTR``, not as a layer input;
the reentrant form would give it no gradient at all (shown below, so the equality tests can fail).
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

import deepprompt.models.backbones.base as base
from deepprompt.config import PromptConfig, load_config
from deepprompt.models.backbones.glm import GLMAdapter
from deepprompt.models.assembly import HeadSpec, assemble
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.prompts import MultiPrompt
from deepprompt.registry import PROMPTS
from tests.conftest import make_batch, tiny_backbone
from tests.models.glm.tiny_glm import tiny_model as tiny_glm

FAMILIES = ("bert", "roberta", "deberta-v2", "mpnet", "glm")
LENGTHS = (7, 5)  # the second sequence is padded
DROPOUT = 0.1
LABELS = 3


def backbone(family: str, tmp_path, dropout: float = DROPOUT):
    """(backbone, adapter, hidden) of a tiny random ``family`` model with dropout ``dropout``."""
    if family == "glm":
        model = tiny_glm(0, hidden_dropout=dropout, attention_dropout=dropout)
        return model, GLMAdapter(model), model.config.hidden_size
    model, adapter = tiny_backbone(family, tmp_path, hidden_dropout_prob=dropout,
                                   attention_probs_dropout_prob=dropout)
    return model, adapter, model.config.hidden_size


def batch(family: str, seed: int = 0) -> dict:
    if family == "glm":  # GLM's tiny vocabulary; padding is masked by attention_mask alone
        out = make_batch("bert", LENGTHS, seed)
    else:
        out = make_batch(family, LENGTHS, seed)
    g = torch.Generator().manual_seed(seed + 100)
    out["labels"] = torch.randint(0, LABELS, out["input_ids"].shape, generator=g)
    out["labels"][out["attention_mask"] == 0] = -100
    return out


def prompted(family: str, tmp_path, method: str, *overrides: str) -> PromptedModel:
    model, adapter, hidden = backbone(family, tmp_path)
    cfg = load_config(None, [f"prompt.method={method}", "prompt.length=3", f"prompt.dropout={DROPOUT}",
                             *overrides]).prompt
    torch.manual_seed(0)
    return assemble(model, adapter, cfg, [HeadSpec("t", "token", LABELS)]).train()


def loss_and_grads(pm: PromptedModel, batches: list[dict], seed: int = 7, task="t"):
    """The summed loss of ``batches`` (one backward) and every trainable gradient, dropout seeded."""
    pm.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = sum(pm(b, task).loss for b in batches)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in pm.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def assert_rel_close(got: torch.Tensor, want: torch.Tensor, what: str, rel: float = 1e-6) -> None:
    scale = want.abs().max()
    assert scale > 0, f"{what}: all zero, nothing compared"
    assert (got - want).abs().max() <= rel * scale, f"{what}: {(got - want).abs().max()} vs scale {scale}"


def assert_same_training_signal(off, on, prompt_prefix: str = "prompt.") -> None:
    (loss0, g0), (loss1, g1) = off, on
    assert_rel_close(loss1, loss0, "loss")
    assert g1.keys() == g0.keys()
    assert any(n.startswith(prompt_prefix) for n in g0)
    for name in g0:
        assert_rel_close(g1[name], g0[name], name)


@pytest.mark.parametrize("method", ["prefix", "prompt", "finetune"])
@pytest.mark.parametrize("family", FAMILIES)
def test_checkpointing_gives_the_same_loss_and_gradients(family, method, tmp_path):
    pm = prompted(family, tmp_path, method)
    b = batch(family)
    off = loss_and_grads(pm, [b])
    assert torch.isfinite(off[0])
    pm.adapter.enable_checkpointing()
    assert pm.adapter.checkpointing_enabled()
    on = loss_and_grads(pm, [b])
    assert_same_training_signal(off, on, "prompt." if method != "finetune" else "backbone.")
    # dropout is really on (a different seed changes the loss), so equality above means the
    # recompute replayed the forward's dropout masks
    assert not torch.equal(loss_and_grads(pm, [b], seed=8)[0], on[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_each_layer_is_recomputed_in_the_backward(family, tmp_path):
    """Checkpointing really happens, and only where a gradient is needed: a prefix on the top
    layer alone recomputes the top layer alone (nothing below it is back-propagated)."""
    pm = prompted(family, tmp_path, "prefix", "prompt.layers=[-1]")
    pm.adapter.enable_checkpointing()
    calls: list[int] = []
    for i, attn in enumerate(pm.adapter.attention_modules()):
        attn.register_forward_hook(lambda *_, i=i: calls.append(i))
    torch.manual_seed(0)
    loss = pm(batch(family), "t").loss
    layers = len(pm.adapter.layers())
    assert calls == list(range(layers))
    loss.backward()
    assert calls[layers:] == [layers - 1]
    with torch.no_grad():  # evaluation: nothing is checkpointed, nothing recomputed
        calls.clear()
        pm(batch(family), "t")
    assert calls == list(range(layers))


@pytest.mark.parametrize("family", FAMILIES)
def test_two_forwards_then_one_backward(family, tmp_path):
    """The recompute runs in the backward, after the second forward set ITS prefix (a new prompt
    dropout draw, same shape): each layer must still recompute with its own forward's prefix."""
    pm = prompted(family, tmp_path, "prefix")
    batches = [batch(family, 0), batch(family, 1)]
    off = loss_and_grads(pm, batches)
    pm.adapter.enable_checkpointing()
    assert_same_training_signal(off, loss_and_grads(pm, batches))


def test_disable_restores_the_plain_forward(tmp_path):
    pm = prompted("bert", tmp_path, "prefix")
    pm.adapter.enable_checkpointing()
    pm.adapter.disable_checkpointing()
    assert not pm.adapter.checkpointing_enabled()
    calls = []
    pm.adapter.attention_modules()[0].register_forward_hook(lambda *_: calls.append(1))
    pm(batch("bert"), "t").loss.backward()
    assert calls == [1]


@pytest.mark.parametrize("family", ["bert", "glm"])
def test_reentrant_checkpointing_would_lose_the_prefix_gradient(family, tmp_path, monkeypatch):
    """Why non-reentrant: reentrant checkpointing runs the layer without a graph and
    differentiates only its inputs; the prefix is an attribute, and the frozen embeddings need no
    gradient, so the prefix gets none. The tests above would catch the switch."""
    def reentrant(fn, *args, use_reentrant, **kwargs):
        return torch_checkpoint(functools.partial(fn, **kwargs), *args, use_reentrant=True)

    monkeypatch.setattr(base, "checkpoint", reentrant)
    pm = prompted(family, tmp_path, "prefix")
    pm.adapter.enable_checkpointing()
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad"):
        pm(batch(family), "t").loss.backward()
    assert all(p.grad is not None for p in pm.heads.parameters())  # the backward ran ...
    assert all(p.grad is None for p in pm.prompt.parameters())  # ... and never reached the prefix


def _multi(family, tmp_path) -> PromptedModel:
    """Two prefixes of different length and depth behind one MultiPrompt, dropout on."""
    model, adapter, hidden = backbone(family, tmp_path)
    prompts = []
    for i, cfg in enumerate((PromptConfig(method="prefix", length=2, dropout=DROPOUT),
                             PromptConfig(method="prefix", length=4, layers=[-1], dropout=DROPOUT))):
        torch.manual_seed(10 + i)
        prompts.append(PROMPTS.get("prefix")(cfg, adapter.spec()))
    multi = MultiPrompt(prompts, {"a": 0, "b": 1})
    return assemble(model, adapter, multi, [HeadSpec("a", "token", LABELS), HeadSpec("b", "token", LABELS)]).train()


@pytest.mark.parametrize("family", FAMILIES)
def test_multi_prompt_per_example_prefixes(family, tmp_path):
    pm = _multi(family, tmp_path)
    b = batch(family)
    tasks = ["a", "b"]
    off = loss_and_grads(pm, [b], task=tasks)
    pm.adapter.enable_checkpointing()
    on = loss_and_grads(pm, [b], task=tasks)
    assert_same_training_signal(off, on, "prompt.prompts.1.")
    assert off[1]["prompt.prompts.0.embedding.weight"].abs().sum() > 0
