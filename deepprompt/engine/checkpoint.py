"""Rank-agnostic checkpoints of the TRAINABLE state only (the frozen backbone is reloaded from its
pretrained files on resume).

The trainable state of a prompt run is small (MBs even at 10B), so every tensor is stored whole:
each trainable parameter's fp32 master copy and its two Adam moments, gathered from the ZeRO-3
partitions. Because nothing depends on how the state was partitioned, a checkpoint written by N
ranks resumes on any number of ranks. Rank 0 writes, every rank reads (rank 0 broadcasts it, so only
rank 0's node needs the files).

Layout (``output_dir/checkpoints/``)::

    step_00000100/trainable.safetensors   param/<name>, exp_avg/<name>, exp_avg_sq/<name> (fp32)
    step_00000100/state.json              step, optimizer step count, LR scheduler, the mixer (per task:
                                          epoch, position, steps drawn), best-dev record, eval history,
                                          early-stopping count, the run's step count, the run-config
                                          signature
    latest                                name of the newest COMPLETE checkpoint

Atomicity: a checkpoint is written under ``.tmp-step_...`` and renamed when complete; ``latest``
is replaced (write + rename) only after that. A kill at any moment leaves either the previous
checkpoint or the new one as ``latest``, never a partial one. A step saved again (a resumed run's
last step) moves its earlier copy aside to ``.old-step_...`` in one rename before the new one is
renamed in; a kill between the two is finished on the next resume. Loading uses safetensors and
JSON only (no pickle), and checks every tensor and state key it restores before restoring any.

Finding, choosing and pruning checkpoints on disk: ``checkpoint_dir``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from deepprompt.config import RunConfig
from deepprompt.engine import comm
# the checkpoint directory's names and finders, re-exported: ``checkpoint`` is the one API callers use
from deepprompt.engine.checkpoint_dir import (  # noqa: F401
    CKPT_DIR, LATEST, MOMENTS, OLD, STATE, TENSORS, TMP, Found, check_compatible, checkpoint_root, choose, clear,
    find_latest, find_resumable, fsync_dir, prune, read_state, signature, step_dirs, unreadable)
from deepprompt.engine.ds_setup import inner_optimizer, master_partitions
from deepprompt.errors import ConfigError
from deepprompt.fileio import load_safetensors

log = logging.getLogger("deepprompt")


def resume_point(run: RunConfig) -> Path | None:
    """Collective: the checkpoint this run continues from (rank 0 looks, checks compatibility, and
    tells everyone, so only rank 0's node needs ``output_dir``), or None for a fresh start."""
    def decide() -> Path | None:
        root = checkpoint_root(run.output_dir)
        if root.exists() and not root.is_dir():  # else the first save fails, after training up to it
            raise ConfigError(f"{root}: is a file, but the run keeps its checkpoints in a directory there; "
                              f"move it away")
        found = choose(run) if run.train.resume == "auto" else None
        if found is not None:
            check_compatible(read_state(found)["signature"], run, found)
        elif run.train.resume == "never":
            clear(run.output_dir)
        return found

    return comm.from_rank0(decide)


# ----------------------------------------------------------------------------- full tensors

def _trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _get_full(engine, p, key: str | None) -> torch.Tensor:
    """The whole fp32 master (key None) or Adam moment of ``p`` — a collective under ZeRO-3."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    value = safe_get_full_fp32_param(p) if key is None else safe_get_full_optimizer_state(p, key)
    if value is None:  # no ZeRO partitioning: the torch optimizer holds the tensors directly
        value = p.detach() if key is None else inner_optimizer(engine).state[p][key]
    return value.detach().float().cpu().reshape(p.ds_shape if hasattr(p, "ds_shape") else p.shape).clone()


def _set_full(engine, p, key: str | None, value: torch.Tensor) -> None:
    """Write the whole fp32 master (key None) or Adam moment of ``p``; each rank keeps its slice."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    if hasattr(p, "ds_id"):
        # ZeRO-3. (deepspeed 0.19's safe_set_full_* cannot fill the last rank's slice when the
        # tensor does not split evenly, so copy this rank's slice by hand, padding left alone.)
        z3 = p._z3_optimizer
        part, _ = z3._get_fp32_opt_state_partition(p, release_swap_buffers=False, optim_state_key=key)
        n, r = part.numel(), z3._get_param_partition_rank(p)
        chunk = value.flatten()[r * n:(r + 1) * n]
        part.data[:chunk.numel()].copy_(chunk.to(part.dtype))
    elif getattr(p, "_hp_mapping", None) is not None:  # ZeRO-1/2 and the bf16 optimizer
        if key is None:
            safe_set_full_fp32_param(p, value)
        else:
            safe_set_full_optimizer_state(p, value, key)
    elif key is None:
        p.data.copy_(value.to(p.dtype))
    else:
        inner_optimizer(engine).state[p][key].copy_(value)


def _optimizer_step_count(engine) -> int:
    steps = [int(st["step"]) for st in inner_optimizer(engine).state.values() if "step" in st]
    return max(steps, default=0)


def _set_optimizer_step_count(engine, count: int) -> None:
    for st in inner_optimizer(engine).state.values():
        if "step" in st:
            st["step"] = torch.tensor(float(count)) if torch.is_tensor(st["step"]) else count


def _ensure_optimizer_state(engine) -> None:
    """Adam creates its moments at the first step; a resume fills them before that, so create them
    (zeros, as Adam would) on the tensors the optimizer really updates."""
    inner = inner_optimizer(engine)
    for t in master_partitions(engine):
        if not inner.state.get(t):
            inner.state[t] = {"step": torch.tensor(0.0), **{k: torch.zeros_like(t) for k in MOMENTS}}


# ----------------------------------------------------------------------------- save / load

def save(engine, model, run: RunConfig, step: int, state: dict, keep: int, protect: int | None = None) -> Path | None:
    """Collective: every rank gathers, rank 0 writes. Returns the checkpoint path (rank 0). The
    ``keep`` newest checkpoints stay, and the one of step ``protect`` (the best dev step) too."""
    started = time.time()
    tensors = {}
    for name, p in _trainable(model):
        tensors[f"param/{name}"] = _get_full(engine, p, None)
        for key in MOMENTS:
            tensors[f"{key}/{name}"] = _get_full(engine, p, key)
    path = None
    if comm.rank() == 0:
        root = checkpoint_root(run.output_dir)
        root.mkdir(parents=True, exist_ok=True)
        tag = f"step_{step:08d}"
        tmp, path = root / f"{TMP}{tag}", root / tag
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / TENSORS))
        full_state = {**state, "step": step, "optimizer_steps": _optimizer_step_count(engine),
                      "lr_scheduler": engine.lr_scheduler.state_dict() if engine.lr_scheduler else None,
                      "world_size": comm.world_size(), "signature": signature(run)}
        (tmp / STATE).write_text(json.dumps(full_state, indent=1, default=_json_default))
        fsync_dir(tmp)
        old = root / f"{OLD}{tag}"
        if path.exists():  # this step saved again (a resumed run's last step): one rename moves the old copy
            shutil.rmtree(old, ignore_errors=True)  # aside, never leaving a half-deleted step_ (_recover_resave)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        pointer_tmp = root / f".{LATEST}.tmp"
        pointer_tmp.write_text(tag + "\n")
        os.replace(pointer_tmp, root / LATEST)
        fsync_dir(root)
        prune(root, keep, path, protect)
        size = sum(f.stat().st_size for f in path.iterdir())
        log.info("checkpoint %s: %.2f MB in %.2f s", path, size / 2**20, time.time() - started)
    comm.barrier()
    return path


def load(engine, model, path: Path) -> dict:
    """Collective: restore params, Adam moments, step counts and the LR scheduler; return state."""
    tensors, state = comm.from_rank0(lambda: (load_safetensors(path / TENSORS, ConfigError), read_state(path)))
    _check_loadable(path, state, tensors, model, engine.lr_scheduler)
    sched, saved = engine.lr_scheduler, state.get("lr_scheduler")
    import deepspeed

    _ensure_optimizer_state(engine)
    for name, p in _trainable(model):
        value = tensors[f"param/{name}"]
        # the working (possibly bf16) copy, then the fp32 master and the moments
        with deepspeed.zero.GatheredParameters([p], modifier_rank=0, enabled=hasattr(p, "ds_id")):
            p.data.copy_(value.to(p.dtype))
        _set_full(engine, p, None, value)
        for key in MOMENTS:
            _set_full(engine, p, key, tensors[f"{key}/{name}"])
    _set_optimizer_step_count(engine, state["optimizer_steps"])
    if sched is not None and saved is not None:
        sched.load_state_dict(saved)
        # load_state_dict restores the schedule's position, not the rate the optimizer will use next
        for group, lr in zip(sched.optimizer.param_groups, sched.get_last_lr()):
            group["lr"] = lr
    comm.barrier()
    return state


FRESH = "move it out of the way to resume from an older one, or start fresh with train.resume=never"


def missing_state(path: Path, state: dict, keys) -> None:
    """One line naming the checkpoint when its state lacks any of ``keys`` (each a key, or a tuple
    of keys of which one will do): not one this deepprompt wrote, or edited by hand."""
    missing = [k if isinstance(k, str) else k[0] for k in keys
               if not any(x in state for x in ((k,) if isinstance(k, str) else k))]
    if missing:
        raise ConfigError(f"{path / STATE}: has no {', '.join(map(repr, missing))} (not a checkpoint this deepprompt "
                          f"wrote); {FRESH}")


def _check_loadable(path: Path, state: dict, tensors: dict, model, sched) -> None:
    """Everything ``load`` takes from the checkpoint is there, with this model's shapes, BEFORE
    anything is restored: a checkpoint of another model, prompt or optimizer setup (or one edited by
    hand) is one line naming it, never a KeyError nor a half-restored model. (The keys the caller
    saved itself, e.g. the trainer's progress, are the caller's to check: ``missing_state``.)"""
    missing_state(path, state, ("optimizer_steps", "world_size"))
    saved = state.get("lr_scheduler")
    if sched is not None and saved is not None and len(saved.get("base_lrs", ())) != len(sched.optimizer.param_groups):
        raise ConfigError(f"{path}: was saved with {len(saved.get('base_lrs', ()))} optimizer group(s), this run has {len(sched.optimizer.param_groups)}"
                          f" (a prompt.reparam MLP has its own, prompt.reparam_lr_scale); start fresh with train.resume=never")
    for name, p in _trainable(model):
        want = tuple(getattr(p, "ds_shape", p.shape))
        for key in ("param", *MOMENTS):
            what = f"trainable parameter {name!r}" if key == "param" else f"Adam {key} of {name!r}"
            if f"{key}/{name}" not in tensors:
                raise ConfigError(f"{path}: has no {what} (a different prompt method or task?); {FRESH}")
            got = tuple(tensors[f"{key}/{name}"].shape)
            if got != want:
                raise ConfigError(f"{path}: {name if key == 'param' else what} has shape {got}, the model wants {want} "
                                  f"(another backbone, prompt length or number of layers?); {FRESH}")


def _json_default(o):
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
