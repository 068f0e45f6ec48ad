"""Reading GLM weights one tensor at a time and building the model (partitioned under ZeRO-3).

Sources (``open_source``), each a ``name -> full tensor`` lookup that reads lazily:
- the ORIGINAL layout: ``mp_rank_00_model_states.pt`` (weights under ``['module']``), or several
  model-parallel files ``mp_rank_00..0k`` merged per tensor (``merge_model_parallel``); a
  ``latest_checkpointed_iteration.txt`` / ``latest`` file may point to the iteration sub-directory;
- the hub layout: the same keys under ``glm.`` in ``model.safetensors``, ``pytorch_model.bin`` or
  their sharded ``*.index.json`` form;
- no weight files: a seeded random init (presets, benchmarks).

``.pt``/``.bin`` files are opened with ``torch.load(mmap=True, weights_only=True)``: nothing is read
until a tensor is touched, and the maps are dropped after every layer. Under ZeRO-3 the model is
built inside ``deepspeed.zero.Init`` and every rank copies only ITS slice of each tensor into its
partition, so no rank holds more than its shard plus one full tensor (and one layer's file pages).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from deepprompt.errors import ConfigError
from deepprompt.fileio import load_json, open_safetensors, read_text
from deepprompt.models.glm.config import GLMConfig
from deepprompt.models.glm.model import GLMModel

log = logging.getLogger("deepprompt")

MP_FILE = "mp_rank_{:02d}_model_states.pt"
HUB_PREFIX = "glm."

# model-parallel layout of the original (Megatron) code, by parameter name suffix
_QKV = re.compile(r"attention\.query_key_value\.(weight|bias)$")  # [Q_r; K_r; V_r] per rank: stride 3
_ROWS = re.compile(r"(mlp\.dense_h_to_4h\.(weight|bias)|word_embeddings\.weight)$")  # output features split
_COLS = re.compile(r"(attention\.dense|mlp\.dense_4h_to_h)\.weight$")  # input features split


def merge_model_parallel(name: str, parts: list[torch.Tensor]) -> torch.Tensor:
    """One full tensor from its k model-parallel slices."""
    if len(parts) == 1:
        return parts[0]
    if _QKV.search(name):
        return torch.cat([p.unflatten(0, (3, -1)) for p in parts], dim=1).flatten(0, 1)
    if _ROWS.search(name):
        return torch.cat(parts, dim=0)
    if _COLS.search(name):
        return torch.cat(parts, dim=1)
    return parts[0]  # biases of the column-split layers, LayerNorms, positions: copied whole


def split_model_parallel(name: str, tensor: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The inverse of ``merge_model_parallel`` (writes test checkpoints in the original mp layout)."""
    if _QKV.search(name):
        return [c.flatten(0, 1).clone() for c in tensor.unflatten(0, (3, -1)).chunk(k, dim=1)]
    if _ROWS.search(name):
        return [c.clone() for c in tensor.chunk(k, dim=0)]
    if _COLS.search(name):
        return [c.clone() for c in tensor.chunk(k, dim=1)]
    return [tensor.clone() for _ in range(k)]


def _torch_load(path: Path, trust_pickle: bool) -> dict:
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=not trust_pickle)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise _unreadable(path, e) from None
        log.warning("%s: legacy (non-zip) format, loaded whole into memory", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
        except Exception as e2:
            raise _unreadable(path, e2) from None
    except Exception as e:
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: Exception) -> Exception:
    """One line for a file torch cannot load: pickled objects we may not trust, or a truncated or
    corrupt file (torch says "failed finding central directory", "unexpected EOF" ...)."""
    if "weights_only" in str(e) or "Unsupported global" in str(e):
        return ConfigError(f"{path}: holds pickled objects besides tensors; set \"trust_pickle\": true in "
                           f"glm_config.json if you trust this file")
    if isinstance(e, (RuntimeError, EOFError, OSError, ValueError)) or type(e).__name__ == "UnpicklingError":
        reason = (str(e).strip().split(". ")[0].splitlines() or [type(e).__name__])[0][:160]
        return ConfigError(f"{path}: not a readable torch checkpoint ({reason}); it is truncated or corrupt: copy "
                           f"or download it again")
    return e


class Source:
    """A ``name -> full tensor`` lookup over one checkpoint; names are GLMModel's parameter names.
    ``release()`` drops open memory maps: the pages read so far leave this process's RSS (the next
    ``get`` maps the file again, which costs only re-reading its small index)."""

    def __init__(self, get, names, where: str, release=lambda: None):
        self._get, self.names, self.where, self.release = get, set(names), where, release

    def get(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise ConfigError(f"{self.where}: no tensor {name!r} (a GLM checkpoint of another shape?)")
        return self._get(name)


def _original_source(files: list[Path], trust: bool) -> Source:
    states: list[dict] = []

    def opened() -> list[dict]:
        if not states:
            for f in files:
                data = _torch_load(f, trust)
                states.append(data["module"] if isinstance(data, dict) and "module" in data else data)
        return states
    names = list(opened()[0].keys())
    return Source(lambda n: merge_model_parallel(n, [s[n] for s in opened()]), names, str(files[0].parent),
                  release=states.clear)


def _weight_map(index: Path) -> dict[str, str]:
    """A sharded checkpoint's ``*.index.json``: tensor name -> shard file (one line if it is not one)."""
    data = load_json(read_text(index, ConfigError), index, ConfigError)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ConfigError(f"{index}: no \"weight_map\" object of tensor name -> shard file (not a sharded "
                          f"checkpoint's index)")
    return weight_map


def _hub_source(directory: Path) -> Source | None:
    index = sorted(directory.glob("*.index.json"))
    shards = sorted({directory / f for f in _weight_map(index[0]).values()}) if index else \
        [p for p in (directory / "model.safetensors", directory / "pytorch_model.bin") if p.is_file()][:1]
    if not shards:
        return None
    handles: dict[Path, object] = {}

    def handle(shard: Path):
        if shard not in handles:
            if shard.suffix == ".safetensors":  # a truncated shard: one line naming it
                handles[shard] = open_safetensors(shard, ConfigError)
            else:
                handles[shard] = _torch_load(shard, False)
        return handles[shard]
    where = {key: shard for shard in shards for key in handle(shard).keys()}
    handles.clear()

    def get(name):
        store = handle(where[HUB_PREFIX + name])
        return store.get_tensor(HUB_PREFIX + name) if hasattr(store, "get_tensor") else store[HUB_PREFIX + name]
    return Source(get, [k[len(HUB_PREFIX):] for k in where if k.startswith(HUB_PREFIX)], str(directory),
                  release=handles.clear)


def random_source(model_names_shapes: dict[str, tuple], std: float, seed: int = 0,
                  device: torch.device | str = "cpu") -> Source:
    """Seeded per tensor (same values on every rank and world size of one device type): normal(0,
    std) weights and embeddings, zero biases, unit LayerNorm weights. Drawn on ``device``: a 10B
    random init on a GPU takes seconds, on one CPU thread minutes."""
    order = {n: i for i, n in enumerate(sorted(model_names_shapes))}

    def get(name):
        shape = model_names_shapes[name]
        if name.endswith("bias"):
            return torch.zeros(shape, device=device)
        if "layernorm" in name:
            return torch.ones(shape, device=device)
        g = torch.Generator(device=device).manual_seed(seed * 100003 + order[name])
        return torch.empty(shape, device=device).normal_(0.0, std, generator=g)
    return Source(get, model_names_shapes, "random init")


def find_weights(directory: Path) -> tuple[str, list[Path]] | None:
    """("original", mp files) / ("hub", []) / None when the directory holds no weights."""
    for pointer in ("latest_checkpointed_iteration.txt", "latest"):
        if (directory / pointer).is_file():
            sub = directory / read_text(directory / pointer, ConfigError).strip()
            if sub.is_dir():
                directory = sub
    mp = []
    while (directory / MP_FILE.format(len(mp))).is_file():
        mp.append(directory / MP_FILE.format(len(mp)))
    if mp:
        return "original", mp
    if any(directory.glob("*.index.json")) or (directory / "model.safetensors").is_file() or \
            (directory / "pytorch_model.bin").is_file():
        return "hub", []
    return None


def open_source(directory: Path | None, cfg: GLMConfig, shapes: dict[str, tuple], seed: int = 0,
                device: torch.device | str = "cpu") -> Source:
    found = find_weights(directory) if directory is not None else None
    if found is None:
        log.warning("GLM %s: no weight files, random init (seed %d)", directory or "preset", seed)
        return random_source(shapes, cfg.initializer_range, seed, device)
    kind, files = found
    return _original_source(files, cfg.trust_pickle) if kind == "original" else _hub_source(directory)


def _shapes(model: GLMModel) -> dict[str, tuple]:
    return {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in model.named_parameters()}


@torch.no_grad()
def fill(model: GLMModel, source: Source) -> None:
    """Copy every parameter from ``source``, one tensor at a time. A ZeRO-3 parameter gets only this
    rank's slice of the flattened tensor, written into its partition (``ds_tensor``)."""
    group = None
    for name, p in model.named_parameters():
        if name.split(".")[:3] != group:  # a new layer: unmap the pages of the previous one
            source.release()
            group = name.split(".")[:3]
        full = source.get(name)
        shape = tuple(getattr(p, "ds_shape", p.shape))
        if tuple(full.shape) != shape:
            raise ConfigError(f"{source.where}: {name} has shape {tuple(full.shape)}, the config gives {shape}")
        if not hasattr(p, "ds_tensor"):
            p.copy_(full.to(p.dtype))
            del full
            continue
        for part, rank in _partitions(p):  # rank r of a group holds flat[r*n : (r+1)*n], zero-padded at the end
            n = part.numel()
            flat = full.reshape(-1)[rank * n: (rank + 1) * n]
            part.zero_()
            part[: flat.numel()].copy_(flat.to(part.dtype))
        if p.numel() == full.numel():  # also materialised right now (e.g. persistent): keep both equal
            p.copy_(full.to(p.dtype))
        del full
    source.release()


def _partitions(p) -> list[tuple[torch.Tensor, int]]:
    """The ZeRO-3 partitions of ``p`` this rank stores, each with this rank's index in the group it
    is split over: the primary ``ds_tensor`` over the data-parallel group and, under hpZ
    (``zero_hpz_partition_size``, ds_configs/zero3_node_local.json), the secondary over the node's
    ranks. Both must hold the checkpoint: ``zero.Init`` already cut a secondary from the constructor's
    random values, and DeepSpeed gathers from the secondary whenever there is one."""
    dist = torch.distributed
    out = [(p.ds_tensor, dist.get_rank(group=p.ds_process_group))]
    if getattr(p, "ds_secondary_tensor", None) is not None:
        out.append((p.ds_secondary_tensor, dist.get_rank(group=p.ds_zero_param_process_group)))
    return out


def build_glm(cfg: GLMConfig, directory: str | Path | None = None, dtype: torch.dtype = torch.float32,
              ds_config: dict | None = None, seed: int = 0) -> GLMModel:
    """A GLM filled from ``directory``'s weights (random init without). With a ZeRO-3 ``ds_config``
    it is built partitioned and filled slice by slice."""
    device = "cpu"
    if ds_config is not None:
        import deepspeed

        # The dtype goes in through the config, never as zero.Init's ``dtype``: deepspeed 0.19.8
        # (partition_parameters.py ``_set_dtype``) turns an explicit dtype into bf16 on a CPU
        # without fp16 kernels (an operator-precedence slip), so fp32 runs would silently load bf16.
        precision = {"bf16": {"enabled": dtype == torch.bfloat16}, "fp16": {"enabled": dtype == torch.float16}}
        with deepspeed.zero.Init(config_dict_or_path={**ds_config, **precision}):
            model = GLMModel(cfg)
        device = next(model.parameters()).ds_tensor.device  # where zero.Init put the shards
    else:
        model = GLMModel(cfg).to(dtype)
    fill(model, open_source(Path(directory) if directory else None, cfg, _shapes(model), seed, device))
    return model


def save_original(model: GLMModel, directory: str | Path, mp: int = 1, dtype: torch.dtype | None = None) -> list[Path]:
    """Write ``model`` (a plain one) in the original layout, split into ``mp`` model-parallel files."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    states = [{} for _ in range(mp)]
    for name, t in model.state_dict().items():
        t = t if dtype is None else t.to(dtype)
        for state, piece in zip(states, split_model_parallel(name, t, mp)):
            state[name] = piece
    paths = [d / MP_FILE.format(r) for r in range(mp)]
    for state, path in zip(states, paths):
        torch.save({"module": state, "mp_world_size": mp}, path)
    model.config.save(d)
    return paths
