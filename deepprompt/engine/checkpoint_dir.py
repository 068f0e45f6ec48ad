"""The checkpoint directory on disk (rank 0 only; no collectives, no tensors): its layout and
names, the run-config signature a resume must match, finding the checkpoint to resume from, finishing
a save cut short, setting aside what does not read, and pruning. ``checkpoint`` owns the collective
save/load of the tensors and re-exports the names here.

Bad files never lose work: a ``latest`` that cannot be read (not UTF-8, a directory, no permission),
is empty or names no checkpoint, and a ``step_*`` whose state.json or tensors do not read, are
warned about and the run resumes from the newest checkpoint that reads (older ones after it). A
checkpoint that does not read is never deleted or overwritten: it is renamed ``step_....unreadable``
(outside what finding and pruning look at); with none that reads, the run is refused rather than
started over. Pruning removes only checkpoints older than the one just written.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from deepprompt.config import RunConfig, flatten
from deepprompt.config.sections import flat_without_legacy_defaults
from deepprompt.errors import ConfigError, DeepPromptError
from deepprompt.fileio import load_json, open_safetensors, read_text

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
    return sorted(found, key=step_of)


def step_of(path: Path) -> int:
    return int(STEP_DIR.match(path.name).group(1))


def read_state(path: Path) -> dict:
    """A checkpoint's state.json; a file that does not read is one ConfigError line naming it."""
    where = path / STATE
    state = load_json(read_text(where, ConfigError), where, ConfigError, allow_nan=True)  # a diverged loss
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
    limit = step_of(pointed) if pointed is not None else None
    for path in reversed(steps):  # newest first: everything newer than the one chosen gets checked
        why = unreadable(path)
        if why is not None:
            found.problems.append(why)
            found.unusable[path] = why
        elif limit is None or step_of(path) <= limit:
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


def choose(run: RunConfig) -> Path | None:
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


def clear(output_dir: str | Path) -> None:
    """Fresh start: forget earlier checkpoints (rank 0)."""
    root = checkpoint_root(output_dir)
    if root.exists():
        log.info("train.resume=never: removing earlier checkpoints in %s", root)
        shutil.rmtree(root)


def prune(root: Path, keep: int, newest: Path, protect: int | None = None) -> None:
    """Keep ``keep`` checkpoints up to ``newest`` (the one just written; 0: keep all) and the one of
    step ``protect`` (the best dev step): only checkpoints OLDER than ``newest`` are ever removed,
    never a newer one nor one set aside as unreadable."""
    older = [p for p in step_dirs(root) if step_of(p) < step_of(newest) and step_of(p) != protect]
    for old in older[:max(0, len(older) - (keep - 1))] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in [*root.glob(f"{TMP}step_*"), *root.glob(f"{OLD}step_*")]:  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    for f in path.iterdir() if path.is_dir() else []:
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
