"""The memory calculator with grouped-query attention: a prefix token holds 2 x kv_heads x head_dim
values per layer, read from the real (tiny) decoder module."""
from __future__ import annotations

from deepprompt import memory
from tests.decoder_tiny import tiny_decoder


def test_calculator_counts_the_prefix_in_kv_heads():
    model, adapter = tiny_decoder("qwen3")
    s = adapter.spec()
    bb = memory.module_backbone(model, s.hidden, s.num_layers, s.num_heads, "tiny-qwen3", s.kv_width)
    assert bb.kv == s.num_kv_heads * s.head_dim == 24 and bb.kv != bb.hidden
    w = memory.Workload(world=1, prompt_length=5, labels=0, head="cloze")
    assert memory.trainable_params(bb, w) == 5 * s.num_layers * 2 * s.num_kv_heads * s.head_dim
    full = memory.module_backbone(model, s.hidden, s.num_layers, s.num_heads, "as-if-mha")
    assert memory.activation_bytes_per_layer(bb, w) < memory.activation_bytes_per_layer(full, w)
    assert bb.numel == sum(p.numel() for p in model.parameters())
