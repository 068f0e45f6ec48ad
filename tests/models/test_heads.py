"""Task heads through the prompted model on a tiny frozen BERT: shapes, masking, and that each learns."""
from __future__ import annotations

import pytest
import torch

from deepprompt.config import PromptConfig
from deepprompt.models.heads import (ClassificationHead, MultipleChoiceHead, QAHead,
                                     TokenClassificationHead)
from deepprompt.models.assembly import HeadSpec, assemble
from deepprompt.registry import HEADS
from tests.conftest import tiny_backbone

CLS, PAD = 2, 0
MARK_A, MARK_B = 5, 6  # QA span markers
NEEDLE = 7  # classification / multiple-choice marker
FILLER = (8, 30)  # ordinary token ids


def prompted(tmp_path, head, method="prefix", length=4, num_labels=0, **cfg):
    backbone, adapter = tiny_backbone("bert", tmp_path)
    spec = adapter.spec()
    torch.manual_seed(0)
    name = next(n for n, c in HEADS.items() if c is head)
    return assemble(backbone, adapter, PromptConfig(method=method, length=length, **cfg), [HeadSpec("t", name, num_labels)]), spec


def fit(model, batch, steps=60, lr=2e-2):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(batch, "t")
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return sum(losses[:3]) / 3, sum(losses[-3:]) / 3


def filler(g, *shape):
    return torch.randint(*FILLER, shape, generator=g)


def classification_batch(n=24, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = filler(g, n, length)
    ids[:, 0] = CLS
    labels = torch.arange(n) % 2
    where = torch.randint(1, length - 2, (n,), generator=g)
    ids[labels == 1, where[labels == 1]] = NEEDLE
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::4, -2:] = 0  # some padded sequences (the needle is never in the padding)
    ids[mask == 0] = PAD
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def qa_batch(n=16, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = filler(g, n, length)
    ids[:, 0] = CLS
    start = torch.randint(1, length - 4, (n,), generator=g)
    end = start + torch.randint(1, 4, (n,), generator=g)
    ids[torch.arange(n), start] = MARK_A  # the answer span runs from one marker to the other
    ids[torch.arange(n), end] = MARK_B
    mask = torch.ones(n, length, dtype=torch.long)
    for b in range(0, n, 3):  # every third example is padded right after its span
        mask[b, int(end[b]) + 1:] = 0
    ids[mask == 0] = PAD
    return {"input_ids": ids, "attention_mask": mask, "start_positions": start, "end_positions": end}


def multiple_choice_batch(n=12, choices=3, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = filler(g, n, choices, length)
    ids[..., 0] = CLS
    labels = torch.randint(0, choices, (n,), generator=g)
    where = torch.randint(1, length, (n,), generator=g)
    ids[torch.arange(n), labels, where] = NEEDLE
    mask = torch.ones(n, choices, length, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_batch(n=16, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 15, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[::3, -3:] = 0
    ids[mask == 0] = PAD
    return {"input_ids": ids, "attention_mask": mask, "labels": (ids % 3).masked_fill(mask == 0, -100)}


def test_heads_are_registered():
    assert HEADS.get("classification") is ClassificationHead
    assert HEADS.get("token") is TokenClassificationHead
    assert HEADS.get("qa") is QAHead
    assert HEADS.get("multiple_choice") is MultipleChoiceHead


@pytest.mark.parametrize("head,num_labels", [(ClassificationHead, 5), (TokenClassificationHead, 4),
                                             (QAHead, 2), (MultipleChoiceHead, 1)])
def test_head_parameter_count(head, num_labels):
    h = 48
    module = head(h, num_labels)
    assert sum(p.numel() for p in module.parameters()) == head.num_params(h, num_labels)


# ------------------------------------------------------------------------------- learning

@pytest.mark.parametrize("head, num_labels, make_batch, logits_shape", [
    (ClassificationHead, 2, classification_batch, (24, 2)),
    (TokenClassificationHead, 3, token_batch, (16, 9, 3)),
    (QAHead, 0, qa_batch, (16, 10, 2)),
    (MultipleChoiceHead, 0, multiple_choice_batch, (12, 3)),
], ids=["classification", "token", "qa", "multiple_choice"])
def test_head_learns(tmp_path, head, num_labels, make_batch, logits_shape):
    model, _ = prompted(tmp_path, head, num_labels=num_labels)
    batch = make_batch()
    with torch.no_grad():
        assert model.eval()(batch, "t").logits.shape == logits_shape
    first, last = fit(model, batch)
    assert last < 0.4 * first, f"loss {first:.3f} -> {last:.3f}"


# ------------------------------------------------------------------------------- masking

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_qa_head_never_puts_mass_on_padding(dtype, tmp_path):
    model, _ = prompted(tmp_path, QAHead)
    model.to(dtype).eval()
    batch = qa_batch()
    pad = batch["attention_mask"] == 0
    assert pad.any()
    with torch.no_grad():
        out = model(batch, "t")
    logits = out.logits
    assert logits.dtype == dtype
    lowest = torch.finfo(dtype).min
    assert (logits[pad] == lowest).all()
    assert (logits[~pad] > lowest).all()
    assert torch.isfinite(out.loss)
    probs = logits.float().softmax(dim=1)
    assert (probs[pad] == 0).all()


def test_qa_head_without_attention_mask_masks_nothing():
    head = QAHead(8).eval()
    logits = head(torch.randn(2, 5, 8), {"input_ids": torch.ones(2, 5, dtype=torch.long)})
    assert logits.shape == (2, 5, 2)
    assert (logits > torch.finfo(logits.dtype).min).all()


# ------------------------------------------------------------------------------- input prompts

@pytest.mark.parametrize("method,cfg", [("prompt", {}), ("ptuning", {"encoder_hidden": 20})])
def test_input_prompt_is_stripped_before_the_head(method, cfg, tmp_path):
    model, spec = prompted(tmp_path, TokenClassificationHead, method=method, length=5, num_labels=3, **cfg)
    model.eval()
    batch = token_batch()
    seen = []
    handle = model.heads["t"].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            out = model(batch, "t")
    finally:
        handle.remove()
    b, length = batch["input_ids"].shape
    assert out.logits.shape == (b, length, 3)
    assert seen[0].shape == (b, length, spec.hidden)

    # the head sees exactly the real tokens' states of a forward over [prompt; tokens]
    with torch.no_grad():
        prompt = model.prompt(b).input_embeds
        embeds = model.adapter.word_embeddings()(batch["input_ids"])
        mask = torch.cat([torch.ones(b, 5, dtype=torch.long), batch["attention_mask"]], dim=1)
        full = model.adapter.forward(inputs_embeds=torch.cat([prompt, embeds], 1), attention_mask=mask)
    assert full.shape[1] == length + 5
    torch.testing.assert_close(seen[0], full[:, 5:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["prompt", "ptuning"])
def test_input_prompt_with_qa_and_multiple_choice_heads(method, tmp_path):
    model, _ = prompted(tmp_path, QAHead, method=method, length=3)
    model.eval()
    batch = qa_batch()
    with torch.no_grad():
        logits = model(batch, "t").logits
    assert logits.shape == (16, 10, 2)
    assert (logits[batch["attention_mask"] == 0] == torch.finfo(logits.dtype).min).all()

    model, _ = prompted(tmp_path, MultipleChoiceHead, method=method, length=3)
    with torch.no_grad():
        assert model.eval()(multiple_choice_batch(), "t").logits.shape == (12, 3)


def test_cloze_head_scores_verbalizers_in_fp32_under_bf16():
    """Two verbalizer logits 256 and 256.5 are one bf16 step apart at most (spacing 2 at 256): a
    bf16 score ties them and the argmax picks the wrong label."""
    from types import SimpleNamespace

    from deepprompt.models.heads import ClozeHead

    table = torch.nn.Embedding(3, 2).to(torch.bfloat16)
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.5]]))
    head = ClozeHead(2)
    head.bind(SimpleNamespace(word_embeddings=lambda: table))
    hidden = torch.tensor([[[256.0, 1.0]]], dtype=torch.bfloat16)  # [B=1, L=1, h=2]
    logits = head(hidden, {"mask_positions": torch.tensor([0]), "candidate_ids": torch.tensor([[1, 2]])})
    assert logits.dtype == torch.float32
    assert logits[0, 1] > logits[0, 0] and logits.argmax(-1).item() == 1
