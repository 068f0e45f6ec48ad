"""Per-GPU memory of deep prompt tuning a GLM under ZeRO-3: a calculator (docs/memory.md).

Every term is per rank, in bytes, for ``world`` ranks, micro batch ``b`` per rank, ``s`` tokens,
prefix length ``P``, model width ``h``, ``a`` heads, ``L`` layers, weight bytes ``w`` (2 for bf16):

- frozen weights: ``N_backbone * w / world`` (ZeRO-3 shard; exact up to per-tensor padding);
- gathered working set: ZeRO-3 materialises the layer being run plus the prefetched next one,
  ``2 * layer_params * w``, or the word embedding (``V * h * w``) when that is larger;
- prompts + heads: ``T * w`` whole on every rank (persistent) and their gradient, ``T * w`` again;
- optimizer: Adam moments ``8 T / world`` plus, in bf16, the fp32 master copy ``4 T / world``;
- activations kept for backward (nothing recomputed; a prefix in layer i needs the backward of every
  layer above it), per layer, as saved by ``deepprompt/models/glm/model.py`` with frozen weights:
  ``w * b * (7 s h + 2 (s + P) h)``  (2 LayerNorm inputs, Q, K and V incl. the prefix, GeLU input 4h)
  ``+ w * b * s * (s + P) + w * b * s * h + 4 * b * a * s``  (fused attention through
  ``scaled_dot_product_attention``: the mask as the kernel's bias, shared by all heads, its output
  and the fp32 log-sum-exp; attention dropout keeps only a seed; no per-head ``s x (s + P)`` scores)
  ``+ 2 m b s h`` with dropout (the two residual-branch dropout masks) ``+ 16 b s`` (LayerNorm
  statistics); ``m`` = bytes of a dropout mask (1 on GPU: bool; CPU kernels keep it in ``w``).
  ``+ w * b * 7 s h`` under ZeRO-3: DeepSpeed's ``zero.Init`` replaces ``F.linear`` with its own
  function, which keeps every linear layer's input (QKV input, attention context, MLP input, GeLU
  output 4h) even for frozen weights (torch's own linear would not, but it would keep the gathered
  weights alive instead). Layer 0 keeps a little less (its inputs need no gradient), so the formula
  is a slight upper bound;
- plus a fixed ``overhead`` (CUDA context, allocator slack, communication buffers), 1.5 GiB by default.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass
class Workload:
    world: int
    micro_batch: int = 16
    seq: int = 128
    prompt_length: int = 16
    weight_bytes: int = 2
    dropout: bool = True
    labels: int = 2
    head: str = "classification"
    mask_bytes: int = 1
    zero3_linear: bool = True
    offload_params: bool = False
    checkpointing: bool = False
    """train.activation_checkpointing: each layer keeps only its input; one layer's activations
    exist at a time, while its backward recomputes them."""
    overhead: float = 1.5 * GIB


def trainable_params(cfg, w: Workload) -> int:
    prefix = w.prompt_length * cfg.num_hidden_layers * 2 * cfg.hidden_size
    head = 0 if w.head == "cloze" else (cfg.hidden_size + 1) * w.labels
    return prefix + head


def activation_bytes_per_layer(cfg, w: Workload) -> float:
    b, s, p, h, a, wb = w.micro_batch, w.seq, w.prompt_length, cfg.hidden_size, cfg.num_attention_heads, w.weight_bytes
    tokens = wb * b * ((14 if w.zero3_linear else 7) * s * h + 2 * (s + p) * h)
    # fused attention (scaled_dot_product_attention): the mask as the kernel's additive bias, shared
    # by the heads, its output and the fp32 log-sum-exp per head and query; no per-head scores
    attention = wb * b * s * (s + p) + wb * b * s * h + 4 * b * a * s
    masks = 2 * w.mask_bytes * b * s * h if w.dropout else 0
    return tokens + attention + masks + 16 * b * s


def activations(cfg, w: Workload) -> float:
    """Bytes kept for the backward over all layers (see the module docstring)."""
    per_layer = activation_bytes_per_layer(cfg, w)
    if not w.checkpointing:
        return cfg.num_hidden_layers * per_layer
    return cfg.num_hidden_layers * w.weight_bytes * w.micro_batch * w.seq * cfg.hidden_size + per_layer


def largest_micro_batch(cfg, budget_bytes: float, limit: int = 1024, **workload) -> int:
    """The largest power-of-two micro batch whose estimate fits ``budget_bytes`` per rank (0: none)."""
    best, b = 0, 1
    while b <= limit and estimate(cfg, Workload(micro_batch=b, **workload))["total"] <= budget_bytes:
        best, b = b, 2 * b
    return best


def estimate(cfg, w: Workload) -> dict[str, float]:
    """Bytes per rank, by component (``total`` included)."""
    n = cfg.num_params()
    h = cfg.hidden_size
    layer = (n - cfg.vocab_size * h - 2 * cfg.max_position_embeddings * h - 2 * h) // cfg.num_hidden_layers
    t = trainable_params(cfg, w)
    out = {
        "frozen_weights": 0.0 if w.offload_params else n * w.weight_bytes / w.world,
        "gathered_working_set": max(2 * layer, cfg.vocab_size * h) * w.weight_bytes,
        "prompts_heads_and_grads": 2 * t * w.weight_bytes,
        "optimizer_state": t * (8 + (4 if w.weight_bytes != 4 else 0)) / w.world,
        "activations": activations(cfg, w),
        "overhead": w.overhead,
    }
    out["total"] = sum(out.values())
    return out


def table(cfg, name: str, worlds: list[int], **kw) -> str:
    rows = {g: estimate(cfg, Workload(world=g, **kw)) for g in worlds}
    keys = list(next(iter(rows.values())))
    lines = [f"{name}: {cfg.num_params() / 1e9:.2f}B params | " + ", ".join(f"{k}={v}" for k, v in kw.items()),
             f"{'GiB per GPU':<26}" + "".join(f"{g:>9} GPU" for g in worlds)]
    for k in keys:
        lines.append(f"{k:<26}" + "".join(f"{rows[g][k] / GIB:>13.2f}" for g in worlds))
    return "\n".join(lines)


def main(argv=None) -> None:
    from pathlib import Path

    from deepprompt.models.glm.config import PRESETS, read_config

    ap = argparse.ArgumentParser(prog="deepprompt memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="glm-xxlarge", help="a GLM preset or GLM checkpoint directory")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 16, 64])
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--head", choices=["classification", "cloze", "token"], default="classification")
    ap.add_argument("--labels", type=int, default=2)
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--offload", action="store_true", help="ds_configs/zero3_offload.json: weights' shards in CPU memory")
    ap.add_argument("--checkpointing", action="store_true", help="train.activation_checkpointing=true")
    args = ap.parse_args(argv)
    cfg = PRESETS[args.model] if args.model in PRESETS else read_config(Path(args.model))
    print(table(cfg, args.model, args.gpus, micro_batch=args.micro_batch, seq=args.seq,
                prompt_length=args.prompt_length, weight_bytes=2 if args.dtype == "bf16" else 4,
                dropout=not args.no_dropout, labels=args.labels, head=args.head, offload_params=args.offload,
                checkpointing=args.checkpointing))
