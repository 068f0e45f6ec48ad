"""Sharding layouts: which one a resolved DeepSpeed JSON gives (flat ZeRO-3, node-local hpZ,
replicated), what each rank really holds of the frozen backbone, and the start-up report of both
against the calculator (deepprompt/memory.py, docs/scaling.md)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from deepprompt.config import RunConfig
from deepprompt.engine import comm, world as world_info
from deepprompt.errors import ConfigError

log = logging.getLogger("deepprompt")


def _auto(value) -> bool:
    return value == "auto"


# DeepSpeed 0.19.8 refuses these itself, but only once the model is built (runtime/config.py
# _REMOVED_ZERO_CONFIG_KEYS: "MiCS ZeRO-3 sharding has been removed"); say it before anything loads
_REMOVED = {"mics_shard_size": "ds_configs/zero3_node_local.json (hpZ, zero_hpz_partition_size) shards "
                               "within the node instead",
            "mics_hierarchical_params_gather": "ds_configs/zero3_node_local.json shards within the node instead"}


def resolve_layout(zero: dict, world: int, ranks_per_node: int, src: str) -> None:
    """``zero_hpz_partition_size: "auto"`` = the ranks of one node: ZeRO++'s hpZ then keeps a second,
    node-local shard of every frozen tensor and gathers from it (ds_configs/zero3_node_local.json).
    On one node that shard would only duplicate the primary one, so "auto" is 1 there (flat ZeRO-3)."""
    for key, instead in _REMOVED.items():
        if key in zero:
            raise ConfigError(f"{src}: zero_optimization.{key}: MiCS was removed from DeepSpeed 0.19 "
                              f"(https://github.com/deepspeedai/DeepSpeed/issues/8489); {instead}")
    if _auto(zero.get("zero_hpz_partition_size")):
        zero["zero_hpz_partition_size"] = ranks_per_node if ranks_per_node < world else 1
    size = zero.get("zero_hpz_partition_size", 1)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"{src}: zero_optimization.zero_hpz_partition_size: expected a positive integer or \"auto\", "
                          f"got {size!r}")
    if size > 1 and (world % size or size > world):
        raise ConfigError(f"{src}: zero_hpz_partition_size {size} does not divide the world size {world}")


def layout_name(ds: dict) -> str:
    """Which ``deepprompt.memory`` layout a resolved DeepSpeed JSON gives."""
    zero = ds.get("zero_optimization", {})
    if zero.get("stage", 0) != 3:
        return "replicated"
    return "node_local" if zero.get("zero_hpz_partition_size", 1) > 1 else "flat"


@dataclass(frozen=True)
class Held:
    """Elements of the frozen backbone one rank stores: ``shard`` in ZeRO-3 partitions (its primary
    partition ``ds_tensor``, plus hpZ's node-local secondary partition), ``whole`` in tensors it keeps
    whole (ZeRO-3's persistent parameters, or every tensor when the backbone is not partitioned).
    A persistent parameter counts twice on purpose: DeepSpeed keeps its partition next to the
    gathered tensor."""

    shard: int
    whole: int

    @property
    def total(self) -> int:
        return self.shard + self.whole


def frozen_held(backbone: nn.Module) -> Held:
    """What THIS rank holds of the backbone's frozen parameters (the prompt and heads are not the
    backbone, so never count), read from ZeRO-3's flags rather than from what happens to be gathered
    right now: a persistent parameter is whole from its first forward on."""
    shard = whole = 0
    for p in backbone.parameters():
        if p.requires_grad:
            continue
        if not hasattr(p, "ds_id"):
            whole += p.numel()
            continue
        shard += p.ds_tensor.numel()
        if getattr(p, "ds_zero_param_process_group", None) is not None:
            # hpZ: the secondary partition over the node's ranks (DeepSpeed sizes it like this in all_gather)
            shard += p.ds_tensor.ds_numel * p.ds_secondary_tensor_num_of_groups
        whole += p.ds_numel if p.ds_persist else 0
    return Held(shard, whole)


def frozen_held_per_rank(backbone: nn.Module) -> list[Held]:
    """``frozen_held`` of every rank, indexed by rank (collective)."""
    return comm.all_gather_object(frozen_held(backbone))


def ranks_per_node(world: int) -> int | None:
    """Ranks on each node (collective): the launcher's LOCAL_SIZE (``rank_env`` exports it for every
    launcher); None when nodes run different numbers of ranks (then nothing can shard node by node)."""
    import os

    sizes = set(comm.all_gather_object(int(os.environ.get("LOCAL_SIZE", world))))
    return sizes.pop() if len(sizes) == 1 else None


def check_shard_groups(ds: dict, src: str) -> None:
    """hpZ groups consecutive ranks (deepspeed utils/groups.py ``_create_zero_param_parallel_group``:
    ranks [k·g, (k+1)·g)); they are nodes only when the launcher numbers ranks node by node (DeepSpeed,
    torchrun, SLURM's default block distribution). Stop when a group would span hosts."""
    if layout_name(ds) != "node_local":
        return
    g = ds["zero_optimization"]["zero_hpz_partition_size"]
    hosts = [p.host for p in world_info.peers() or []]
    for start in range(0, len(hosts), g):
        block = hosts[start:start + g]
        if len(set(block)) > 1:
            raise ConfigError(f"{src}: zero_hpz_partition_size {g}: ranks {start}-{start + g - 1} run on "
                              f"{', '.join(sorted(set(block)))}, not on one node; number ranks node by node "
                              f"(e.g. srun --distribution=block) so each shard group is a node")


def shard_group(backbone: nn.Module) -> list[int] | None:
    """The ranks this rank's hpZ secondary shards are gathered within (None without hpZ)."""
    group = next((getattr(p, "ds_zero_param_process_group", None) for p in backbone.parameters()), None)
    if group is None:
        return None
    return list(torch.distributed.get_process_group_ranks(group))


def workload(run: RunConfig, built, tasks: list, world: int, per_node: int):
    """The calculator's ``Workload`` for this run (deepprompt.memory)."""
    from deepprompt import memory

    ds, zero = built.ds_config, built.ds_config.get("zero_optimization", {})
    prompt = built.model.prompt
    longest = max(t.cfg.max_seq_length for t in tasks)
    at_input = prompt.puts_prompt_at_input
    wb = {"bf16": 2, "fp16": 2}.get(built.precision, 4)
    threshold = zero.get("stage3_param_persistence_threshold")
    return memory.Workload(
        world=world, micro_batch=ds["train_micro_batch_size_per_gpu"], seq=longest + (run.prompt.length if at_input else 0),
        prompt_length=0 if at_input or not prompt.freezes_backbone else run.prompt.length, weight_bytes=wb,
        mask_bytes=wb if comm.on_cpu() else 1, layout=layout_name(ds), ranks_per_node=per_node,
        persistence_threshold=threshold if isinstance(threshold, int) else None,
        trainable=built.trainable_params, checkpointing=run.train.activation_checkpointing,
        grad_accum=ds["gradient_accumulation_steps"], reuse_distance=zero.get("stage3_max_reuse_distance", 1e9),
        max_live=zero.get("stage3_max_live_parameters", 1e9),
        grad_bytes={"fp32": 4, "bf16": 2, "fp16": 2}.get(ds.get("communication_data_type"), wb),
        offload_params=zero.get("offload_param", {}).get("device", "none") not in ("none", None))


def log_layout(run: RunConfig, built, tasks: list) -> list[int]:
    """Rank 0 logs which layout the DeepSpeed JSON gives, what each rank really holds of the frozen
    backbone, and what the calculator predicts per rank; it warns when flat ZeRO-3 spans nodes for a
    backbone one node could hold. Every rank logs its own shard group (its log file). Returns each
    rank's frozen elements held (results.json ``frozen_numel_per_rank``)."""
    from deepprompt import memory

    world = comm.world_size()
    per_node = ranks_per_node(world) or world
    held = frozen_held_per_rank(built.model.backbone)
    frozen = built.total_params - built.trainable_params
    w = workload(run, built, tasks, world, per_node)
    spec = built.adapter.spec()
    bb = memory.module_backbone(built.model.backbone, spec.hidden, spec.num_layers, spec.num_heads, run.model.path,
                                spec.kv_width)
    log.info("layout: %s | %d node(s) x %d rank(s)", memory.layout_line(w), w.nodes, min(per_node, world))
    group = shard_group(built.model.backbone)
    if group is not None:
        log.info("rank %d: frozen weights gathered within shard group ranks %s", comm.rank(), group)
    log.info("frozen weights held per rank (shard + whole): %s (of %s; whole: tensors of at most %s elements, "
             "kept on every rank)", ", ".join(f"{h.shard:,} + {h.whole:,}" for h in held), f"{frozen:,}",
             f"{w.persistence_threshold:,}" if w.persistence_threshold is not None else "all")
    if not built.model.prompt.freezes_backbone:
        return [h.total for h in held]
    est = memory.estimate(bb, w)
    log.info("calculator per rank (docs/memory.md): frozen weights %s (held: %s), activations %s, total %s "
             "(with %s of fixed overhead)", _size(est["frozen_weights"]), _size(held[comm.rank()].total * w.weight_bytes),
             _size(est["activations"]), _size(est["total"]), _size(est["overhead"]))
    _warn_if_flat_spans_nodes(bb, w, comm.device_memory_bytes(per_node))
    return [h.total for h in held]


def _warn_if_flat_spans_nodes(bb, w, device_bytes: int) -> None:
    """Flat ZeRO-3 across nodes all-gathers the whole frozen backbone over the inter-node network in
    every forward (and backward); when one node could hold it, say which layout keeps that traffic home."""
    from dataclasses import replace

    from deepprompt import memory

    if w.layout != "flat" or w.nodes < 2:
        return
    options = {name: memory.estimate(bb, replace(w, layout=name))["total"] for name in ("node_local", "replicated")}
    fits = {name: total for name, total in options.items() if total <= device_bytes}
    if not fits:
        return
    moved = sum(t.bytes_per_step for t in memory.layout_of(w).transfers(bb, w) if t.op == "all_gather")
    log.warning("flat ZeRO-3 spans %d nodes: every step all-gathers %s of frozen weights per rank across the "
                "inter-node network, yet %s; see docs/scaling.md", w.nodes, _size(moved), " and ".join(
                    f"{_LAYOUT_FILES[name]} would need {_size(total)} per rank of {_size(device_bytes)}"
                    for name, total in fits.items()))


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


_LAYOUT_FILES = {"node_local": "ds_configs/zero3_node_local.json (gathers within the node)",
                 "replicated": "ds_configs/zero_replicated.json (no backbone traffic)"}
