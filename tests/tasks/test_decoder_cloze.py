"""The cloze formulation with a decoder's tokenizer (no mask token): the pattern stops where the mask
was, the verbalizer is scored as the next token after the last one, through the LM head."""
from __future__ import annotations

import json

import torch

from deepprompt.config import PromptConfig, TaskConfig
from deepprompt.models.heads import ClozeHead
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.prompts.prefix import DeepPrefix
from deepprompt.tasks import build_task
from tests.decoder_tiny import tiny_decoder, tiny_tokenizer
from tests.tiny import FIXTURES

SG = FIXTURES / "superglue"


def test_rte_cloze_for_a_decoder_ends_at_the_answer_and_scores_the_next_token():
    tok = tiny_tokenizer()
    assert tok.mask_token_id is None
    task = build_task(TaskConfig(name="rte", data_dir=str(SG), formulation="cloze", max_seq_length=64), tok)
    feats = task.features("dev")
    yes, no = tok.convert_tokens_to_ids(["yes", "no"])
    rows = [json.loads(line) for line in (SG / "RTE" / "val.jsonl").read_text().splitlines() if line.strip()]
    for f, row in zip(feats, rows):
        want = (tok.tokenize(row["premise"]) + tok.tokenize(" Question:") + tok.tokenize(row["hypothesis"])
                + tok.tokenize("? Answer:"))
        assert tok.convert_ids_to_tokens(f["input_ids"]) == want  # nothing after the answer's place
        assert f["mask_positions"] == len(want) - 1 and f["candidate_ids"] == [yes, no]
    model, adapter = tiny_decoder("llama")
    prefix = DeepPrefix(PromptConfig(method="prefix", length=2, dropout=0.0), adapter.spec())
    pm = PromptedModel(model, adapter, prefix, {"rte": ClozeHead(32)}).eval()
    batch = task.collate(feats[0:3])
    with torch.no_grad():
        logits = pm(batch, "rte").logits
        pm.adapter.set_prefix(prefix(3).layer_kv)
        hidden = adapter.forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        last = hidden[torch.arange(3), batch["attention_mask"].sum(-1) - 1]  # right padding
        want = adapter.lm_logits(last)[:, [yes, no]]
    assert logits.shape == (3, 2)
    torch.testing.assert_close(logits, want)
