"""Generation with the prefix: the cached, batched, left-padded loop of ``engine/generate.py``
against step-by-step full forwards (no cache, one sequence at a time), EOS, sampling."""
from __future__ import annotations

import pytest
import torch

from deepprompt.config import PromptConfig
from deepprompt.engine.generate import generate
from deepprompt.models.heads import LMHead
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.registry import PROMPTS
from tests.decoder_tiny import tiny_decoder

PROMPTS_IDS = [[5, 9, 7, 11, 4], [6, 8], [12, 13, 14]]


def prompted(model_type: str, method: str = "prefix", length: int = 4):
    model, adapter = tiny_decoder(model_type)
    torch.manual_seed(3)
    prompt = PROMPTS.get(method)(PromptConfig(method=method, length=length, dropout=0.0), adapter.spec())
    with torch.no_grad():  # a prefix large enough to change what the model says
        for p in prompt.parameters():
            p.normal_(0, 1.0)
    return PromptedModel(model, adapter, prompt, {"t": LMHead(adapter.spec().hidden)}).eval()


def greedy_by_full_forwards(pm, ids: list[int], steps: int, eos: int) -> list[int]:
    out = []
    for _ in range(steps):
        x = torch.tensor([ids + out])
        logits = pm({"input_ids": x, "attention_mask": torch.ones_like(x)}, "t").logits[0, -1]
        token = int(logits.argmax())
        if token == eos:
            break
        out.append(token)
    return out


@pytest.mark.parametrize("model_type,method", [("llama", "prefix"), ("qwen3", "prefix"), ("glm4", "prefix"),
                                               ("mistral", "prompt")])
def test_cached_batched_generation_equals_step_by_step_full_forwards(model_type, method):
    pm = prompted(model_type, method)
    got = generate(pm, PROMPTS_IDS, "t", max_new_tokens=6, eos_id=2, pad_id=0, sync=False)
    want = [greedy_by_full_forwards(pm, p, 6, eos=2) for p in PROMPTS_IDS]
    assert got == want
    assert any(len(g) > 0 for g in got)


def test_generation_stops_at_eos_and_pads_after_it():
    pm = prompted("llama")
    free = generate(pm, PROMPTS_IDS, "t", max_new_tokens=6, eos_id=2, pad_id=0, sync=False)
    eos = free[0][2]  # the third token row 0 says becomes the EOS
    got = generate(pm, PROMPTS_IDS, "t", max_new_tokens=6, eos_id=eos, pad_id=0, sync=False)
    assert got[0] == free[0][:2]
    for g, f in zip(got, free):
        assert g == (f[:f.index(eos)] if eos in f else f)


def test_the_prefix_changes_what_is_generated():
    pm = prompted("llama")
    with_prefix = generate(pm, PROMPTS_IDS, "t", max_new_tokens=6, eos_id=2, pad_id=0, sync=False)
    with torch.no_grad():
        for p in pm.prompt.parameters():
            p.zero_()
    assert generate(pm, PROMPTS_IDS, "t", max_new_tokens=6, eos_id=2, pad_id=0, sync=False) != with_prefix


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    pm = prompted("qwen2")
    kw = dict(max_new_tokens=8, eos_id=2, pad_id=0, sync=False, do_sample=True, temperature=2.0)
    a = generate(pm, PROMPTS_IDS, "t", seed=1, **kw)
    assert a == generate(pm, PROMPTS_IDS, "t", seed=1, **kw)
    assert a != generate(pm, PROMPTS_IDS, "t", seed=2, **kw)
    greedy = generate(pm, PROMPTS_IDS, "t", max_new_tokens=8, eos_id=2, pad_id=0, sync=False)
    assert generate(pm, PROMPTS_IDS, "t", seed=5, **{**kw, "top_k": 1}) == greedy
    assert generate(pm, PROMPTS_IDS, "t", seed=5, **{**kw, "top_p": 1e-6}) == greedy


def test_a_finished_rank_keeps_stepping_while_another_rank_is_not_done(monkeypatch):
    """ZeRO-3: every forward gathers weights collectively, so a rank whose sequences all hit EOS
    must keep running forwards (on padding) until every rank is done; its own outputs do not change."""
    from deepprompt.engine import comm

    pm = prompted("llama")
    free = generate(pm, PROMPTS_IDS, "t", max_new_tokens=6, eos_id=2, pad_id=0, sync=False)
    eos = free[0][0]  # row 0 stops at once; make every row stop at its first token
    prompts = [PROMPTS_IDS[0]] * 2
    calls = []
    pm.adapter.body.register_forward_hook(lambda *a: calls.append(1))
    assert generate(pm, prompts, "t", max_new_tokens=6, eos_id=eos, pad_id=0, sync=True) == [[], []]
    assert len(calls) == 1  # alone (world 1): done after the first forward
    calls.clear()
    monkeypatch.setattr(comm, "any_rank", lambda flag: True)  # another rank is still generating
    assert generate(pm, prompts, "t", max_new_tokens=6, eos_id=eos, pad_id=0, sync=True) == [[], []]
    assert len(calls) == 6  # the prompt forward + one per further step, up to max_new_tokens
