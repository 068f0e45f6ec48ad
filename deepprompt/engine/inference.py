"""Evaluate a saved prompt artifact on any world size: rebuild the run from the artifact's JSON,
build the model under DeepSpeed (ZeRO-3 shards the backbone as in training), copy the prompt and
heads in, and score the task's splits with the training loop's own ``evaluate``."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from deepprompt.artifacts import Artifact, apply_artifact, check_backbone, load_artifact
from deepprompt.config import RunConfig, config_from_dict, entry_key, flatten, parse_overrides
from deepprompt.config.sections import without_legacy_defaults
from deepprompt.engine import comm, preflight, setup
from deepprompt.engine.evaluate import evaluate
from deepprompt.errors import ConfigError
from deepprompt.fileio import atomic_write
from deepprompt.tasks import Task

log = logging.getLogger("deepprompt")
RESULTS_FILE = "eval_results.json"


def run_config_from_artifact(artifact: Artifact, overrides: list[str] | None = None) -> RunConfig:
    """The run config the artifact was trained with, updated by dotted ``key=value`` overrides
    (e.g. ``task.data_dir=...`` for data elsewhere, ``model.path=...`` for a moved backbone).
    A multi-task run's artifact is evaluated on one of its tasks, chosen with ``task.name=``: that
    task's own ``tasks[i]`` section becomes ``task`` (the run's ``task`` section is only the shared
    defaults; scoring with it read the default data and lengths, not the ones the head trained on)."""
    run = dict(artifact.description["run"])
    if isinstance(run.get("task"), dict):  # written before the family keys moved to the task classes?
        run["task"] = without_legacy_defaults(run["task"])
    entries = run.get("tasks")
    if isinstance(entries, list) and entries:
        names = [e.get("name") if isinstance(e, dict) else None for e in entries]
        tree = parse_overrides(overrides or [])
        chosen = (tree.get("task") or {}).get("name")
        stray = [k for k in flatten(tree) if k.startswith("tasks.")]  # tasks.<name or index>.key=value
        if stray:
            raise ConfigError(f"{stray[0]}: the chosen task is rebuilt as the run's one task: "
                              f"write task.{entry_key(stray[0])}=... (with task.name=<name>)")
        if chosen not in names:
            got = f"task.name={chosen} is not one of them" if chosen is not None else "choose one with task.name=<name>"
            raise ConfigError(f"task.name: artifact {artifact.path} was trained on {len(names)} tasks "
                              f"({', '.join(map(str, names))}): {got}")
        run["task"], run["tasks"] = without_legacy_defaults(entries[names.index(chosen)]), None
        run.pop("mixer", None)  # the mixture of several tasks (its weights name them all) means nothing for one
    return config_from_dict(run, overrides)


def check_task(artifact: Artifact, task: Task) -> None:
    """The rebuilt task must be one the artifact has a head for, with the same label list."""
    saved = {t["name"]: t for t in artifact.description["tasks"]}
    if task.name not in saved:
        raise ConfigError(f"task.name: artifact {artifact.path} has no head for task {task.name!r} "
                          f"(it has {', '.join(saved)})")
    if list(task.labels) != saved[task.name]["labels"]:
        raise ConfigError(f"task.name: the labels of task {task.name!r} ({task.labels}) differ from the "
                          f"artifact's ({saved[task.name]['labels']})")


def evaluate_artifact(artifact_path: str, ds_config_path: str, overrides: list[str] | None = None,
                      splits: tuple[str, ...] = ()) -> dict:
    """Metrics of the artifact on ``splits`` (none = every split of its task but train); rank 0
    writes ``<output_dir>/eval_results.json``."""
    from deepprompt.cli import setup_logging

    setup_logging(int(os.environ.get("RANK", "0")))
    comm.init_distributed()
    started = time.time()
    artifact = load_artifact(artifact_path)
    if artifact.method == "finetune":
        raise ConfigError(f"--artifact: {artifact.path} is a finetune run: it holds only the heads, not the trained "
                          f"backbone, so it cannot be evaluated on its own")
    run = run_config_from_artifact(artifact, overrides)
    # on every rank, before any data or weights load (it was checked only when the results were written)
    preflight.check_output_dir(run.output_dir, files=(RESULTS_FILE,))
    world, rank = comm.world_size(), comm.rank()
    # no optimizer step is taken: make the batch arithmetic fit any world size
    run.train.batch_size = run.train.micro_batch_size * world
    run.train.max_steps, run.train.epochs = 1, None  # nor is a schedule followed (a run by epochs saved null)

    def check(backbone, task) -> None:  # before any data or weights load
        check_backbone(artifact, backbone.path, backbone.family_name)
        check_task(artifact, task)
        wanted = splits or tuple(s for s in task.splits if s != "train")
        unknown = [s for s in wanted if s not in task.splits]
        if unknown or not wanted:
            raise ConfigError(f"--splits: {','.join(unknown) or '(none)'} not among task {task.name}'s splits "
                              f"({', '.join(task.splits)})")

    resolved = setup.for_evaluation(run, ds_config_path, check, splits)
    task = resolved.tasks[0]
    splits = splits or tuple(s for s in task.splits if s != "train")
    built = setup.build(resolved)
    apply_artifact(built.model, artifact, resolved.model_path)
    metrics = {split: evaluate(built.engine, task, split, run.train.eval_batch_size) for split in splits}

    results = {"artifact": str(artifact.path), "task": task.name, "main_metric": task.main_metric,
               "method": artifact.method, "model": run.model.path, "world_size": world,
               "precision": built.precision, "metrics": metrics,
               "num_examples": {split: len(task.features(split)) for split in splits},
               "wall_time_s": time.time() - started}
    if rank == 0:
        out_dir = Path(run.output_dir)
        path = out_dir / RESULTS_FILE
        atomic_write(path, lambda p: p.write_text(json.dumps(results, indent=2) + "\n"))
        for split, m in metrics.items():
            log.info("%s %s | %s", task.name, split, " ".join(f"{k} {v:.2f}" for k, v in m.items()))
        log.info("done in %.0f s | %s", results["wall_time_s"], path)
    comm.barrier()
    comm.shutdown()
    return results
