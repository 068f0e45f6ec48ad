"""Everything DeepSpeed: the DeepSpeed JSON ("auto" filling and checks), building
the backbone partitioned under ZeRO-3, and handing DeepSpeed ONLY the trainable parameters.

The DeepSpeed JSON owns ZeRO, precision and micro-batching; the run config owns the rest. "auto"
in the JSON is filled from the run config, and every batch number is checked against the world size.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepprompt import schedules
from deepprompt.config import RunConfig, TrainConfig
from deepprompt.engine import comm, layout
from deepprompt.errors import ConfigError
from deepprompt.fileio import load_json, read_text
from deepprompt.models.assembly import assemble, head_specs
from deepprompt.models.backbones import BackboneAdapter
from deepprompt.models.loading import Backbone
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.tasks import Task

log = logging.getLogger("deepprompt")


# ------------------------------------------------------------------------------ DeepSpeed JSON

def read_ds_config(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--ds_config: file not found: {p}")
    data = load_json(read_text(p, ConfigError), p, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a JSON object")
    check_ds_keys(data, str(p))
    return data


READ_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
             "communication_data_type", "steps_per_print", "bf16", "fp16", "zero_optimization")
"""The DeepSpeed JSON's keys this package reads or fills."""
SECTIONS = ("bf16", "fp16", "zero_optimization")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_ds_keys(ds: dict, src: str) -> None:
    """What DeepSpeed would ignore or read differently than this package, refused in one line: a
    near miss of a key read here (DeepSpeed ignores a top-level key it does not know, so
    ``zero_optimisation`` would silently train without ZeRO), ``bfloat16`` (DeepSpeed's old name,
    which it ignores once ``bf16`` is set, as it is here), a section that is not an object, and
    values this package decides by: ``stage``, ``enabled``, ``gradient_clipping``."""
    from deepspeed.runtime import constants

    known = set(READ_KEYS) | {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)}
    for key in ds:
        close = difflib.get_close_matches(key, READ_KEYS, n=1, cutoff=0.75)
        if key not in known and close and not key.startswith("_"):
            raise ConfigError(f"{src}: {key}: not a DeepSpeed key, DeepSpeed would ignore it (did you mean {close[0]}?)")
    if "bfloat16" in ds:
        raise ConfigError(f"{src}: bfloat16: write it as bf16 (DeepSpeed ignores bfloat16 when bf16 is set, and "
                          f"deepprompt always sets it)")
    for key in SECTIONS:
        if key in ds and not isinstance(ds[key], dict):
            raise ConfigError(f"{src}: {key}: expected an object, got {ds[key]!r:.60}")
    for key in ("bf16", "fp16"):
        enabled = ds.get(key, {}).get("enabled", False)
        if not isinstance(enabled, bool) and not _auto(enabled):
            raise ConfigError(f"{src}: {key}.enabled: expected true, false or \"auto\", got {enabled!r}")
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3) or not isinstance(stage, int) or isinstance(stage, bool):
        raise ConfigError(f"{src}: zero_optimization.stage: expected 0, 1, 2 or 3, got {stage!r}")
    clip = ds.get("gradient_clipping", "auto")
    if not _auto(clip) and not (_number(clip) and clip >= 0):
        raise ConfigError(f"{src}: gradient_clipping: expected a number >= 0 or \"auto\", got {clip!r}")


def check_zero_section(zero: dict, src: str) -> None:
    """The resolved ``zero_optimization`` checked by DeepSpeed's own model of it (its types, and no
    key it does not know), here in one line instead of a pydantic dump once the model is built."""
    import pydantic
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    try:
        DeepSpeedZeroConfig(**zero)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{src}: zero_optimization.{where}: {err['msg'].lower()}, got {err.get('input')!r:.60}") from None


def _auto(value) -> bool:
    return value == "auto"


def _resolve_precision(ds: dict, src: str) -> str:
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    bf16_ok = acc.device_name() != "cpu" and acc.is_bf16_supported()
    bf16 = ds.setdefault("bf16", {"enabled": False})
    fp16 = ds.setdefault("fp16", {"enabled": False})
    if _auto(bf16.get("enabled")):
        bf16["enabled"] = bool(bf16_ok) and fp16.get("enabled") is not True
    if _auto(fp16.get("enabled")):
        fp16["enabled"] = False
    if bf16["enabled"] and fp16["enabled"]:
        raise ConfigError(f"{src}: bf16.enabled and fp16.enabled are both true; pick one")
    return "bf16" if bf16["enabled"] else "fp16" if fp16["enabled"] else "fp32"


def resolve_ds_config(ds: dict, run: RunConfig, world_size: int, hidden: int, src: str = "ds_config",
                      ranks_per_node: int | None = None) -> dict:
    """Fill "auto" from the run config and check the batch arithmetic against ``world_size``;
    ``ranks_per_node`` (default: all ranks on one node) fills ``zero_hpz_partition_size: "auto"``."""
    ds = copy.deepcopy(ds)
    for owned in ("optimizer", "scheduler"):
        if owned in ds:
            raise ConfigError(f"{src}: remove {owned!r}; the run config owns it (train.lr, train.lr_scheduler, "
                              f"train.warmup_ratio, train.weight_decay)")
    tr = run.train
    tb, tb_given = _batch_value(ds, "train_batch_size", tr, "batch_size", src)
    mb, _ = _batch_value(ds, "train_micro_batch_size_per_gpu", tr, "micro_batch_size", src)
    ga = ds.get("gradient_accumulation_steps", "auto")
    if not _auto(ga) and not tb_given and isinstance(ga, int) and ga > 0:
        tb = mb * ga * world_size  # the JSON's accumulation with nobody's global batch: DeepSpeed's own rule
    if _auto(ga):
        if tb % (mb * world_size):
            raise ConfigError(
                f"{src}: batch sizes do not multiply out: train_batch_size {tb} is not divisible by "
                f"micro batch {mb} x world size {world_size} = {mb * world_size} "
                f"(set train.batch_size / train.micro_batch_size so that it is)")
        ga = tb // (mb * world_size)
    if not isinstance(ga, int) or isinstance(ga, bool) or ga <= 0:
        raise ConfigError(f"{src}: gradient_accumulation_steps must be a positive integer or \"auto\", got {ga!r}")
    if tb != mb * ga * world_size:
        raise ConfigError(
            f"{src}: batch sizes do not multiply out: train_batch_size {tb} != micro batch {mb} x "
            f"gradient_accumulation_steps {ga} x world size {world_size} = {mb * ga * world_size}"
            + (" (train_batch_size is train.batch_size of the run config)"
               if _auto(ds.get("train_batch_size", "auto")) else ""))
    ds.update(train_batch_size=tb, train_micro_batch_size_per_gpu=mb, gradient_accumulation_steps=ga)
    if _auto(ds.get("gradient_clipping", "auto")):
        ds["gradient_clipping"] = run.train.max_grad_norm
    ds.setdefault("steps_per_print", 1 << 30)  # our own logging says what matters
    ds["_precision"] = _resolve_precision(ds, src)
    # Unset, DeepSpeed reduces gradients in the training dtype (bf16: 8 mantissa bits, summed over
    # every rank). The trainable gradients are a few MB: reduce them in fp32 unless told otherwise.
    if _auto(ds.get("communication_data_type", "auto")):
        ds["communication_data_type"] = "fp32"
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    for key, value in (("reduce_bucket_size", hidden * hidden),
                       ("stage3_prefetch_bucket_size", int(0.9 * hidden * hidden))):
        if _auto(zero.get(key)):
            zero[key] = value
    layout.resolve_layout(zero, world_size, ranks_per_node or world_size, src)
    if zero.get("stage", 0) == 3:
        fill_persistence_threshold(ds, hidden)
    check_zero_section(zero, src)
    return ds


def resolve_for_world(ds_raw: dict, run: RunConfig, hidden: int, src: str = "ds_config") -> dict:
    """Collective: ``resolve_ds_config`` for this world (its size and ranks per node), with the
    shard groups checked: the DeepSpeed JSON as the engine gets it (the one resolution of a run)."""
    world = comm.world_size()
    per_node = layout.ranks_per_node(world)
    if per_node is None and _auto(ds_raw.get("zero_optimization", {}).get("zero_hpz_partition_size")):
        raise ConfigError(f"{src}: zero_hpz_partition_size \"auto\" shards within each node, but the nodes run "
                          f"different numbers of ranks (LOCAL_SIZE differs); give every node the same slots")
    ds = resolve_ds_config(ds_raw, run, world, hidden, src, per_node)
    layout.check_shard_groups(ds, src)
    return ds


def _batch_value(ds: dict, key: str, train: TrainConfig, field: str, src: str) -> tuple[int, bool]:
    """The value of a batch key of the DeepSpeed JSON and whether anyone set it. "auto" (or absent)
    is the run config's ``train.<field>``. A number in the JSON wins over the run config's DEFAULT
    (the JSON owns micro-batching), must equal a value the run config sets, and is refused otherwise."""
    raw, ours = ds.get(key, "auto"), getattr(train, field)
    ours_set = ours != getattr(TrainConfig(), field)
    if _auto(raw):
        return ours, ours_set
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise ConfigError(f"{src}: {key} must be a positive integer or \"auto\", got {raw!r}")
    if ours_set and raw != ours:
        raise ConfigError(f"{src}: {key} {raw} disagrees with train.{field} {ours} of the run config; set it in "
                          f"one place (\"auto\" in the JSON takes the run config's)")
    return raw, True


def record_batch(run: RunConfig, ds: dict) -> None:
    """Make ``run`` say the batch sizes that run (a JSON number over a run-config default), so
    run_config.json and the checkpoint signature record them."""
    for field, key in (("batch_size", "train_batch_size"), ("micro_batch_size", "train_micro_batch_size_per_gpu")):
        if getattr(run.train, field) != ds[key]:
            log.info("train.%s: %d, from the DeepSpeed JSON's %s (the run config left it at its default %d)",
                     field, ds[key], key, getattr(run.train, field))
            setattr(run.train, field, ds[key])


def persistence_threshold(hidden: int) -> int:
    """The "auto" ``stage3_param_persistence_threshold``: 10·h elements. DeepSpeed keeps EVERY
    parameter at or below it whole on every rank, frozen or not (deepspeed 0.19.8
    runtime/zero/parameter_offload.py, ``mark_persistent_parameters``: ``if param.ds_numel <=
    param_threshold: param.ds_persist = True``), so it must stay below the backbone's smallest weight
    matrix (h² and up): biases and LayerNorms (h .. 4h) stay whole, every matrix is sharded. It no
    longer depends on the prompt: a reparameterised prefix (an r x L·2·h matrix) or a long one
    (P x L·2·h) used to lift it above every layer weight and replicate the whole backbone on every
    rank. Prompts and heads are kept whole by ``keep_whole`` instead, whatever their size."""
    return 10 * hidden


def fill_persistence_threshold(ds: dict, hidden: int) -> None:
    zero = ds.get("zero_optimization", {})
    if _auto(zero.get("stage3_param_persistence_threshold")):
        zero["stage3_param_persistence_threshold"] = persistence_threshold(hidden)


def keep_whole(engine, module: nn.Module) -> int:
    """Keep every parameter of ``module`` (the prompt and the heads) whole on every rank under ZeRO-3,
    without touching the backbone's persistence; returns how many parameters it marked.

    DeepSpeed 0.19.8 has no per-parameter or per-module persistence switch: persistence is decided
    once, by size alone, in ``mark_persistent_parameters`` (parameter_offload.py) when
    ``deepspeed.initialize`` builds the stage-3 optimizer; ``set_z3_leaf_modules`` and
    ``stage3_module_granularity_threshold`` only change how modules are fetched, not whether their
    parameters are released. So, before the first forward, this sets the same ``ds_persist`` flag on
    these parameters and adds them to the optimizer's ``persistent_parameters`` list (the one
    ``parameter_offload`` built; stage3.py ``_post_step`` re-gathers that list after every step, so
    the updated prompt is whole again for the next forward). The coordinator reads ``ds_persist``
    each time it releases a module (partitioned_param_coordinator.py ``__params_to_release``), so the
    flag set here is the flag it honours."""
    persistent = getattr(engine.optimizer, "persistent_parameters", None)
    if persistent is None:  # not ZeRO-3: every parameter is whole already
        return 0
    marked = 0
    for p in module.parameters():
        if not p.ds_persist:
            p.ds_persist = True
            persistent.append(p)
            marked += 1
    return marked


def public(ds: dict) -> dict:
    return {k: v for k, v in ds.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------ model

@dataclass
class Built:
    engine: object  # deepspeed.DeepSpeedEngine
    model: PromptedModel
    adapter: BackboneAdapter
    ds_config: dict
    precision: str
    total_params: int
    trainable_params: int


def count_params(module: nn.Module) -> tuple[int, int]:
    """(total, trainable); reads ZeRO-3's full sizes (ds_numel), not the local shards."""
    total = trainable = 0
    for p in module.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def build(run: RunConfig, ds: dict, tasks: list[Task], backbone: Backbone, init=None) -> Built:
    """The engine from the RESOLVED DeepSpeed JSON (``resolve_for_world``) and backbone. ``init(model)``,
    if given, sets the prompt/head values (fp32, before the cast and before DeepSpeed partitions them
    or makes its master copy), e.g. from an artifact (prompt.init_from)."""
    import deepspeed

    precision = ds["_precision"]
    zero3 = ds.get("zero_optimization", {}).get("stage", 0) == 3
    # the backbone: under ZeRO-3, no rank ever holds the full weights
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    module = backbone.family.load_model(backbone.path, dtype, public(ds) if zero3 else None)
    adapter = backbone.family(module)
    torch.manual_seed(run.train.seed)  # prompt and heads start identical on every rank
    model = assemble(module, adapter, run.prompt, head_specs(tasks))
    prompt = model.prompt
    if run.train.activation_checkpointing:
        if zero3 and prompt.freezes_backbone:
            check_zero3_recompute_of_frozen_params()
        adapter.enable_checkpointing()
    if init is not None:
        init(model)
    # created in fp32 (from the seed or init), then cast like the backbone: ZeRO-3 keeps the fp32 master copy
    prompt.to(dtype)
    model.heads.to(dtype)

    optimizer = torch.optim.AdamW(param_groups(model, run.train.lr), lr=run.train.lr,
                                  weight_decay=run.train.weight_decay)
    tr = run.train  # max_steps resolved (train.epochs: by the trainer, from the data)
    scheduler = schedules.build(optimizer, tr.lr_scheduler, tr.lr, tr.warmup_ratio, tr.max_steps, tr.lr_scheduler_kwargs)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=public(ds))
    keep_whole(engine, nn.ModuleList([prompt, model.heads]))
    total, n_trainable = count_params(model)
    return Built(engine=engine, model=model, adapter=adapter, ds_config=ds, precision=precision,
                 total_params=total, trainable_params=n_trainable)


def param_groups(model: nn.Module, lr: float) -> list[dict]:
    """The optimizer's groups: every trainable parameter at ``lr`` (the first group, in model order),
    then one group per other rate the prompt method asks for (``PromptMethod.lr_scales``). The
    schedule (a LambdaLR) scales each group's own rate. A run whose prompt asks for none has one group."""
    scaled: dict[float, list[nn.Parameter]] = {}
    for factor, params in model.prompt.lr_scales():
        if factor != 1.0:
            scaled.setdefault(factor, []).extend(p for p in params if p.requires_grad)
    apart = {id(p) for params in scaled.values() for p in params}
    groups = [{"params": [p for p in model.parameters() if p.requires_grad and id(p) not in apart]}]
    groups += [{"params": params, "lr": lr * factor} for factor, params in scaled.items() if params]
    return groups


def check_zero3_recompute_of_frozen_params() -> None:
    """Non-reentrant checkpointing + frozen weights under ZeRO-3 crashed in the backward before
    DeepSpeed PR #8148 (transformers#47254): the recompute re-fires ZeRO-3's forward hooks, whose
    release re-partitions a frozen weight in place (``param.data = empty(0)``) while torch's
    checkpoint still holds it, undetached because it needs no grad -> ``CheckpointError: ...
    saved {'shape': [n]} vs recomputed {'shape': [0]}``. The fix attributes a frozen weight
    gathered during a recompute to the module being back-propagated
    (``partitioned_param_coordinator.update_recompute_parameters``), so it stays gathered until
    that module's backward ends. Refuse, in one line, a DeepSpeed without it."""
    import deepspeed
    from deepspeed.runtime.zero import partitioned_param_coordinator as coordinator

    if not hasattr(coordinator, "update_recompute_parameters"):
        raise ConfigError(
            f"train.activation_checkpointing: deepspeed {deepspeed.__version__} crashes in the backward when "
            f"checkpointed layers hold frozen ZeRO-3 weights (DeepSpeed PR #8148 fixes it; 0.19.8 has it); "
            f"upgrade deepspeed or set train.activation_checkpointing=false")


def inner_optimizer(engine):
    """The torch optimizer DeepSpeed wraps (its ``state`` holds the Adam moments)."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


def master_partitions(engine) -> list[torch.Tensor]:
    """The fp32 tensors the optimizer updates on this rank: ZeRO-3's flat partitions, ZeRO-1/2's
    fp32 groups, or (no ZeRO) the parameters themselves."""
    opt = engine.optimizer
    return (getattr(opt, "fp32_partitioned_groups_flat", None)
            or getattr(opt, "single_partition_of_fp32_groups", None)
            or [p for g in inner_optimizer(engine).param_groups for p in g["params"]])


def optimizer_state_numel(engine) -> dict[str, int]:
    """Elements of fp32 master weights and of optimizer moments, each summed over ALL ranks, read
    from the optimizer itself (not from a formula). With fp32 training ZeRO-3's master partition is
    the trainable shard itself (no extra copy in memory); with bf16/fp16 it is a separate fp32 copy."""
    moments = sum(t.numel() for st in inner_optimizer(engine).state.values() for t in st.values()
                  if torch.is_tensor(t) and t.dim() > 0)
    master, moments = comm.all_reduce_ints([sum(m.numel() for m in master_partitions(engine)), moments])
    return {"master": master, "moments": moments, "total": master + moments}


def frozen_fingerprint(model: nn.Module) -> dict:
    """SHA-256 over this rank's shard of every frozen parameter (ZeRO-3: ``ds_tensor``), gathered to
    every rank: comparing two fingerprints proves the frozen backbone is bit-identical without ever
    materialising the full weights."""
    h, numel = hashlib.sha256(), 0
    for name, p in model.named_parameters():
        if p.requires_grad:
            continue
        t = getattr(p, "ds_tensor", p).detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
        numel += getattr(p, "ds_numel", p.numel())
    return {"numel": numel, "rank_sha256": comm.all_gather_object(h.hexdigest())}
