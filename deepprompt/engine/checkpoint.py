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

Bad files never lose work: a ``latest`` that cannot be read (not UTF-8, a directory, no permission),
is empty or names no checkpoint, and a ``step_*`` whose state.json or tensors do not read, are
warned about and the run resumes from the newest checkpoint that reads (older ones after it). A
checkpoint that does not read is never deleted or overwritten: it is renamed ``step_....unreadable``
(outside what finding and pruning look at); with none that reads, the run is refused rather than
started over. Pruning removes only checkpoints older than the one just written.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from deepprompt.config import RunConfig, flatten
from deepprompt.config.sections import flat_without_legacy_defaults
from deepprompt.engine import comm
from deepprompt.engine.ds_setup import inner_optimizer, master_partitions
from deepprompt.errors import ConfigError, DeepPromptError
from deepprompt.fileio import load_safetensors, open_safetensors, read_text

log = logging.getLogger("deepprompt")
CKPT_DIR, LATEST, TENSORS, STATE = "checkpoints", "latest", "trainable.safetensors", "state.json"
MOMENTS = ("exp_avg", "exp_avg_sq")
STEP_DIR = re.compile(r"^step_(\d+)$")  # a complete checkpoint's name (not .tmp-, .old-, .unreadable)
UNREADABLE = ".unreadable"
TMP, OLD = ".tmp-", ".old-"  # a checkpoint being written; the earlier copy of a step being saved again

# Keys that may differ between the run that saved and the run that resumes. Everything else in the
# run config changes the optimisation and is refused.
RESUMABLE_CHANGES = {
    "output_dir", "model.path", "task.data_dir", "train.micro_batch_size", "train.eval_batch_size",
    "train.eval_every", "train.log_every", "train.save_every", "train.save_every_minutes", "train.resume",
    "train.keep_checkpoints", "train.verify_frozen", "prompt.init_from", "train.activation_checkpointing",
    "train.peak_tflops", "train.dist_timeout_s", "train.disk_margin", "train.early_stopping_patience",
}
_ENTRY = re.compile(r"^tasks\[\d+\]\.")  # tasks[i].key may change where task.key may


def signature(run: RunConfig) -> dict:
    return {k: v for k, v in flatten(run.to_dict()).items()
            if k not in RESUMABLE_CHANGES and _ENTRY.sub("task.", k) not in RESUMABLE_CHANGES}


def check_compatible(saved: dict, run: RunConfig, where: Path) -> None:
    saved, now = flat_without_legacy_defaults(saved), flat_without_legacy_defaults(signature(run))
    # a key added to the config after the checkpoint was written counts as its default then
    defaults = signature(RunConfig())
    changed = [f"{k} ({saved.get(k, defaults.get(k))!r} -> {now.get(k)!r})" for k in sorted(set(saved) | set(now))
               if saved.get(k, defaults.get(k)) != now.get(k)]
    if changed:
        raise ConfigError(f"cannot resume from {where}: {', '.join(changed)} changed since it was saved; "
                          f"restore them, or start fresh with train.resume=never")


# ----------------------------------------------------------------------------- finding

def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CKPT_DIR


def step_dirs(root: Path) -> list[Path]:
    """The complete checkpoints under ``root``, oldest first (by step number)."""
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir()] if root.is_dir() else []
    return sorted(found, key=_step_of)


def _step_of(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def read_state(path: Path) -> dict:
    """A checkpoint's state.json; a file that does not read is one ConfigError line naming it."""
    where = path / STATE
    try:
        state = json.loads(read_text(where, ConfigError))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}:{e.lineno}: not valid JSON ({e.msg})") from None
    missing = [k for k in ("step", "signature") if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"{where}: not a checkpoint's state (no {' or '.join(map(repr, missing))})")
    if not isinstance(state["step"], int) or not isinstance(state["signature"], dict):
        raise ConfigError(f"{where}: not a checkpoint's state (step {state['step']!r:.40}, signature not an object)")
    return state


def unreadable(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from (one line), or None when it reads: its
    state.json parses and its tensors' header covers the file (a truncated copy fails here)."""
    try:
        read_state(path)
        open_safetensors(path / TENSORS, ConfigError)
    except DeepPromptError as e:
        return str(e)
    return None


def _read_pointer(root: Path) -> tuple[Path | None, str | None]:
    """(the checkpoint ``latest`` names, or None; what is wrong with ``latest``, or None)."""
    pointer = root / LATEST
    if not pointer.exists() and not pointer.is_symlink():
        return None, f"{pointer}: missing"
    try:
        name = read_text(pointer, ConfigError).strip()
    except DeepPromptError as e:
        return None, str(e)
    if not name:
        return None, f"{pointer}: empty"
    if not STEP_DIR.match(name) or not (root / name).is_dir():
        return None, f"{pointer}: names {name[:80]!r}, which is no checkpoint in {root}"
    return root / name, None


@dataclass
class Found:
    """What ``find_resumable`` saw: the checkpoint to resume from, what was wrong on the way, and the
    checkpoints that do not read (set aside, never deleted)."""

    path: Path | None = None
    problems: list[str] = field(default_factory=list)
    unusable: dict[Path, str] = field(default_factory=dict)  # checkpoint -> why it does not read


def find_resumable(output_dir: str | Path) -> Found:
    """The checkpoint ``latest`` names when it reads, else the newest one older than that (or than
    anything, when ``latest`` itself is bad) that does. Checkpoints newer than the one chosen (a save
    killed before ``latest`` moved) are checked too, so that none that fails to read is ever
    overwritten by a later save."""
    root = checkpoint_root(output_dir)
    steps = step_dirs(root)
    found = Found()
    if not steps and not (root / LATEST).exists():
        return found  # a fresh output_dir
    pointed, problem = _read_pointer(root)
    if problem:
        found.problems.append(problem)
    limit = _step_of(pointed) if pointed is not None else None
    for path in reversed(steps):  # newest first: everything newer than the one chosen gets checked
        why = unreadable(path)
        if why is not None:
            found.problems.append(why)
            found.unusable[path] = why
        elif limit is None or _step_of(path) <= limit:
            found.path = path
            break
    return found


def find_latest(output_dir: str | Path) -> Path | None:
    """The checkpoint a run in ``output_dir`` resumes from (``find_resumable``), or None."""
    return find_resumable(output_dir).path


def _set_aside(path: Path, why: str) -> None:
    """Rename an unreadable checkpoint (or ``latest`` that is a directory) out of the way of finding,
    saving and pruning, keeping every byte of it."""
    n, aside = 1, path.with_name(path.name + UNREADABLE)
    while aside.exists():
        n, aside = n + 1, path.with_name(f"{path.name}{UNREADABLE}-{n}")
    try:
        os.replace(path, aside)
    except OSError as e:
        raise ConfigError(f"{path}: does not read ({why}) and cannot be moved aside ({e.strerror}); move it away "
                          f"yourself, or start fresh with train.resume=never") from None
    log.warning("%s: does not read, kept as %s (never resumed from, pruned or overwritten; delete it yourself once "
                "you have looked)", path, aside.name)


def _recover_resave(root: Path) -> None:
    """Finish a save of an already saved step that was killed between its two renames (``save``):
    ``step_N`` is missing, its new copy ``.tmp-step_N`` (complete before the old one moved) and its
    old one ``.old-step_N`` are there. The new one goes in (the old one where the new does not read)."""
    for old in sorted(root.glob(f"{OLD}step_*")) if root.is_dir() else []:
        path, new = root / old.name[len(OLD):], root / f"{TMP}{old.name[len(OLD):]}"
        if not STEP_DIR.match(path.name) or path.exists():
            continue
        use = new if new.is_dir() and unreadable(new) is None else old
        os.replace(use, path)
        log.warning("resume: %s was missing (a save killed half-way); restored from %s", path, use.name)


def _choose(run: RunConfig) -> Path | None:
    """Rank 0: the checkpoint to resume from (warning about, and setting aside, what does not read)."""
    root = checkpoint_root(run.output_dir)
    _recover_resave(root)
    found = find_resumable(run.output_dir)
    if found.path is None and found.unusable:
        raise ConfigError(f"cannot resume: no checkpoint in {root} reads ({'; '.join(found.problems[:3])}); fix or "
                          f"move them, or start fresh with train.resume=never (which deletes them)")
    if found.problems:
        then = f"resuming from {found.path}" if found.path else "no checkpoint to resume from: starting at step 0"
        log.warning("resume: %s; %s", "; ".join(found.problems), then)
    for path, why in found.unusable.items():
        _set_aside(path, why)
    if (root / LATEST).is_dir():  # the next save replaces ``latest``, which it cannot do over a directory
        _set_aside(root / LATEST, "a directory")
    return found.path


def resume_point(run: RunConfig) -> Path | None:
    """Collective: the checkpoint this run continues from (rank 0 looks, checks compatibility, and
    tells everyone, so only rank 0's node needs ``output_dir``), or None for a fresh start."""
    decision = None
    if comm.rank() == 0:
        try:
            root = checkpoint_root(run.output_dir)
            if root.exists() and not root.is_dir():  # else the first save fails, after training up to it
                raise ConfigError(f"{root}: is a file, but the run keeps its checkpoints in a directory there; "
                                  f"move it away")
            found = _choose(run) if run.train.resume == "auto" else None
            if found is not None:
                check_compatible(read_state(found)["signature"], run, found)
            elif run.train.resume == "never":
                clear(run.output_dir)
            decision = ("ok", found)
        except ConfigError as e:
            decision = ("error", str(e))
    kind, value = comm.broadcast_object(decision)
    if kind == "error":
        raise ConfigError(value)
    return value


def clear(output_dir: str | Path) -> None:
    """Fresh start: forget earlier checkpoints (rank 0)."""
    root = checkpoint_root(output_dir)
    if root.exists():
        log.info("train.resume=never: removing earlier checkpoints in %s", root)
        shutil.rmtree(root)


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
        _fsync_dir(tmp)
        old = root / f"{OLD}{tag}"
        if path.exists():  # this step saved again (a resumed run's last step): one rename moves the old copy
            shutil.rmtree(old, ignore_errors=True)  # aside, never leaving a half-deleted step_ (_recover_resave)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        pointer_tmp = root / f".{LATEST}.tmp"
        pointer_tmp.write_text(tag + "\n")
        os.replace(pointer_tmp, root / LATEST)
        _fsync_dir(root)
        _prune(root, keep, path, protect)
        size = sum(f.stat().st_size for f in path.iterdir())
        log.info("checkpoint %s: %.2f MB in %.2f s", path, size / 2**20, time.time() - started)
    comm.barrier()
    return path


def load(engine, model, path: Path) -> dict:
    """Collective: restore params, Adam moments, step counts and the LR scheduler; return state."""
    payload = None
    if comm.rank() == 0:  # a failure is sent too: the other ranks would otherwise wait in the broadcast
        try:
            payload = ("ok", (load_safetensors(path / TENSORS, ConfigError), read_state(path)))
        except ConfigError as e:
            payload = ("error", str(e))
    kind, value = comm.broadcast_object(payload)
    if kind == "error":
        raise ConfigError(value)
    tensors, state = value
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


def _check_loadable(path: Path, state: dict, tensors: dict, model, sched) -> None:
    """Everything ``load`` and the trainer take from the checkpoint is there, with this model's
    shapes, BEFORE anything is restored: a checkpoint of another model, prompt or optimizer setup (or
    one edited by hand) is one line naming it, never a KeyError nor a half-restored run."""
    fresh = "move it out of the way to resume from an older one, or start fresh with train.resume=never"
    needed = ["optimizer_steps", "progress", "world_size", "mixer" if "sampler" not in state else "sampler"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise ConfigError(f"{path / STATE}: has no {', '.join(map(repr, missing))} (not a checkpoint this deepprompt "
                          f"wrote); {fresh}")
    saved = state.get("lr_scheduler")
    if sched is not None and saved is not None and len(saved.get("base_lrs", ())) != len(sched.optimizer.param_groups):
        raise ConfigError(f"{path}: was saved with {len(saved.get('base_lrs', ()))} optimizer group(s), this run has {len(sched.optimizer.param_groups)}"
                          f" (a prompt.reparam MLP has its own, prompt.reparam_lr_scale); start fresh with train.resume=never")
    for name, p in _trainable(model):
        want = tuple(getattr(p, "ds_shape", p.shape))
        for key in ("param", *MOMENTS):
            what = f"trainable parameter {name!r}" if key == "param" else f"Adam {key} of {name!r}"
            if f"{key}/{name}" not in tensors:
                raise ConfigError(f"{path}: has no {what} (a different prompt method or task?); {fresh}")
            got = tuple(tensors[f"{key}/{name}"].shape)
            if got != want:
                raise ConfigError(f"{path}: {name if key == 'param' else what} has shape {got}, the model wants {want} "
                                  f"(another backbone, prompt length or number of layers?); {fresh}")


def _prune(root: Path, keep: int, newest: Path, protect: int | None = None) -> None:
    """Keep ``keep`` checkpoints up to ``newest`` (the one just written; 0: keep all) and the one of
    step ``protect`` (the best dev step): only checkpoints OLDER than ``newest`` are ever removed,
    never a newer one nor one set aside as unreadable."""
    older = [p for p in step_dirs(root) if _step_of(p) < _step_of(newest) and _step_of(p) != protect]
    for old in older[:max(0, len(older) - (keep - 1))] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*root.glob(f"{TMP}step_*"), *root.glob(f"{OLD}step_*")]:  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir() if path.is_dir() else []:
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(o):
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
