"""Start-up checks of a (multi-node) run, before any weights or data load.

Every rank checks what only it can see (its hostfile, its copy of the code, the model files on its
node), the results are gathered to every rank, and every rank raises the SAME one-line ConfigError:
the job ends with exit 2 everywhere instead of some ranks hanging in a collective. In order:

1. every rank runs the same code and config: a fingerprint of the deepprompt sources, the git
   commit, the library versions, the resolved run config and the DeepSpeed JSON; a difference names
   the ranks and hosts (and the first config key) that differ from rank 0;
2. each rank's own problems: the registry names (``prompt.method``, ``task.name``), the launcher's
   hostfile (when this node can see it), the DeepSpeed JSON and the model path readable on every
   node (config and weight files whole; resolved here, once, into a ``models.loading.Backbone``),
   and every task's ``max_seq_length`` within the backbone's positions (the message names the host);
3. the DeepSpeed JSON resolved for this world size, once (``ds_setup.resolve_ds_config``: "auto"
   filled, the batch arithmetic checked); a batch number taken from the DeepSpeed JSON is written
   into the run config, so run_config.json and the checkpoints record what runs;
4. free disk in output_dir on rank 0 (the only rank that writes) for the checkpoints kept
   (``train.disk_margin``; 0 skips it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deepprompt.config import RunConfig, flatten
from deepprompt.engine import comm, ds_setup
from deepprompt.engine.world import me
from deepprompt.errors import ConfigError, DeepPromptError
from deepprompt.fileio import first_broken_safetensors, make_output_dir
from deepprompt.models import assembly
from deepprompt.models.loading import Backbone, backbone_at, resolve_model_path
from deepprompt.registry import PROMPTS, TASKS

log = logging.getLogger("deepprompt")

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # deepprompt/
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
FP32 = 4


@dataclass
class RankReport:
    """What one rank saw; gathered to every rank."""

    where: str  # "rank 1@node-b"
    fingerprint: dict[str, str]  # component -> digest (or version text)
    run_config: dict
    ds_config: dict | None
    problems: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ fingerprint

def source_digest(package_dir: str | os.PathLike | None = None) -> str:
    """SHA-256 over every .py file of the deepprompt package (relative path + bytes, sorted)."""
    root = Path(package_dir or PACKAGE_DIR)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        if "__pycache__" in f.parts:
            continue
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_commit(package_dir: str | os.PathLike | None = None) -> str | None:
    root = Path(package_dir or PACKAGE_DIR)
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()[:12] if out.returncode == 0 else None


def library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for name in ("torch", "deepspeed", "transformers"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} -")
    return ", ".join(parts)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


COMPONENTS = ("code", "git commit", "libraries", "run config", "ds config")  # the order differences are named in


def fingerprint(run: RunConfig, ds_raw: dict | None) -> dict[str, str]:
    fp = {"code": source_digest(), "libraries": library_versions(), "run config": _digest(run.to_dict()),
          "ds config": _digest(ds_raw)}
    commit = git_commit()
    if commit:
        fp["git commit"] = commit
    return fp


# ------------------------------------------------------------------------------ comparisons (pure)

def first_difference(a: dict, b: dict) -> str | None:
    """``train.lr (0.01 vs 0.02)``: the first key whose value differs between two nested dicts."""
    fa, fb = flatten(a), flatten(b)
    for key in sorted(set(fa) | set(fb)):
        if fa.get(key, "<unset>") != fb.get(key, "<unset>"):
            return f"{key} ({fa.get(key, '<unset>')!r} vs {fb.get(key, '<unset>')!r})"
    return None


def disagreement(reports: list[RankReport]) -> str | None:
    """One line naming what differs from rank 0 and on which ranks/hosts, or None if all agree.
    A git commit is compared only between ranks that have one (a pip-installed copy has none)."""
    ref = reports[0]
    for component in COMPONENTS:
        differ = [r for r in reports[1:] if component in r.fingerprint and component in ref.fingerprint
                  and r.fingerprint[component] != ref.fingerprint[component]]
        if component != "git commit":
            differ += [r for r in reports[1:] if (component in r.fingerprint) != (component in ref.fingerprint)]
        if not differ:
            continue
        names = ", ".join(r.where for r in differ[:4]) + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")
        what = {"run config": lambda r: first_difference(ref.run_config, r.run_config),
                "ds config": lambda r: first_difference(ref.ds_config, r.ds_config)}.get(
            component, lambda r: f"{ref.fingerprint.get(component)} vs {r.fingerprint.get(component)}")
        detail = what(differ[0])
        verb = "differs" if len(differ) == 1 else "differ"
        return (f"preflight: ranks disagree on the {component}: {names} {verb} from {ref.where}"
                + (f": {detail}" if detail else "") + " (launch every node from the same code and command line)")
    return None


def first_problem(reports: list[RankReport]) -> str | None:
    bad = [r for r in reports if r.problems]
    if not bad:
        return None
    more = sum(len(r.problems) for r in bad) - 1
    return f"{bad[0].problems[0]} (on {bad[0].where})" + (f" (+{more} more on other ranks)" if more else "")


# ------------------------------------------------------------------------------ local checks

def check_names(run: RunConfig) -> None:
    """``prompt.method`` and every task's name are registered, and every task section's family keys
    are ones its task has, of the right types (one line naming the key otherwise)."""
    import deepprompt.prompts  # noqa: F401  (registers the methods)
    import deepprompt.tasks  # noqa: F401

    PROMPTS.get(run.prompt.method, "prompt.method")
    for i, task in enumerate(run.task_configs()):
        prefix = "task." if run.tasks is None else f"tasks[{i}]."
        TASKS.get(task.name, f"{prefix}name").options_of(task, prefix)  # the family's own keys, typed


def check_model_path(path: str) -> str:
    """``model.path`` resolved (``resolve_model_path``), its directory's config and weight files
    readable and whole; returns the resolved path."""
    resolved = Path(resolve_model_path(path))
    if not resolved.is_dir():
        return str(resolved)  # a preset or a hub name: from_pretrained reports it
    from deepprompt.models.glm.config import CONFIG_FILE, is_glm_dir

    config = resolved / (CONFIG_FILE if (resolved / CONFIG_FILE).is_file() and is_glm_dir(resolved) else "config.json")
    unreadable = []
    for f in [config, *sorted(p for p in resolved.iterdir() if p.suffix in WEIGHT_SUFFIXES)]:
        try:
            with open(f, "rb") as fh:
                fh.read(1)
        except OSError as e:
            unreadable.append(f"{f.name} ({e.strerror})")
    if unreadable:
        raise ConfigError(f"model.path: {resolved}: cannot read {', '.join(unreadable[:3])}")
    broken = first_broken_safetensors(resolved)  # a truncated copy or download: only its header tells
    if broken:
        raise ConfigError(f"model.path: {broken}")
    return str(resolved)


def check_positions(run: RunConfig, backbone: Backbone) -> None:
    """Every task's ``max_seq_length`` (plus ``prompt.length`` for a method that puts the prompt at
    the input) fits the backbone's positions, read from its config before any weights load
    (``models.assembly.check_positions``, the check the assembly runs again on the built backbone);
    a generative task's prompt also leaves room for its ``task.max_new_tokens``."""
    keys = [("task.max_seq_length" if run.tasks is None else f"tasks[{i}].max_seq_length", t.max_seq_length)
            for i, t in enumerate(run.task_configs())]
    positions = backbone.max_positions
    assembly.check_positions(run.prompt, keys, positions, run.model.path)
    import deepprompt.tasks  # noqa: F401  (registers the tasks)

    at_input = run.prompt.length if PROMPTS.get(run.prompt.method, "prompt.method").puts_prompt_at_input else 0
    for i, task in enumerate(run.task_configs()):
        prefix = "task." if run.tasks is None else f"tasks[{i}]."
        cls = TASKS.get(task.name, f"{prefix}name")
        if not cls.generates:
            continue
        new = cls.options_of(task, prefix).max_new_tokens  # the prompt grows by this much while generating
        if task.max_seq_length + at_input + new > positions:
            raise ConfigError(f"{prefix}max_seq_length: {task.max_seq_length}{f' + {at_input} prompt tokens' if at_input else ''}"
                              f" + {prefix}max_new_tokens {new} generated = {task.max_seq_length + at_input + new} "
                              f"exceeds the backbone's {positions} positions ({run.model.path})")


def check_output_dir(path: str, dirs: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> None:
    """``output_dir`` is a directory here, or is made one (every rank writes its log there); a path
    under a regular file is one line, not a pathlib traceback. So is an entry the run will write
    that is there already as the other kind (a file named ``dirs[i]``, a directory named
    ``files[i]``): found now, not as a traceback when it is written, maybe after all the training."""
    out = Path(path)
    make_output_dir(out, "the run's output", key="output_dir")
    for name, want_dir in [*((d, True) for d in dirs), *((f, False) for f in files)]:
        entry = out / name
        if entry.exists() and entry.is_dir() != want_dir:
            kind, want = ("a file", "a directory") if want_dir else ("a directory", "a file")
            raise ConfigError(f"output_dir: {entry} is {kind}, but the run writes {want} there; move it away "
                              f"or choose another output_dir")


def check_hostfile(world_size: int) -> None:
    from deepprompt.hostfile import launcher_hostfile, parse_hostfile

    path = launcher_hostfile()
    if path is None:
        return
    hosts = parse_hostfile(path)
    if world_size > sum(hosts.values()):
        raise ConfigError(f"{path}: {sum(hosts.values())} slot(s) in all but the job has {world_size} ranks")


def local_report(run: RunConfig, ds_config_path: str, world_size: int) -> tuple[RankReport, dict | None, Backbone | None]:
    """This rank's checks; returns its report, the raw DeepSpeed JSON and the resolved backbone
    (None where their check failed: the failure is a problem of the report)."""
    problems, found = [], {}

    def model() -> Backbone:
        backbone = backbone_at(check_model_path(run.model.path), run.model.family)  # resolved once, here
        check_positions(run, backbone)
        return backbone

    checks = (("names", lambda: check_names(run)),
              ("hostfile", lambda: check_hostfile(world_size)),
              ("ds config", lambda: ds_setup.read_ds_config(ds_config_path)),
              ("model", model))
    for name, check in checks:
        try:
            found[name] = check()
        except DeepPromptError as e:
            problems.append(str(e))
    ds_raw = found.get("ds config")
    return RankReport(str(me()), fingerprint(run, ds_raw), run.to_dict(), ds_raw, problems), ds_raw, found.get("model")


# ------------------------------------------------------------------------------ disk

def estimate_trainable_numel(run: RunConfig, backbone: Backbone) -> int:
    """Trainable parameters from the model's config.json alone (no weights): the prompt method's
    formula, plus every backbone parameter when the method trains the backbone (counted on the meta
    device), plus a generous allowance for the task heads."""
    import torch
    from transformers import AutoModel

    from deepprompt.spec import BackboneSpec

    import deepprompt.prompts  # noqa: F401  (registers)

    path, config = backbone.path, backbone.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    spec = BackboneSpec(family=run.model.family, num_layers=config.num_hidden_layers, hidden=config.hidden_size,
                        num_heads=heads, max_positions=getattr(config, "max_position_embeddings", 512),
                        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                        head_size=None if head_dim * heads == config.hidden_size else head_dim)
    method = PROMPTS.get(run.prompt.method, "prompt.method")
    numel = method.num_params(run.prompt, spec) + 2 * spec.hidden * 64  # heads: up to ~64 labels, two of them
    if not method.freezes_backbone:
        try:
            with torch.device("meta"):
                backbone = AutoModel.from_config(config)
            numel += sum(p.numel() for p in backbone.parameters())
        except Exception:  # a family transformers cannot build from its config: bound it by the files
            files = Path(path).iterdir() if Path(path).is_dir() else []
            numel += sum(f.stat().st_size for f in files if f.suffix in WEIGHT_SUFFIXES) // 2
    return numel


def checkpoint_bytes_needed(run: RunConfig, trainable_numel: int) -> tuple[int, int]:
    """(bytes, checkpoints): every kept checkpoint holds fp32 master + two Adam moments of the
    trainable parameters; one more is being written before the oldest goes, and the best dev step's
    is kept besides the newest; plus the two artifacts (last and best)."""
    tr = run.train
    if tr.max_steps is None:  # train.epochs: the step count is unknown until the data is read
        saves = tr.keep_checkpoints + 1 if tr.keep_checkpoints else 1  # keeping all: only the final one is sure
    else:
        saves = tr.max_steps // tr.save_every + 1 if tr.save_every else 1
    kept = min(tr.keep_checkpoints, saves) if tr.keep_checkpoints else saves
    count = kept + 1 + (1 if tr.keep_checkpoints and kept < saves else 0)
    return trainable_numel * FP32 * (3 * count + 2), count


def check_disk(run: RunConfig, backbone: Backbone) -> None:
    if not run.train.disk_margin:
        return
    numel = estimate_trainable_numel(run, backbone)
    need_bytes, count = checkpoint_bytes_needed(run, numel)
    need = run.train.disk_margin * need_bytes
    out = Path(run.output_dir)
    probe = next((p for p in (out, *out.absolute().parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    if free < need:
        raise ConfigError(
            f"output_dir: {out} has {_gb(free)} free but needs {_gb(need)} ({run.train.disk_margin:g} x {_gb(need_bytes)} "
            f"for {count} checkpoint(s) of {numel:,} trainable params + the artifact); free space, lower "
            f"train.keep_checkpoints, or set train.disk_margin=0 to skip this check")


def _gb(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------ the collective

def run(run_cfg: RunConfig, ds_config_path: str) -> tuple[Backbone, dict]:
    """Collective: every check above; returns the backbone and the DeepSpeed JSON, each resolved
    once, here (the JSON read once and filled for this world). Raises the same ConfigError on every
    rank."""
    world = comm.world_size()
    mine, ds_raw, backbone = local_report(run_cfg, ds_config_path, world)
    reports = comm.all_gather_object(mine)
    error = disagreement(reports) or first_problem(reports)
    ds = None
    if error is None:  # every rank has the same config now: the same answer everywhere
        try:
            ds = ds_setup.resolve_for_world(ds_raw, run_cfg, backbone.config.hidden_size, ds_config_path)
            ds_setup.record_batch(run_cfg, ds)
        except ConfigError as e:
            error = str(e)
    if error is None:
        verdict = None
        if comm.rank() == 0:
            try:
                check_disk(run_cfg, backbone)
            except DeepPromptError as e:
                verdict = f"{e} (on {mine.where})"
        error = comm.broadcast_object(verdict)
    if error is not None:
        raise ConfigError(error)
    fp = mine.fingerprint
    log.info("preflight ok on %d rank(s): code %s%s, run config %s, ds config %s", world, fp["code"],
             f" (git {fp['git commit']})" if "git commit" in fp else "", fp["run config"], fp["ds config"])
    return backbone, ds
