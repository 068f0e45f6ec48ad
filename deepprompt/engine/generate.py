"""Generation with a prompted decoder: the prompt's prefix is computed ONCE per batch and prepended
to every layer's keys/values at every step, the real tokens' keys/values are kept in transformers'
``DynamicCache``, so each step after the first runs the backbone on one new token per sequence.

Prompts are left-padded (every sequence's next token is then the last column); the real tokens get
rotary positions 0..n-1 and new tokens continue from there (``DecoderAdapter``). Greedy, or sampling
with temperature / top-k / top-p from a seeded generator; a sequence stops at EOS (its later columns
are padding), the batch at ``max_new_tokens`` or when every sequence has stopped.

ZeRO-3: every forward gathers the partitioned weights collectively, so every rank must run the same
number of forwards. With ``sync`` the ranks agree after each step (``comm.any_rank``) and a rank
whose sequences are all done keeps stepping on padding until every rank is done. An input prompt
(Lester, P-Tuning v1) is prepended as embeddings in the first step and then lives in the cache.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from deepprompt.engine import comm
from deepprompt.errors import ConfigError


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        if len(p):
            ids[b, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[b, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int, top_p: float,
         generator: torch.Generator | None) -> torch.Tensor:
    """[B] next tokens from [B, vocab] logits."""
    if not do_sample:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix reaching top_p (at least one)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


@torch.no_grad()
def generate(model, prompts: Sequence[Sequence[int]], task: str | Sequence[str], *, max_new_tokens: int,
             eos_id: int, pad_id: int, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, sync: bool = True) -> list[list[int]]:
    """The new token ids of each prompt (EOS and what follows it dropped). ``model``: a
    ``PromptedModel`` over a decoder (or a DeepSpeed engine holding one); ``task``: one task name,
    or one per prompt (a mixed batch over a ``MultiPrompt``)."""
    from transformers import DynamicCache

    model = getattr(model, "module", model)
    adapter = model.adapter
    if not hasattr(adapter, "forward_cached"):
        raise ConfigError(f"generation: backbone family {adapter.family!r} is not a decoder (model.family=decoder)")
    device = next(model.parameters()).device
    ids, mask = left_pad(prompts, pad_id, device)
    b = ids.shape[0]
    generator = torch.Generator().manual_seed(seed) if do_sample else None
    prompt = model.apply_prompt(b, task, device)
    cache = DynamicCache(config=adapter.model.config)
    if prompt.input_embeds is not None:  # [prompt; padding; tokens]: the prompt is the first real tokens
        p = prompt.input_embeds.shape[1]
        embeds = adapter.word_embeddings()(ids)
        embeds = torch.cat([prompt.input_embeds.to(embeds.dtype), embeds], 1)
        mask = torch.cat([mask.new_ones(b, p), mask], 1)
        hidden, cache = adapter.forward_cached(inputs_embeds=embeds, attention_mask=mask, cache=cache)
    else:
        hidden, cache = adapter.forward_cached(input_ids=ids, attention_mask=mask, cache=cache)
    position = mask.sum(-1)  # the next token's rotary position: the count of real tokens so far
    done = torch.zeros(b, dtype=torch.bool, device=device)
    out = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    try:
        for step in range(max_new_tokens):
            logits = adapter.lm_logits(hidden[:, -1])
            token = pick(logits, do_sample, temperature, top_k, top_p, generator)
            token = torch.where(done, torch.full_like(token, pad_id), token)
            out[:, step] = token
            done = done | (token == eos_id)
            last = step == max_new_tokens - 1
            more = not bool(done.all())
            if last or not (comm.any_rank(more) if sync else more):
                break
            mask = torch.cat([mask, (~done).long()[:, None]], 1)
            hidden, cache = adapter.forward_cached(input_ids=token[:, None], attention_mask=mask, cache=cache,
                                                   position_ids=position[:, None])
            position = position + 1
    finally:
        adapter.set_prefix({})
    result = []
    for row in out.tolist():
        result.append(row[:row.index(eos_id)] if eos_id in row else row)
    return result
