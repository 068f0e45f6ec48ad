"""A batch mixing tasks whose prefixes differ in length and depth gives, example by example, what
each task's prompt and head give alone: one backbone forward, per-example prefix masks."""
from __future__ import annotations

import pytest
import torch

from deepprompt.config import PromptConfig
from deepprompt.errors import ConfigError
from deepprompt.models.heads import ClassificationHead, TokenClassificationHead
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.prompts import MultiPrompt
from deepprompt.registry import PROMPTS
from tests.conftest import make_batch, tiny_backbone

# three prompts: different lengths P, different depths, one reparameterised
PROMPTS_CFG = {
    "ner": PromptConfig(method="prefix", length=2, dropout=0.0),                     # P=2, every layer
    "topic": PromptConfig(method="prefix", length=5, layers=[1, 2], dropout=0.0),    # P=5, top two layers
    "chunk": PromptConfig(method="prefix", length=3, layers=[-1], reparam=True, reparam_hidden=8, dropout=0.0),
}
TASKS = ["ner", "topic", "topic", "chunk", "ner", "chunk"]
LENGTHS = (7, 5, 6, 4, 3, 7)


def build(family, tmp_path):
    backbone, adapter = tiny_backbone(family, tmp_path)
    spec = adapter.spec()
    prompts, heads = [], {}
    for i, (name, cfg) in enumerate(PROMPTS_CFG.items()):
        torch.manual_seed(10 + i)
        prompt = PROMPTS.get("prefix")(cfg, spec).eval()
        with torch.no_grad():  # a prefix far from its small init, so a leak would show
            for p in prompt.parameters():
                p.normal_(0, 1.0)
        prompts.append(prompt)
        head_cls = ClassificationHead if name == "topic" else TokenClassificationHead
        heads[name] = head_cls(spec.hidden, {"ner": 3, "topic": 4, "chunk": 5}[name]).eval()
    multi = MultiPrompt(prompts, {name: i for i, name in enumerate(PROMPTS_CFG)})
    return backbone, adapter, prompts, heads, multi


@pytest.mark.parametrize("family", ["bert", "deberta-v2", "mpnet"])
def test_mixed_batch_equals_each_task_alone(family, tmp_path):
    backbone, adapter, prompts, heads, multi = build(family, tmp_path)
    mixed = PromptedModel(backbone, adapter, multi, heads).eval()
    batch = make_batch(family, LENGTHS)
    with torch.no_grad():
        out = mixed(batch, TASKS)
        assert isinstance(out.logits, list) and len(out.logits) == len(TASKS) and out.loss is None
        for i, name in enumerate(PROMPTS_CFG):
            alone = PromptedModel(backbone, adapter, prompts[i], {name: heads[name]}).eval()
            rows = [b for b, t in enumerate(TASKS) if t == name]
            sub = {k: v[rows] for k, v in batch.items()}
            ref = alone(sub, name).logits
            for j, b in enumerate(rows):
                got = out.logits[b]
                if name == "topic":  # classification: one row of logits from [CLS]
                    torch.testing.assert_close(got, ref[j], rtol=0, atol=1e-5)
                else:  # token: compare the real (non-padding) positions
                    n = LENGTHS[b]
                    torch.testing.assert_close(got[:n], ref[j, :n], rtol=0, atol=1e-5)
        # and the prefixes matter: without them the logits are far off
        plain = PromptedModel(backbone, adapter, PROMPTS.get("finetune")(PromptConfig("finetune"), adapter.spec()),
                              heads).eval()
        bare = plain(batch, TASKS).logits
    assert not torch.allclose(bare[0][:LENGTHS[0]], out.logits[0][:LENGTHS[0]], atol=1e-3)


def test_prefix_masks_hide_padding_and_missing_layers(tmp_path):
    _, _, _, _, multi = build("bert", tmp_path)
    index = multi.route(TASKS)
    assert index.tolist() == [0, 1, 1, 2, 0, 2]
    out = multi(index)
    assert sorted(out.layer_kv) == [0, 1, 2] and sorted(out.prefix_mask) == [0, 1, 2]
    for layer, (k, v) in out.layer_kv.items():
        assert k.shape == v.shape == (6, 4, 5, 12)  # padded to the longest prefix, P=5
    expect = {  # visible prefix columns per example: ner P=2 (all layers), topic P=5 (1, 2), chunk P=3 (2)
        0: [2, 0, 0, 0, 2, 0],
        1: [2, 5, 5, 0, 2, 0],
        2: [2, 5, 5, 3, 2, 3],
    }
    for layer, counts in expect.items():
        mask = out.prefix_mask[layer]
        assert mask.sum(1).tolist() == counts
        for b, c in enumerate(counts):  # visible columns are the leading ones
            assert mask[b, :c].all() and not mask[b, c:].any()


def test_gradients_reach_only_the_prompt_of_each_example(tmp_path):
    backbone, adapter, prompts, heads, multi = build("bert", tmp_path)
    model = PromptedModel(backbone, adapter, multi, heads)
    batch = make_batch("bert", LENGTHS[:2])
    out = model(batch, ["ner", "ner"])
    sum(t.float().sum() for t in out.logits).backward()
    assert prompts[0].embedding.weight.grad.abs().sum() > 0
    for unused in prompts[1:]:  # no example used them: zero gradient, not garbage
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in unused.parameters())


def test_routed_batch_loss_with_targets(tmp_path):
    backbone, adapter, prompts, heads, multi = build("bert", tmp_path)
    model = PromptedModel(backbone, adapter, multi, heads).eval()
    batch = make_batch("bert", (5, 5))
    batch["labels"] = torch.tensor([[0, 1, 2, 0, 1], [1, 1, 1, 1, 1]])
    out = model(batch, ["ner", "ner"])
    ref = PromptedModel(backbone, adapter, prompts[0], {"ner": heads["ner"]}).eval()(batch, "ner")
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=1e-6)


def test_unknown_task_and_input_prompts_are_refused(tmp_path):
    backbone, adapter, prompts, heads, multi = build("bert", tmp_path)
    with pytest.raises(ConfigError, match="task 'pos'"):
        multi.route(["ner", "pos"])
    lester = PROMPTS.get("prompt")(PromptConfig(method="prompt", length=2), adapter.spec())
    with pytest.raises(ConfigError, match="only key/value prefix methods"):
        MultiPrompt([prompts[0], lester], {"ner": 0, "x": 1})
