"""Tiny random decoder LLMs (llama, mistral, qwen2, qwen3, glm, glm4; grouped-query attention with
kv_heads < heads) and a word-level tokenizer with EOS and a chat template, for decoder tests."""
from __future__ import annotations

from pathlib import Path

import torch

import deepprompt.models.backbones  # noqa: F401  (registers the families)
from deepprompt.models.backbones.decoder import ATTN_IMPL, DecoderAdapter

DECODERS = ("llama", "mistral", "qwen2", "qwen3", "glm", "glm4")
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ["a", "b", "c", "d", "e", "yes", "no", "what", "is", "the", "answer", "question", "context", ":", "?",
         "red", "blue", "green", "one", "two", "three", "user", "assistant", "cat", "dog"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


def decoder_config(model_type: str, num_layers: int = 2, **overrides):
    from transformers import AutoConfig

    kw = dict(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
              num_hidden_layers=num_layers, intermediate_size=48, max_position_embeddings=64,
              initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    if model_type in ("qwen3", "glm4", "glm"):
        kw["head_dim"] = 12  # head width independent of hidden / heads
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def tiny_decoder(model_type: str, seed: int = 0, dtype=torch.float32, **overrides):
    """(model, adapter): a random ``*ForCausalLM`` built in process with the deepprompt attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(decoder_config(model_type, **overrides), attn_implementation=ATTN_IMPL)
    model = model.to(dtype).eval()
    return model, DecoderAdapter(model)


def tiny_tokenizer(chat_template: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_decoder(path: Path, model_type: str = "llama", chat_template: bool = True, **overrides) -> Path:
    """A tiny decoder + tokenizer saved as a from_pretrained directory."""
    path.mkdir(parents=True, exist_ok=True)
    model, _ = tiny_decoder(model_type, **overrides)
    tiny_tokenizer(chat_template).save_pretrained(path)
    model.save_pretrained(path)
    return path


def padded_batch(lengths=(7, 5), side: str = "right", seed: int = 0, vocab: int = 29) -> dict:
    """Random real tokens (ids >= 4), padded with id 0 on ``side``; the real tokens of row b are
    the same whatever the side."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        real = torch.randint(4, vocab, (n,), generator=g)
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        ids[b, sl], mask[b, sl] = real, 1
    return {"input_ids": ids, "attention_mask": mask}


ANSWERS = ["red", "blue", "green", "one", "two", "three", "cat", "dog"]


def write_generation_data(root: Path, n_train: int = 64, n_dev: int = 8, chat: bool = False) -> Path:
    """A copy task in the tiny vocabulary: ``what is the answer ? <w>`` -> ``<w>``
    (``messages`` form with ``chat``), as train.jsonl / dev.jsonl."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for i in range(n):
            w = ANSWERS[(i * 3 + (split == "dev")) % len(ANSWERS)]
            prompt = f"what is the answer ? {w}"
            rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": w}]}
                        if chat else {"prompt": prompt, "response": w})
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
