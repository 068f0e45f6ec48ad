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

Decoders (family ``decoder``: Llama, Mistral, Qwen2/3, GLM-4) export as ``CAUSAL_LM`` with grouped-query
shapes (``token_dim`` = kv_heads x head_dim, ``num_attention_heads`` = kv_heads, as PEFT itself sets
them for such models). Position convention: deepprompt gives the real tokens rotary positions
0..n-1 and the prefix none (its keys are not rotated); PEFT puts the prefix in the KV cache, so the
real tokens get positions P..P+n-1. Rotary scores depend on the query's position minus the key's,
so the exported prefix KEYS are rotated forward by P positions (the model's own rotary embedding at
position P): PEFT's token at P+i then scores each prefix key exactly as deepprompt's token at i
does, and an unpadded input gives the same logits under PEFT as under deepprompt (tested; with
left padding PEFT's positions also count the padding, deepprompt's do not). Rotary variants whose
rotation is not a plain angle per position (dynamic NTK, YaRN's attention scaling) are refused.

PEFT itself is not needed to export (the two files are written directly); tests load them with it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from deepprompt.artifacts import Artifact, copy_tensors, gather_tensors, load_artifact
from deepprompt.config import PromptConfig, from_dict
from deepprompt.engine import comm
from deepprompt.errors import ConfigError
from deepprompt.fileio import atomic_write, make_output_dir
from deepprompt.prompts.prefix import DeepPrefix, resolve_layers
from deepprompt.spec import BackboneSpec

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_FAMILIES = ("bert", "roberta", "decoder")
"""Families whose transformers model takes ``past_key_values`` (where PEFT puts the prefix)."""
TASK_TYPES = {"decoder": "CAUSAL_LM"}
"""PEFT task type per family (default FEATURE_EXTRACTION: the encoder alone)."""


def _from_model(model) -> tuple[dict, dict[str, torch.Tensor]]:
    module = getattr(model, "module", model)
    tensors = gather_tensors(module)  # collective under ZeRO-3
    cfg = getattr(module.prompt, "cfg", None)  # a MultiPrompt has none: refused below as not "prefix"
    desc = {"method": cfg.method if cfg is not None else type(module.prompt).__name__,
            "prompt": dataclasses.asdict(cfg) if cfg is not None else {},
            "spec": module.adapter.spec().as_dict(),
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
    if family == "decoder":
        table = _keys_rotated_to_peft_positions(table, desc, spec)
    config = {
        "peft_type": "PREFIX_TUNING",
        "task_type": TASK_TYPES.get(family, "FEATURE_EXTRACTION"),
        "inference_mode": True,
        "num_virtual_tokens": desc["prompt"]["length"],
        "token_dim": kv_width(spec),
        "num_transformer_submodules": 1,
        "num_attention_heads": spec.get("kv_heads") or spec["num_heads"],
        "num_layers": spec["num_layers"],
        "encoder_hidden_size": spec["hidden"],
        "prefix_projection": False,
        "base_model_name_or_path": backbone.get("resolved_path") or backbone.get("path") or None,
        "revision": None,
    }
    out = Path(out_dir)
    if comm.rank() == 0:
        make_output_dir(out, "the PEFT adapter")
        atomic_write(out / WEIGHTS_FILE, lambda p: save_file({"prompt_embeddings": table}, str(p),
                                                              metadata={"format": "pt"}))
        atomic_write(out / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    comm.barrier()
    return out


def kv_width(spec: dict) -> int:
    return BackboneSpec(**spec).kv_width


def _keys_rotated_to_peft_positions(table: torch.Tensor, desc: dict, spec: dict) -> torch.Tensor:
    """The prefix table with every layer's keys rotated forward by P positions (module docstring)."""
    import sys

    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    path = desc["backbone"].get("resolved_path") or desc["backbone"].get("path")
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as e:
        raise ConfigError(f"PEFT export: the backbone's config is needed to place the prefix keys at PEFT's "
                          f"positions and {path!r} cannot be read: {str(e).splitlines()[0]}") from None
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in ("default", "linear", "llama3"):
        raise ConfigError(f"PEFT export: rotary type {rope.get('rope_type')!r} does not rotate by a fixed angle per "
                          f"position, so PEFT's shifted positions cannot be matched; export refused")
    module = sys.modules[MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].__module__]
    rotary_cls = next(getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding"))
    s = BackboneSpec(**spec)
    p = table.shape[0]
    x = table.view(p, s.num_layers, 2, s.num_kv_heads, s.head_dim).clone()
    keys = x[:, :, 0].permute(1, 2, 0, 3)  # [layers, kv_heads, P, head_dim]
    cos, sin = rotary_cls(config)(keys, torch.full((keys.shape[0], p), p, dtype=torch.long))
    rotated, _ = module.apply_rotary_pos_emb(keys, keys, cos.to(keys.dtype), sin.to(keys.dtype))
    x[:, :, 0] = rotated.permute(2, 0, 1, 3)
    return x.reshape(p, -1).contiguous()
