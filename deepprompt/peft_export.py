"""Export a P-Tuning v2 prefix as a PEFT prefix-tuning adapter (``adapter_config.json`` +
``adapter_model.safetensors``), loadable with
``peft.PeftModel.from_pretrained(AutoModel.from_pretrained(backbone), out_dir)``.

The layouts agree: our prefix table is [P, layers * 2 * hidden], each row viewed as
(layer, key/value, head, head_dim), and PEFT's ``prompt_embeddings`` is [P, num_layers * 2 *
token_dim] viewed as (num_layers * 2, heads, head_dim) with layer i's key at block 2i and its
value at 2i+1 (``PeftModel.get_prompt``). PEFT stores prefix tuning as that one evaluated table,
also for ``prefix_projection=True`` (the MLP is never on disk), so a ``prompt.reparam`` prefix is
exported as its evaluated table with ``prefix_projection: false``. Limits (docs/artifacts.md): a
prefix on every layer only, BERT-style families only (transformers' DeBERTa-v2 takes no
``past_key_values``), no heads (PEFT's feature-extraction model has none), and PEFT shifts the
tokens' positions by P where deepprompt does not.

PEFT itself is not needed to export (the two files are written directly); tests load them with it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from deepprompt.artifacts import Artifact, _atomic_write, copy_tensors, gather_tensors, load_artifact
from deepprompt.config import PromptConfig, from_dict
from deepprompt.engine import comm
from deepprompt.errors import ConfigError
from deepprompt.prompts.prefix import DeepPrefix, resolve_layers
from deepprompt.spec import BackboneSpec

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_FAMILIES = ("bert", "roberta")
"""Families whose transformers model takes ``past_key_values`` in its encoder (where PEFT puts the prefix)."""


def _from_model(model) -> tuple[dict, dict[str, torch.Tensor]]:
    module = getattr(model, "module", model)
    tensors = gather_tensors(module)  # collective under ZeRO-3
    cfg = getattr(module.prompt, "cfg", None)  # a MultiPrompt has none: refused below as not "prefix"
    desc = {"method": cfg.method if cfg is not None else type(module.prompt).__name__,
            "prompt": dataclasses.asdict(cfg) if cfg is not None else {},
            "spec": dataclasses.asdict(module.adapter.spec()),
            "backbone": {"family": module.adapter.family,
                         "path": getattr(module.backbone.config, "_name_or_path", "")}}
    return desc, tensors


def prefix_table(prompt_cfg: dict, spec: dict, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The [P, layers * 2 * hidden] prefix table, computed by deepprompt's own module."""
    cfg = from_dict(PromptConfig, dict(prompt_cfg), "prompt.")
    prefix = DeepPrefix(cfg, BackboneSpec(**spec)).eval()
    params = {f"prompt.{n}": p for n, p in prefix.named_parameters()}
    copy_tensors(params, {k: v for k, v in tensors.items() if k.startswith("prompt.")}, "peft export")
    with torch.no_grad():
        return prefix.table().float().contiguous()


def export_peft(source, out_dir) -> Path:
    """Write ``out_dir/adapter_config.json`` + ``out_dir/adapter_model.safetensors`` and return ``out_dir``.

    ``source``: an ``Artifact``, an artifact directory (or its prompts.json), or a PromptedModel /
    DeepSpeed engine (collective under ZeRO-3: call on every rank; rank 0 writes).
    """
    from safetensors.torch import save_file

    if isinstance(source, Artifact):
        desc, tensors = source.description, source.tensors
    elif isinstance(source, (str, Path)):
        art = load_artifact(source)
        desc, tensors = art.description, art.tensors
    else:
        desc, tensors = _from_model(source)
    method, spec, family = desc["method"], desc["spec"], desc["backbone"]["family"]
    if method != "prefix":
        raise ConfigError(f"PEFT export: method {method!r} is not a key/value prefix; only prefix (P-Tuning v2) maps "
                          f"to PEFT prefix tuning")
    layers = resolve_layers(desc["prompt"].get("layers"), spec["num_layers"])
    if len(layers) != spec["num_layers"]:
        raise ConfigError(f"PEFT export: prompt.layers={desc['prompt']['layers']} puts a prefix on {len(layers)} of "
                          f"{spec['num_layers']} layers; PEFT prefix tuning has one on every layer")
    if family not in PEFT_FAMILIES:
        raise ConfigError(f"PEFT export: backbone family {family!r} is not supported (transformers' {family} model "
                          f"takes no past_key_values, so PEFT cannot place a prefix); supported: "
                          f"{', '.join(PEFT_FAMILIES)}")
    table = prefix_table(desc["prompt"], spec, tensors)
    backbone = desc["backbone"]
    config = {
        "peft_type": "PREFIX_TUNING",
        "task_type": "FEATURE_EXTRACTION",
        "inference_mode": True,
        "num_virtual_tokens": desc["prompt"]["length"],
        "token_dim": spec["hidden"],
        "num_transformer_submodules": 1,
        "num_attention_heads": spec["num_heads"],
        "num_layers": spec["num_layers"],
        "encoder_hidden_size": spec["hidden"],
        "prefix_projection": False,
        "base_model_name_or_path": backbone.get("resolved_path") or backbone.get("path") or None,
        "revision": None,
    }
    out = Path(out_dir)
    if comm.rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / WEIGHTS_FILE, lambda p: save_file({"prompt_embeddings": table}, str(p),
                                                              metadata={"format": "pt"}))
        _atomic_write(out / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    comm.barrier()
    return out
