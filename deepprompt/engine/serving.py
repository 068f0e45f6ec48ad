"""Raw inputs -> predictions for one or several artifacts made on the same backbone.

One process, no DeepSpeed (inference of a frozen backbone fits one device). With several
artifacts the backbone is loaded once and every batch may mix tasks: each example gets its own
task's prefix (``prompts/multi.py``: padded to the longest, masked per example and layer) and its
own head, in ONE backbone forward.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from deepprompt.artifacts import Artifact, check_backbone, copy_tensors
from deepprompt.config import PromptConfig, TaskConfig, from_dict
from deepprompt.config.sections import without_legacy_defaults
from deepprompt.data.files import iter_jsonl
from deepprompt.errors import ConfigError, DataError
from deepprompt.models.assembly import HeadSpec, assemble
from deepprompt.models.loading import load_tokenizer, resolve_backbone
from deepprompt.models.prompted_model import PromptedModel
from deepprompt.prompts import MultiPrompt
from deepprompt.registry import BACKBONES, PROMPTS, TASKS
from deepprompt.tasks import Task, build_task

log = logging.getLogger("deepprompt")


@dataclass
class Server:
    model: PromptedModel
    tasks: dict[str, Task]
    """Task name -> task (tokenisation and predictions); every task has a head in ``model``."""
    device: torch.device


def option_names(task: str) -> set[str]:
    """The ``task.*`` keys of a task's family (``Task.Options``)."""
    return {f.name for f in dataclasses.fields(TASKS.get(task, "task.name").Options)}


def _unique_tasks(artifacts: Sequence[Artifact]) -> None:
    owner: dict[str, Path] = {}
    for a in artifacts:
        for name in a.task_names:
            if name in owner:
                raise ConfigError(f"--artifact: task {name!r} is in both {owner[name]} and {a.path}; task names must "
                                  f"be unique across the artifacts served together")
            owner[name] = a.path


def build_server(artifacts: Sequence[Artifact], model_path: str | None = None, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> Server:
    """Load the backbone once and every artifact's prompt and heads on top of it."""
    import deepprompt.models.backbones  # noqa: F401  (registers the families)

    if not artifacts:
        raise ConfigError("--artifact: give at least one artifact")
    where = parse_device(device)  # before the backbone loads
    for a in artifacts:
        if a.method == "finetune":
            raise ConfigError(f"--artifact: {a.path} is a finetune run: it holds only the heads, not the trained backbone")
    _unique_tasks(artifacts)
    first = artifacts[0].description["backbone"]
    BACKBONES.get(first["family"], "model.family")  # a family this deepprompt does not know: one line
    resolved = resolve_backbone(model_path or first["path"], first["family"])
    path = resolved.path
    for a in artifacts:  # every artifact must have been trained on this very backbone
        check_backbone(a, path, first["family"])
    tokenizer = load_tokenizer(resolved)
    backbone = resolved.family.load_model(path, dtype)
    adapter = resolved.family(backbone)
    spec = adapter.spec()

    prompts, specs, tasks, task_to_prompt = [], [], {}, {}
    for i, a in enumerate(artifacts):
        cfg = from_dict(PromptConfig, a.description["prompt"], "prompt.")
        prompts.append(PROMPTS.get(cfg.method, "prompt.method")(cfg, spec))
        specs += [HeadSpec(t["name"], t["head"], len(t["labels"])) for t in a.description["tasks"]]
        for t in a.description["tasks"]:
            # the task as trained (column names, windows ...), its label list fixed: no data is read
            saved = without_legacy_defaults(t.get("config") or {"name": t["name"], "max_seq_length": t["max_seq_length"]})
            if "labels" in option_names(t["name"]):  # a label set from training data: fix it as trained
                saved["labels"] = t["labels"]
            task = build_task(from_dict(TaskConfig, saved, "task."), tokenizer)
            if list(task.labels) != t["labels"]:
                raise ConfigError(f"--artifact: {a.path}: the labels of task {t['name']!r} differ from this "
                                  f"deepprompt's ({task.labels} vs {t['labels']})")
            tasks[t["name"]], task_to_prompt[t["name"]] = task, i
    prompt = prompts[0] if len(prompts) == 1 else MultiPrompt(prompts, task_to_prompt)
    model = assemble(backbone, adapter, prompt, specs)
    for a, own in zip(artifacts, prompts):  # each artifact's trained prompt and heads
        params = {f"prompt.{n}": p for n, p in own.named_parameters()}
        params.update({f"heads.{t['name']}.{n}": p for t in a.description["tasks"]
                       for n, p in model.heads[t["name"]].named_parameters()})
        copy_tensors(params, a.tensors, str(a.path))
    model = model.to(device=where, dtype=dtype).eval()
    return Server(model=model, tasks=tasks, device=where)


def parse_device(name: str) -> torch.device:
    """``--device`` as a torch device that is there: a misspelt one, or CUDA where there is none
    (or not that many), is one line, not torch's error from deep inside ``model.to``."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device: {name!r} is not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"--device: {name} is not here ({torch.cuda.device_count()} CUDA device(s) visible)")
    return device


class InputLine(dict):
    """One object of the input file; ``where`` (``file:line``) is kept beside its fields, so that a
    field of the user's is never taken for ours, nor dropped from the output."""

    where: str

    def __init__(self, where: str, fields: dict):
        super().__init__(fields)
        self.where = where


def read_jsonl(path: str | Path) -> list[dict]:
    """The prediction input: one JSON object per line, in order. Line N of the predictions answers
    line N of the input, so a blank line between objects (which would shift every later answer) and
    a file without any object are one line naming the file; blank lines at the end are fine."""
    if Path(path).is_dir():
        raise DataError(f"--input: {path} is a directory, expected a JSONL file")
    if not Path(path).exists():
        raise DataError(f"--input: {path} does not exist")
    return [InputLine(where, rec) for where, rec in iter_jsonl(Path(path), blank_lines=False)]


@torch.no_grad()
def predict(server: Server, records: Sequence[dict], batch_size: int = 32) -> list[dict]:
    """One output per record, in order: the record plus its task's prediction (token tasks:
    ``words`` and ``tags``, one tag per word; QA: ``answer``, ``answer_start``, ``score``). A record
    may give several features (QA windows); batches mix tasks freely."""
    feats = []
    wheres = [getattr(rec, "where", f"input:{i + 1}") for i, rec in enumerate(records)]
    for i, (rec, where) in enumerate(zip(records, wheres)):
        name = rec.get("task")
        if not isinstance(name, str) or name not in server.tasks:
            said = "no \"task\" field" if name is None else f"task {name!r} is not served"
            raise DataError(f"{where}: {said} (served: {', '.join(sorted(server.tasks))})")
        feats += [{"id": 0, **feat, "input": i} for feat in server.tasks[name].raw_features(rec, where)]
    _log_cut(server, records, wheres, feats)
    collate = next(iter(server.tasks.values())).collate  # one backbone, one tokenizer: any task pads alike
    per_record: list[list[dict]] = [[] for _ in records]
    words: dict[int, list[str]] = {}
    generative = [f for f in feats if server.tasks[records[f["input"]]["task"]].generates]
    _generate_mixed(server, records, generative, batch_size, per_record)
    feats = [f for f in feats if not server.tasks[records[f["input"]]["task"]].generates]
    for start in range(0, len(feats), batch_size):
        chunk = feats[start:start + batch_size]
        names = [records[f["input"]]["task"] for f in chunk]
        batch = {k: v.to(server.device) for k, v in collate(chunk).items()}
        logits = server.model(batch, names).logits  # per-example rows
        for name in dict.fromkeys(names):
            rows = [j for j, t in enumerate(names) if t == name]
            group = [chunk[j] for j in rows]
            preds = server.tasks[name].predict(torch.stack([logits[j] for j in rows]).float().cpu(), group)
            for feat, pred in zip(group, preds):
                per_record[feat["input"]].append(pred)
                if "words" in feat:
                    words[feat["input"]] = feat["words"]
    out, replaced = [], {}
    for i, rec in enumerate(records):
        row = dict(rec)
        if i in words:
            row["words"] = words[i]  # the input's own words, or its text split
        prediction = server.tasks[rec["task"]].raw_prediction(rec, per_record[i])
        for key in prediction.keys() & rec.keys():  # e.g. a gold "label": the prediction takes its place
            replaced.setdefault(key, []).append(i)
        out.append({**row, **prediction})
    for key, rows in sorted(replaced.items()):
        log.warning("%d of %d inputs have a field %r, where the prediction goes: the output holds the prediction "
                    "(line N of the output answers line N of the input; first: %s)", len(rows), len(records), key,
                    wheres[rows[0]])
    return out


def _log_cut(server: Server, records: Sequence[dict], wheres: list[str], feats: list[dict]) -> None:
    """One warning per task: how many inputs were longer than its limits, what they lost, the first."""
    cut: dict[str, list[int]] = {}
    for i in dict.fromkeys(f["input"] for f in feats if server.tasks[records[f["input"]]["task"]].input_cut(f)):
        cut.setdefault(records[i]["task"], []).append(i)  # an input once, however many of its windows were cut
    for name, rows in cut.items():
        total = sum(r["task"] == name for r in records)
        log.warning("%s: %d of %d inputs are too long: %s (first: %s)", name, len(rows), total,
                    server.tasks[name].cut_effect(), wheres[rows[0]])


def _generate_mixed(server: Server, records: Sequence[dict], feats: list[dict], batch_size: int,
                    per_record: list[list[dict]]) -> None:
    """Generative tasks' features: batches that mix tasks (each example with its own prefix, in one
    forward per step), grouped by decoding options (greedy/sampling settings); a batch runs to the
    longest ``max_new_tokens`` among its tasks and each example keeps its own task's."""
    from deepprompt.engine.generate import generate

    def name(f):
        return records[f["input"]]["task"]

    groups: dict[tuple, list[dict]] = {}
    for f in feats:
        opts = server.tasks[name(f)].generation_options()
        groups.setdefault(tuple(sorted((k, v) for k, v in opts.items() if k != "max_new_tokens")), []).append(f)
    for key, group in groups.items():
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            names = [name(f) for f in chunk]
            limits = [server.tasks[n].generation_options()["max_new_tokens"] for n in names]
            out = generate(server.model, [f["prompt_ids"] for f in chunk], names, max_new_tokens=max(limits),
                           sync=False, **dict(key))
            for f, n, tokens, limit in zip(chunk, names, out, limits):
                per_record[f["input"]] += server.tasks[n].predict([tokens[:limit]], [f])
