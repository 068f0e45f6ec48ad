"""Heads on a decoder: classification pools the LAST real token (right or left padding), token
classification as on encoders, the lm head's loss covers the response tokens only; each learns a
synthetic task with a frozen tiny grouped-query backbone and a trained prefix."""
from __future__ import annotations

import pytest
import torch

from deepprompt.config import PromptConfig
from deepprompt.models.heads import IGNORE, ClassificationHead, LMHead, TokenClassificationHead, pooled
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.prompts.prefix import DeepPrefix
from tests.decoder_tiny import padded_batch, tiny_decoder


def prompted(head, model_type="llama", length=4):
    model, adapter = tiny_decoder(model_type)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    prefix = DeepPrefix(PromptConfig(method="prefix", length=length, dropout=0.0), adapter.spec())
    return PromptedModel(model, adapter, prefix, {"t": head}), frozen


def train(pm, batches, steps, lr=3e-2):
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr)
    pm.train()
    for step in range(steps):
        loss = pm(batches[step % len(batches)], "t").loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    pm.eval()


def test_pooling_reads_the_last_real_token_for_either_padding():
    hidden = torch.arange(2 * 5, dtype=torch.float).view(2, 5, 1)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert pooled(hidden, {"attention_mask": right}, last=True).flatten().tolist() == [2.0, 9.0]
    assert pooled(hidden, {"attention_mask": left}, last=True).flatten().tolist() == [4.0, 9.0]
    assert pooled(hidden, {"attention_mask": right}, last=False).flatten().tolist() == [0.0, 5.0]


@pytest.mark.parametrize("side", ["right", "left"])
def test_classification_learns_a_label_of_the_first_token(side):
    """The label is decided by the FIRST token: only a pooled state that attends back can learn it."""
    pm, frozen = prompted(ClassificationHead(32, 2, dropout=0.0))
    assert pm.heads["t"].pool_last
    batches = []
    for seed in range(4):
        b = padded_batch(lengths=(6, 4, 5, 3, 6, 4, 5, 3), side=side, seed=seed)
        first = b["input_ids"].gather(1, (b["attention_mask"].argmax(-1))[:, None]).squeeze(1)
        b["labels"] = (first % 2).long()
        batches.append(b)
    train(pm, batches, 120)
    with torch.no_grad():
        acc = sum((pm(b, "t").logits.argmax(-1) == b["labels"]).float().mean() for b in batches) / len(batches)
    assert acc >= 0.9
    assert all(torch.equal(frozen[k], v) for k, v in pm.backbone.state_dict().items())  # frozen, bit for bit


def test_token_classification_learns_a_per_token_label():
    pm, frozen = prompted(TokenClassificationHead(32, 2, dropout=0.0))
    batches = []
    for seed in range(2):
        b = padded_batch(lengths=(6, 4, 5), seed=seed)
        b["labels"] = torch.where(b["attention_mask"].bool(), (b["input_ids"] > 15).long(), IGNORE)
        batches.append(b)
    train(pm, batches, 80)
    with torch.no_grad():
        b = batches[0]
        pred = pm(b, "t").logits.argmax(-1)
        real = b["attention_mask"].bool()
    assert (pred[real] == b["labels"][real]).float().mean() >= 0.9
    assert all(torch.equal(frozen[k], v) for k, v in pm.backbone.state_dict().items())


def test_lm_head_loss_counts_the_response_only_and_learns_it():
    pm, frozen = prompted(LMHead(32), model_type="qwen3", length=6)
    ids = torch.tensor([[5, 6, 7, 20, 2], [8, 9, 10, 21, 2]])
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 20, 2], [IGNORE, IGNORE, IGNORE, 21, 2]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    out = pm(batch, "t")
    logp = out.logits[:, 2:4].log_softmax(-1)  # positions 2, 3 predict the response token and EOS
    want = -torch.stack([logp[:, 0].gather(1, ids[:, 3:4]), logp[:, 1].gather(1, ids[:, 4:5])]).mean()
    torch.testing.assert_close(out.loss, want)
    train(pm, [batch], 60)
    with torch.no_grad():
        assert pm(batch, "t").loss < 0.2 * out.loss
    assert all(torch.equal(frozen[k], v) for k, v in pm.backbone.state_dict().items())


def test_cloze_on_a_decoder_scores_candidates_as_the_next_token_through_the_lm_head():
    from deepprompt.models.heads import ClozeHead

    pm, _ = prompted(ClozeHead(32), model_type="mistral")
    b = padded_batch(lengths=(6, 4), side="left")
    b["candidate_ids"] = torch.tensor([[5, 9], [7, 11]])
    with torch.no_grad():
        got = pm(b, "t").logits
        pm.adapter.set_prefix(pm.prompt(2).layer_kv)
        nxt = pm.adapter.lm_logits(pm.adapter.forward(**b)[:, -1])  # left padding: the last column is real
    torch.testing.assert_close(got, nxt.gather(1, b["candidate_ids"]))
