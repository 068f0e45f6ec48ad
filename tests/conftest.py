"""Shared tiny-model builders for the test-suite.

``tiny_backbone(family, tmp_path)`` builds a randomly initialised 3-layer backbone from a config
in-process, round-trips it through ``save_pretrained``/``from_pretrained`` with the adapter's
``load_kwargs`` (so BERT/RoBERTa really run with ``attn_implementation="deepprompt"``, as in a
real run) and returns ``(model, adapter)``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, BertConfig, DebertaV2Config, MPNetConfig, RobertaConfig

import deepprompt.models.backbones  # noqa: F401  (registers the backbone families)
import deepprompt.prompts  # noqa: F401  (registers the prompt methods)
from deepprompt.registry import BACKBONES

# Encoded features are cached per test session (launched runs inherit it), never in the user's home,
# and the cache goes when the session ends (one per session piled up in /tmp before).
_CACHE_DIR = tempfile.mkdtemp(prefix="deepprompt-cache-")
os.environ["DEEPPROMPT_CACHE"] = _CACHE_DIR


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)

# The models here are tiny: intra-op threads only add contention (100x slower on a busy 2-core box).
torch.set_num_threads(1)

FAMILIES = ("bert", "roberta", "deberta-v2", "mpnet")

VOCAB = 60
HIDDEN = 48
HEADS = 4  # head_dim 12: DeBERTa's scale sqrt(12 * 3) = 6 is exact, even in float32
PAD_ID = {"bert": 0, "roberta": 1, "deberta-v2": 0, "mpnet": 1}

_COMMON = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_attention_heads=HEADS, intermediate_size=64,
               initializer_range=0.2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
               max_position_embeddings=64, type_vocab_size=2)


def tiny_config(family: str, num_layers: int = 3, **overrides):
    kw = dict(_COMMON, num_hidden_layers=num_layers, pad_token_id=PAD_ID[family])
    if family == "bert":
        cls = BertConfig
    elif family == "roberta":
        cls = RobertaConfig
        kw.update(bos_token_id=0, eos_token_id=2)
    elif family == "deberta-v2":
        cls = DebertaV2Config
        kw.update(relative_attention=True, pos_att_type=["c2p", "p2c"], position_biased_input=False,
                  position_buckets=8, max_relative_positions=-1, share_att_key=True)
    elif family == "mpnet":
        cls = MPNetConfig
        kw.update(bos_token_id=0, eos_token_id=2)
    else:  # pragma: no cover - test typo
        raise ValueError(family)
    kw.update(overrides)
    return cls(**kw)


def tiny_backbone(family: str, tmp_path, num_layers: int = 3, seed: int = 0, **overrides):
    """(model, adapter) for a tiny random ``family`` backbone in eval mode, float32."""
    cfg = tiny_config(family, num_layers, **overrides)
    torch.manual_seed(seed)
    model = AutoModel.from_config(cfg)
    adapter_cls = BACKBONES.get(family)
    out = Path(tempfile.mkdtemp(prefix=f"{family}-", dir=tmp_path))
    model.save_pretrained(out)
    model = AutoModel.from_pretrained(out, **adapter_cls.load_kwargs)
    model.eval()
    return model, adapter_cls(model)


def make_batch(family: str, lengths=(7, 5), seed: int = 0) -> dict:
    """input_ids / attention_mask for sequences of the given real lengths, right-padded."""
    g = torch.Generator().manual_seed(seed)
    length = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), length), generator=g)
    mask = torch.zeros(len(lengths), length, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = PAD_ID[family]
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


def _mapped_shm_segments() -> set[str]:
    """Paths under /dev/shm that some live process has mapped."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.split(None, 5)[5].strip() for line in maps.read_text().splitlines()
                          if "/dev/shm/" in line and len(line.split(None, 5)) == 6)
        except OSError:
            continue
    return mapped


@pytest.fixture(scope="session", autouse=True)
def _no_leaked_shared_memory():
    """Runs killed with SIGKILL (the preemption tests do that on purpose) cannot release DeepSpeed's
    /dev/shm all-reduce segments; remove the ones this session created that no live process maps
    (another test session's run may be using its own right now), so repeated test runs never fill
    /dev/shm (runs that exit normally release their own: comm.release_shm_buffers)."""
    import os
    import time

    started = time.time()
    yield
    shm = Path("/dev/shm")
    in_use = _mapped_shm_segments()
    for f in shm.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*") if shm.is_dir() else []:
        try:
            if f.stat().st_mtime >= started and str(f) not in in_use:
                f.unlink()
        except OSError:
            pass
