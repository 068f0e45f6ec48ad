"""Per-rank memory and per-step communication of deep prompt tuning on a frozen backbone, for the
three layouts a DeepSpeed JSON can give (docs/memory.md, docs/scaling.md):

- ``flat`` (ds_configs/zero3.json): ZeRO-3 shards every large frozen tensor over ALL ``W`` ranks
  and all-gathers it for each forward (and for each backward where it was released in between);
- ``node_local`` (ds_configs/zero3_node_local.json): ZeRO-3 with hpZ (``zero_hpz_partition_size`` =
  ranks per node ``g``): each rank keeps its 1/W primary shard and a 1/g secondary shard, and from
  the second step on every gather of a frozen tensor reads the secondary, inside the node;
- ``replicated`` (ds_configs/zero_replicated.json): no partitioning; the backbone is whole on every
  rank and only the prompt/head gradients are all-reduced.

Persistence: ZeRO-3 keeps every tensor of at most ``stage3_param_persistence_threshold`` elements
whole on every rank, frozen or not ("auto" = 10·h: biases and LayerNorms), plus the prompt and heads
(``ds_setup.keep_whole``). A persistent tensor also keeps its partition, so it counts whole + shard.

Per rank, in bytes, for micro batch ``b`` per rank, ``s`` tokens, prefix length ``P``, width ``h``,
``a`` heads, ``L`` layers, weight bytes ``w`` (2 for bf16), ``T`` trainable parameters:

- frozen weights: each sharded tensor ``n·w/W`` (flat), ``n·w·(1/W + 1/g)`` (node_local) or
  ``n·w`` (replicated); each persistent one ``n·w`` plus its shards;
- gathered working set (ZeRO-3 layouts): at the turn from forward to backward, the layers ZeRO-3
  keeps gathered for the backward (about ``stage3_max_live_parameters`` elements, or all of them
  when the model is smaller: ``kept_for_backward``) plus the layer in flight, or the largest tensor
  (the word embedding) when that is larger;
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
  is a slight upper bound. With activation checkpointing only each layer's input ``w·b·s·h`` is kept,
  plus one layer's activations while it is recomputed;
- plus a fixed ``overhead`` (CUDA context, allocator slack, communication buffers), 1.5 GiB by default.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from deepprompt.memory_backbone import Backbone, as_backbone, glm_backbone, load_backbone, module_backbone  # noqa: F401
from deepprompt.registry import Registry

GIB = 1024 ** 3
LAYOUTS: Registry = Registry("layout")


# ------------------------------------------------------------------------------ the backbone
# (its parameter shapes: ``memory_backbone.py``)

# ------------------------------------------------------------------------------ the workload

@dataclass(frozen=True)
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
    layout: str = "flat"
    """``flat``, ``node_local`` or ``replicated`` (``LAYOUTS``)."""
    ranks_per_node: int = 8
    """g: the node-local layout's shard group (and which collectives cross nodes)."""
    persistence_threshold: int | None = None
    """``stage3_param_persistence_threshold``; None = "auto" (10·h)."""
    trainable: int | None = None
    """T; None = a prefix on every layer + the head."""
    grad_accum: int = 1
    reuse_distance: float = 1e9
    """``stage3_max_reuse_distance`` (elements): a layer whose next use lies within it stays gathered."""
    max_live: float = 1e9
    """``stage3_max_live_parameters`` (elements): how far ZeRO-3's prefetcher keeps layers gathered
    from their forward into their backward (``kept_for_backward``)."""
    trainable_tensors: int = 3
    """Prompt and head tensors (prefix table, head weight and bias): one re-gather each per step."""
    grad_bytes: int | None = None
    """Bytes per reduced gradient element; None = ``weight_bytes`` (DeepSpeed reduces in the weights'
    dtype unless ``communication_data_type`` says otherwise)."""

    @property
    def nodes(self) -> int:
        return max(1, math.ceil(self.world / self.ranks_per_node))


def trainable_params(bb: Backbone, w: Workload) -> int:
    if w.trainable is not None:
        return w.trainable
    prefix = w.prompt_length * bb.layers * 2 * bb.kv  # P x layers x 2 x kv_heads x head_dim
    head = 0 if w.head == "cloze" else (bb.hidden + 1) * w.labels
    return prefix + head


def threshold(bb: Backbone, w: Workload) -> int:
    return 10 * bb.hidden if w.persistence_threshold is None else w.persistence_threshold


def split_by_persistence(bb: Backbone, w: Workload) -> tuple[int, int]:
    """(elements sharded, elements persistent) of the backbone."""
    limit = threshold(bb, w)
    persistent = sum(n for n in bb.tensors if n <= limit)
    return bb.numel - persistent, persistent


def activation_bytes_per_layer(cfg, w: Workload) -> float:
    b, s, p, wb = w.micro_batch, w.seq, w.prompt_length, w.weight_bytes
    h, a = _hidden_heads(cfg)
    kv = cfg.kv if isinstance(cfg, Backbone) else h  # keys/values of kv_heads x head_dim (GQA)
    zero3_linear = w.zero3_linear and layout_of(w).zero3  # no zero.Init without ZeRO-3: torch's linear
    tokens = wb * b * ((14 if zero3_linear else 7) * s * h + 2 * (s + p) * kv)
    # fused attention (scaled_dot_product_attention): the mask as the kernel's additive bias, shared
    # by the heads, its output and the fp32 log-sum-exp per head and query; no per-head scores
    attention = wb * b * s * (s + p) + wb * b * s * h + 4 * b * a * s
    masks = 2 * w.mask_bytes * b * s * h if w.dropout else 0
    return tokens + attention + masks + 16 * b * s


def activations(cfg, w: Workload) -> float:
    """Bytes kept for the backward over all layers (see the module docstring)."""
    bb = as_backbone(cfg)
    per_layer = activation_bytes_per_layer(bb, w)
    if not w.checkpointing:
        return bb.layers * per_layer
    return bb.layers * w.weight_bytes * w.micro_batch * w.seq * bb.hidden + per_layer


def largest_micro_batch(cfg, budget_bytes: float, limit: int = 1024, **workload) -> int:
    """The largest power-of-two micro batch whose estimate fits ``budget_bytes`` per rank (0: none)."""
    best, b = 0, 1
    while b <= limit and estimate(cfg, Workload(micro_batch=b, **workload))["total"] <= budget_bytes:
        best, b = b, 2 * b
    return best


def _hidden_heads(cfg) -> tuple[int, int]:
    if isinstance(cfg, Backbone):
        return cfg.hidden, cfg.heads
    return cfg.hidden_size, cfg.num_attention_heads


# ------------------------------------------------------------------------------ layouts

@dataclass(frozen=True)
class Transfer:
    """One collective of a training step, as one rank calls it."""

    what: str
    """``kind: description``; kinds: forward, backward, persistent, prompt, gradients."""
    op: str
    """``all_gather``, ``reduce_scatter`` or ``all_reduce``."""
    group: str
    """``world`` or ``node`` (the node-local shard group)."""
    payload: float
    """Bytes of the whole tensor(s) it gathers or reduces (what the collective's API is handed)."""
    per_step: int
    """Times per optimizer step."""
    calls: int = 1
    """Collectives per occurrence: one per module fetch (ZeRO-3 gathers a module's tensors in one
    call; its prefetch may merge neighbours, so this is at most), one per persistent tensor after
    the step. What the latency term of the step-time model counts."""

    @property
    def bytes_per_step(self) -> float:
        return self.payload * self.per_step


class Layout:
    """How the frozen backbone is spread over the ranks: what each rank stores and what each step moves."""

    zero3 = True
    describe = ""

    def shard_groups(self, w: Workload) -> tuple[int, ...]:
        """Sizes of the groups a sharded tensor is split over; each rank holds one part per group."""
        raise NotImplementedError

    def gather_group(self) -> str:
        """Where a frozen tensor is gathered from in the steady state."""
        return "world"

    def frozen_bytes(self, bb: Backbone, w: Workload) -> float:
        sharded, persistent = split_by_persistence(bb, w)
        share = sum(1 / n for n in self.shard_groups(w))
        return w.weight_bytes * (sharded * share + persistent * (1 + share))

    def transfers(self, bb: Backbone, w: Workload) -> list[Transfer]:
        """Collectives of one optimizer step in the steady state (from the second step on). After
        the step the stage-3 optimizer re-gathers every persistent tensor, one collective each, over
        its primary (all-rank) group (stage3.py ``_post_step`` -> partition_parameters.py
        ``_allgather_params_coalesced``), whatever the layout."""
        wb, t, ga = w.weight_bytes, trainable_params(bb, w), w.grad_accum
        limit = threshold(bb, w)
        sharded, persistent = split_by_persistence(bb, w)
        back, back_tensors = backward_regathered(bb, w)
        here = self.gather_group()
        return [
            Transfer("forward: all-gather of the sharded frozen weights", "all_gather", here, sharded * wb, ga,
                     sum(max(m) > limit for m in bb.modules)),
            Transfer("backward: re-gather of the layers released after the forward", "all_gather", here,
                     back * wb, ga, back_tensors),
            Transfer("persistent: re-gather of the small frozen tensors after the step", "all_gather", "world",
                     persistent * wb, 1, sum(n <= limit for n in bb.tensors)),
            Transfer("prompt: re-gather of the updated prompt and heads after the step", "all_gather", "world",
                     t * wb, 1, w.trainable_tensors),
            Transfer("gradients: reduce-scatter of the prompt/head gradients", "reduce_scatter", "world",
                     t * (w.grad_bytes or wb), ga),
        ]


def kept_for_backward(bb: Backbone, w: Workload) -> tuple[int, int]:
    """(elements the backward needs, elements of them still gathered from the forward).

    The backward needs every sharded layer tensor but layer 0's Q/K/V projections (their input, the
    embeddings, needs no gradient, so ZeRO-3 never fetches them for it) and no embedding. ZeRO-3
    keeps a tensor gathered from its forward into its backward when (partitioned_param_coordinator.py
    ``__params_to_release``) its next use lies within ``stage3_max_reuse_distance`` elements of the
    recorded module order (layer i from the top: about 2·i·layer_params later), or when the
    prefetcher has already walked past that use: it pops trace entries of gathered tensors without
    counting them (``fetch_sub_module``: only NOT_AVAILABLE ones fill the prefetch bucket) and marks
    each as used until that later step, and it prefetches while fewer than
    ``stage3_max_live_parameters`` elements are gathered. Measured (benchmarks/glm_scale.py,
    GLM-xlarge, both 1e9): the top ~1e9 elements stay gathered, the other 16 of 36 layers are gathered
    again; on a tiny BERT with the reuse distance 0, what stays follows the live limit."""
    limit = threshold(bb, w)
    layer = sum(n for n in bb.layer_tensors if n > limit)
    if not layer:
        return 0, 0
    needed = max(bb.layers * layer - bb.input_projection, 0)
    by_reuse = min(bb.layers, math.ceil(w.reuse_distance / (2 * bb.layer_numel))) * layer
    return needed, int(min(needed, max(by_reuse, w.max_live)))


def backward_regathered(bb: Backbone, w: Workload) -> tuple[int, int]:
    """(elements, module fetches) ZeRO-3 gathers again for the backward: what it needs and released
    after the forward (``kept_for_backward``). With activation checkpointing the recompute gathers
    every layer once more on top (measured on GLM-xlarge: 2.65B elements gathered in the backward of
    a 1.81B-element stack with 1e9 kept, where this gives 2.61B)."""
    needed, kept = kept_for_backward(bb, w)
    limit = threshold(bb, w)
    layer = sum(n for n in bb.layer_tensors if n > limit)
    fetches = sum(max(m) > limit for m in bb.layer_modules)
    numel = needed - kept + (needed if w.checkpointing else 0)
    return numel, round(numel / layer * fetches) if layer else 0


@LAYOUTS.register("flat")
class FlatZero3(Layout):
    describe = "flat ZeRO-3: frozen backbone sharded over all {world} ranks, gathered over all of them"

    def shard_groups(self, w: Workload) -> tuple[int, ...]:
        return (w.world,)


@LAYOUTS.register("node_local")
class NodeLocal(Layout):
    describe = ("node-local ZeRO-3 (hpZ): a 1/{world} primary shard and a 1/{g} secondary shard per rank; "
                "frozen weights gathered within the node")

    def shard_groups(self, w: Workload) -> tuple[int, ...]:
        return (w.world, min(w.ranks_per_node, w.world))

    def gather_group(self) -> str:
        return "node"


@LAYOUTS.register("replicated")
class Replicated(Layout):
    zero3 = False
    describe = "replicated: frozen backbone whole on each of the {world} ranks; only prompt/head gradients move"

    def shard_groups(self, w: Workload) -> tuple[int, ...]:
        return ()

    def frozen_bytes(self, bb: Backbone, w: Workload) -> float:
        return bb.numel * w.weight_bytes

    def transfers(self, bb: Backbone, w: Workload) -> list[Transfer]:
        t = trainable_params(bb, w)
        return [Transfer("gradients: all-reduce of the prompt/head gradients", "all_reduce", "world",
                         t * (w.grad_bytes or w.weight_bytes), 1)]


def layout_of(w: Workload) -> Layout:
    return LAYOUTS.get(w.layout, "layout")()


def layout_line(w: Workload) -> str:
    return layout_of(w).describe.format(world=w.world, g=min(w.ranks_per_node, w.world))


# ------------------------------------------------------------------------------ memory

def estimate(model, w: Workload) -> dict[str, float]:
    """Bytes per rank, by component (``total`` included). ``model``: a ``Backbone`` or a GLM config."""
    bb = as_backbone(model)
    layout = layout_of(w)
    t = trainable_params(bb, w)
    sharded_layer = sum(n for n in bb.layer_tensors if n > threshold(bb, w))
    kept = kept_for_backward(bb, w)[1]
    out = {
        "frozen_weights": 0.0 if w.offload_params else layout.frozen_bytes(bb, w),
        # at the turn from forward to backward: the layers kept gathered for the backward + the one in flight
        "gathered_working_set": max(kept + sharded_layer, 2 * sharded_layer, max(bb.tensors)) * w.weight_bytes
        if layout.zero3 else 0.0,
        "prompts_heads_and_grads": 2 * t * w.weight_bytes,
        "optimizer_state": optimizer_bytes(t, w),
        "activations": activations(bb, w),
        "overhead": w.overhead,
    }
    out["total"] = sum(out.values())
    return out


def optimizer_bytes(t: int, w: Workload) -> float:
    """Adam's two fp32 moments (8 T) and, in bf16, the fp32 master copy (4 T). ZeRO-3 shards them over
    every rank; so does DeepSpeed's bf16 optimizer under stage 0; an fp32 stage-0 run keeps torch's
    AdamW whole (the master is the parameter itself)."""
    bf16 = w.weight_bytes != 4
    sharded = layout_of(w).zero3 or bf16
    return t * (8 + (4 if bf16 else 0)) / (w.world if sharded else 1)


def table(cfg, name: str, worlds: list[int], **kw) -> str:
    bb = as_backbone(cfg)
    rows = {g: estimate(bb, Workload(world=g, **kw)) for g in worlds}
    keys = list(next(iter(rows.values())))
    lines = [f"{name}: {bb.numel / 1e9:.2f}B params | " + ", ".join(f"{k}={v}" for k, v in kw.items()),
             f"{'GiB per GPU':<26}" + "".join(f"{g:>9} GPU" for g in worlds)]
    for k in keys:
        lines.append(f"{k:<26}" + "".join(f"{rows[g][k] / GIB:>13.2f}" for g in worlds))
    return "\n".join(lines)


def add_workload_args(ap: argparse.ArgumentParser) -> None:
    """The flags ``memory`` and ``scaling`` share."""
    ap.add_argument("--model", default="glm-xxlarge", help="a GLM preset or GLM checkpoint directory")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--prompt-length", type=int, default=16)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--head", choices=["classification", "cloze", "token"], default="classification")
    ap.add_argument("--labels", type=int, default=2)
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--gpus-per-node", type=int, default=8, help="ranks per node: node_local's shard group")
    ap.add_argument("--threshold", type=int, default=None,
                    help="stage3_param_persistence_threshold (default: auto = 10·hidden)")
    ap.add_argument("--checkpointing", action="store_true", help="train.activation_checkpointing=true")


def workload_kwargs(args) -> dict:
    return dict(micro_batch=args.micro_batch, seq=args.seq, prompt_length=args.prompt_length,
                weight_bytes=2 if args.dtype == "bf16" else 4, dropout=not args.no_dropout, labels=args.labels,
                head=args.head, ranks_per_node=args.gpus_per_node, persistence_threshold=args.threshold,
                checkpointing=args.checkpointing)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="deepprompt memory", description=__doc__.split("\n\n")[0])
    add_workload_args(ap)
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 16, 64])
    ap.add_argument("--layout", choices=LAYOUTS.names(), default="flat")
    ap.add_argument("--offload", action="store_true", help="ds_configs/zero3_offload.json: weights' shards in CPU memory")
    args = ap.parse_args(argv)
    print(table(load_backbone(args.model), args.model, args.gpus, layout=args.layout, offload_params=args.offload,
                **workload_kwargs(args)))
