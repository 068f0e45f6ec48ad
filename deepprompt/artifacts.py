"""A trained run's prompt and heads as ONE small safetensors file plus a JSON description.

    out_dir/prompts.safetensors   fp32 tensors: ``prompt.<name>`` and ``heads.<task>.<name>``
    out_dir/prompts.json          what they are and which backbone they belong to (docs/artifacts.md)

The file holds full (gathered) tensors, so an artifact saved under ZeRO-3 on N ranks loads on any
world size, or with no DeepSpeed at all. Only safetensors and JSON are read back: nothing is
unpickled. The backbone is never included (for ``finetune`` only the heads are written, which
alone do not reproduce the run: the artifact format is for prompt methods).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from deepprompt.config import RunConfig
from deepprompt.engine import comm
from deepprompt.errors import ConfigError
from deepprompt.fileio import atomic_write, load_json, load_safetensors, make_output_dir, read_text
from deepprompt.spec import BackboneSpec

log = logging.getLogger("deepprompt")

FORMAT = "deepprompt-prompt-artifact"
FORMAT_VERSION = 1
TENSORS_FILE = "prompts.safetensors"
DESCRIPTION_FILE = "prompts.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
FINGERPRINT_SCHEME = "sha256 over sorted (file name, size, first 1 MiB, last 1 MiB) of the weight files, v1"
_MIB = 1 << 20


# ------------------------------------------------------------------------------ backbone identity

def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config_file(model_path: str) -> Path:
    """The config.json a backbone loads from: in a local directory, or in the hub cache."""
    p = Path(model_path)
    if p.is_dir():
        found = p / "config.json"
        if not found.is_file() and (p / "glm_config.json").is_file():  # a GLM checkpoint (docs/glm.md)
            found = p / "glm_config.json"
    else:
        from transformers.utils import cached_file
        try:
            found = Path(cached_file(model_path, "config.json"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"model.path: cannot find config.json of {model_path!r}: {str(e).splitlines()[0]}") from None
    if not found.is_file():
        raise ConfigError(f"model.path: {found} does not exist")
    return found


def weights_fingerprint(directory: Path) -> dict | None:
    """A cheap identity of the weight files: SHA-256 over the sorted (name, size, first and last
    1 MiB) of every weight file in the checkpoint directory. It reads at most 2 MiB per file, so a
    10B backbone is fingerprinted in milliseconds; it catches a different checkpoint of the same
    architecture (other bytes at the start or end of some file, or other sizes), not a change
    confined to the middle of a file."""
    files = sorted(f for f in directory.iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return None
    h = hashlib.sha256()
    listing = []
    for f in files:
        size = f.stat().st_size
        listing.append([f.name, size])
        h.update(f"{f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            h.update(fh.read(_MIB))
            if size > _MIB:
                fh.seek(max(_MIB, size - _MIB))
                h.update(fh.read(_MIB))
    return {"scheme": FINGERPRINT_SCHEME, "sha256": h.hexdigest(), "files": listing}


def backbone_identity(model_path: str, given_path: str, model_type: str, family: str) -> dict:
    cfg = config_file(model_path)
    return {"path": given_path, "resolved_path": str(model_path), "model_type": model_type, "family": family,
            "config_sha256": _sha256_file(cfg), "weights_fingerprint": weights_fingerprint(cfg.parent)}


# ------------------------------------------------------------------------------ tensors

def exported_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """``prompt.<name>`` and ``heads.<task>.<name>`` -> parameter: everything a prompt method
    adds to the backbone (all of it trainable in a normal run)."""
    model = getattr(model, "module", model)  # a DeepSpeed engine -> its PromptedModel
    out = {f"prompt.{n}": p for n, p in model.prompt.named_parameters()}
    out.update({f"heads.{n}": p for n, p in model.heads.named_parameters()})
    return out


def full_shape(p: torch.Tensor) -> tuple[int, ...]:
    """A parameter's real shape, also when ZeRO-3 holds only a shard (``ds_shape``)."""
    return tuple(getattr(p, "ds_shape", p.shape))


def gathered(params: list[nn.Parameter], modifier_rank: int | None = None):
    """ZeRO-3's GatheredParameters when some parameter is partitioned (has ``ds_id``), else nothing."""
    if not any(hasattr(p, "ds_id") for p in params):
        return contextlib.nullcontext()
    import deepspeed
    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def gather_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full fp32 CPU copies of ``exported_parameters``. Collective under ZeRO-3: every rank calls it."""
    params = exported_parameters(model)
    with gathered(list(params.values())):
        return {k: p.detach().to("cpu", torch.float32).clone().contiguous() for k, p in params.items()}


# ------------------------------------------------------------------------------ save

def save_artifact(model, run: RunConfig, tasks: list, model_path: str, out_dir: Path,
                  extra: dict | None = None) -> Path:
    """Write ``out_dir/prompts.safetensors`` + ``out_dir/prompts.json`` (rank 0) and return ``out_dir``.

    Collective: call it on every rank (it gathers ZeRO-3 shards). ``model`` is the PromptedModel
    (or its DeepSpeed engine), ``model_path`` the resolved backbone directory or hub name.
    """
    from safetensors.torch import save_file

    module = getattr(model, "module", model)
    tensors = gather_tensors(module)
    finetune = not module.prompt.freezes_backbone
    if finetune:  # the trained backbone is not ours to export: heads only
        tensors = {k: v for k, v in tensors.items() if k.startswith("heads.")}
    out_dir = Path(out_dir)
    if comm.rank() == 0:
        spec = module.adapter.spec()
        desc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": run.prompt.method,
            "includes_backbone": False,
            "prompt": dataclasses.asdict(run.prompt),
            "backbone": backbone_identity(model_path, run.model.path, module.backbone.config.model_type,
                                          module.adapter.family),
            "spec": spec.as_dict(),
            "tasks": [{"name": t.name, "head": t.head, "labels": list(t.labels),
                       "max_seq_length": t.cfg.max_seq_length, "config": t.cfg.to_dict()} for t in tasks],
            "tensors": {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in tensors.items()},
            "run": run.to_dict(),
            "extra": extra or {},
        }
        if finetune:
            desc["note"] = ("method finetune trains the backbone, which is not included: these heads alone do "
                            "not reproduce the run (artifacts are for prompt methods)")
        make_output_dir(out_dir, "the artifact")
        atomic_write(out_dir / TENSORS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": FORMAT}))
        # the two files are renamed one after the other: a save cut between them leaves new tensors beside
        # the old description, shaped alike when only training moved on; the hash ties the pair together
        desc["tensors_sha256"] = _sha256_file(out_dir / TENSORS_FILE)
        atomic_write(out_dir / DESCRIPTION_FILE, lambda p: p.write_text(json.dumps(desc, indent=2) + "\n"))
    comm.barrier()  # every rank returns once the files exist
    return out_dir


# ------------------------------------------------------------------------------ load + apply

@dataclass
class Artifact:
    description: dict
    """The parsed prompts.json."""
    tensors: dict[str, torch.Tensor]
    """The parsed prompts.safetensors: full fp32 tensors on the CPU."""
    path: Path
    """The artifact directory."""

    @property
    def method(self) -> str:
        return self.description["method"]

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.description["tasks"]]


def _description_path(path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / DESCRIPTION_FILE
    elif p.suffix == ".safetensors":
        p = p.with_name(DESCRIPTION_FILE)
    if not p.is_file():
        raise ConfigError(f"--artifact: {p} does not exist (a directory with {DESCRIPTION_FILE} + {TENSORS_FILE}, "
                          f"or the {DESCRIPTION_FILE} itself)")
    return p


_DAMAGED = "the file is damaged or was edited by hand: restore it, or save the artifact again"

# What the readers of a description (serving, evaluation, prompt.init_from, PEFT export) index
# directly: field -> type, and the same for each entry of ``backbone`` and ``tasks``.
_FIELDS = {"method": str, "prompt": dict, "backbone": dict, "spec": dict, "tasks": list, "tensors": dict, "run": dict}
_BACKBONE_FIELDS = {"family": str, "path": str, "config_sha256": str}
_TASK_FIELDS = {"name": str, "head": str, "labels": list}
_JSON_KIND = {str: "a string", dict: "an object", list: "a list"}


def _check_description(desc: dict, where: Path) -> None:
    """Every field the readers use is there with its type, so a truncated-then-repaired or edited
    prompts.json is one line naming the field here, not a KeyError in whichever reader meets it."""
    def need(node, fields: dict, prefix: str) -> None:
        for key, kind in fields.items():
            if not isinstance(node.get(key), kind):
                got = "missing" if key not in node else f"{node[key]!r:.60}"
                raise ConfigError(f"{where}: {prefix}{key} is {got}, expected {_JSON_KIND[kind]}; {_DAMAGED}")

    need(desc, _FIELDS, "")
    need(desc["backbone"], _BACKBONE_FIELDS, "backbone.")
    for i, task in enumerate(desc["tasks"]):
        if not isinstance(task, dict):
            raise ConfigError(f"{where}: tasks[{i}] is {task!r:.60}, expected an object; {_DAMAGED}")
        need(task, _TASK_FIELDS, f"tasks[{i}].")
    for key, entry in desc["tensors"].items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
            raise ConfigError(f"{where}: tensors.{key} has no shape list; {_DAMAGED}")
    try:
        BackboneSpec(**desc["spec"])
    except TypeError as e:
        raise ConfigError(f"{where}: spec is not a backbone spec ({e}); {_DAMAGED}") from None


def load_artifact(path) -> Artifact:
    """Read an artifact directory (or its prompts.json): safetensors + JSON only, never pickle."""
    desc_path = _description_path(path)
    desc = load_json(read_text(desc_path, ConfigError), desc_path, ConfigError, allow_nan=True)  # extra: metrics
    found = desc.get("format") if isinstance(desc, dict) else None
    if found != FORMAT:
        raise ConfigError(f"{desc_path}: not a deepprompt prompt artifact (format {found!r}, expected {FORMAT!r})")
    version = desc.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"{desc_path}: format_version is {version!r}, not a number; {_DAMAGED}")
    if version > FORMAT_VERSION:
        raise ConfigError(f"{desc_path}: format_version {version} is newer than this deepprompt reads ({FORMAT_VERSION})")
    _check_description(desc, desc_path)
    tensor_path = desc_path.with_name(TENSORS_FILE)
    if not tensor_path.is_file():
        raise ConfigError(f"{tensor_path}: missing (the tensors of {desc_path}); copy the artifact directory whole")
    tensors = load_safetensors(tensor_path, ConfigError)  # a damaged file: its own line first
    recorded = desc.get("tensors_sha256")  # absent in artifacts saved before it was recorded
    if recorded is not None and recorded != _sha256_file(tensor_path):
        raise ConfigError(f"{tensor_path}: not the tensors {desc_path.name} was saved with (its SHA-256 differs): "
                          f"the two files come from different saves, or one was replaced; save the artifact again "
                          f"or restore both files from one copy")
    declared = {k: tuple(v["shape"]) for k, v in desc["tensors"].items()}
    stored = {k: tuple(v.shape) for k, v in tensors.items()}
    if declared != stored:
        raise ConfigError(f"{tensor_path}: tensors {stored} do not match {desc_path.name}'s {declared}")
    return Artifact(description=desc, tensors=tensors, path=desc_path.parent)


def check_backbone(artifact: Artifact, model_path: str, family: str) -> None:
    """Refuse a backbone other than the one the artifact was trained on (config.json SHA-256 and
    adapter family must match); a different weights fingerprint only warns (docs/artifacts.md)."""
    want = artifact.description["backbone"]
    cfg = config_file(model_path)
    sha = _sha256_file(cfg)
    if want["family"] != family or want["config_sha256"] != sha:
        raise ConfigError(
            f"model.path: artifact {artifact.path} was made on {want['path']} (family {want['family']}, config.json "
            f"sha256 {want['config_sha256'][:12]}) but the backbone is {model_path} (family {family}, config.json "
            f"sha256 {sha[:12]}); set model.path to the backbone it was trained on")
    fp = want.get("weights_fingerprint")
    if fp is not None:
        got = weights_fingerprint(cfg.parent)
        if got is None or got["sha256"] != fp["sha256"]:
            log.warning("artifact %s: the weight files of %s differ from those it was trained on (%s); "
                        "same architecture and config, other weights?", artifact.path, model_path, want["path"])


def copy_tensors(params: dict[str, nn.Parameter], tensors: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``tensors`` into ``params`` (same key sets, same full shapes). Under ZeRO-3 the
    parameters are gathered and rank 0's copy is re-partitioned; every rank reads the same file."""
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ConfigError(f"{where}: tensors do not match the model: missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]} (another prompt config or task set?)")
    for k, p in params.items():
        if full_shape(p) != tuple(tensors[k].shape):
            raise ConfigError(f"{where}: {k} has shape {tuple(tensors[k].shape)} but the model's is {full_shape(p)}")
    with gathered(list(params.values()), modifier_rank=0), torch.no_grad():
        for k, p in params.items():
            p.data.copy_(tensors[k].to(device=p.device, dtype=p.dtype))


def apply_artifact(model, artifact: Artifact, model_path: str | None = None) -> None:
    """Copy the artifact's prompt and head tensors into a built PromptedModel (or its engine).

    Collective under ZeRO-3. ``model_path`` is the backbone directory the model was loaded from
    (default: the path ``from_pretrained`` recorded); its config.json must be the artifact's.
    """
    module = getattr(model, "module", model)
    path = model_path or getattr(module.backbone.config, "_name_or_path", "")
    if not path:
        raise ConfigError("apply_artifact: the model does not say which backbone it was loaded from; pass model_path")
    check_backbone(artifact, path, module.adapter.family)
    params = exported_parameters(module)
    if not module.prompt.freezes_backbone:
        params = {k: v for k, v in params.items() if k.startswith("heads.")}
    copy_tensors(params, artifact.tensors, str(artifact.path))
