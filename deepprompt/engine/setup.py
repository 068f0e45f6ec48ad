"""A run resolved once: the backbone (path, config, family), the tokenizer, the tasks with their
data read, and the DeepSpeed JSON filled for this world. Training (``trainer.py``) and evaluation
(``inference.py``) take a ``ResolvedRun`` and never resolve any of it again; serving resolves its
backbone with the same ``models.loading.resolve_backbone``.

    RunConfig --preflight.run--> Backbone + resolved DeepSpeed JSON (every rank, collective)
              --resolve--> + tokenizer + tasks (every split read and tokenised) = ResolvedRun
"""
from __future__ import annotations

from dataclasses import dataclass

from deepprompt.config import RunConfig
from deepprompt.engine import ds_setup, preflight
from deepprompt.models.loading import Backbone, load_tokenizer, resolve_backbone
from deepprompt.tasks import Task, build_task


@dataclass
class ResolvedRun:
    run: RunConfig
    backbone: Backbone
    """Resolved ``model.path``, its config and its adapter family."""
    tokenizer: object
    tasks: list[Task]
    """The run's tasks, in ``run.task_configs()`` order, their splits read and tokenised."""
    ds_config: dict
    """The DeepSpeed JSON with "auto" filled and the batch arithmetic checked for this world."""
    ds_src: str
    """Where the DeepSpeed JSON came from (named by its errors)."""

    @property
    def model_path(self) -> str:
        return self.backbone.path

    @property
    def family(self) -> str:
        return self.backbone.family_name


def read_tasks(run: RunConfig, tokenizer) -> list[Task]:
    """The run's tasks, every split read and tokenised now, before any weights load: data errors fail fast."""
    tasks = [build_task(cfg, tokenizer) for cfg in run.task_configs()]
    for task in tasks:
        for split in task.splits:
            task.features(split)
    return tasks


def resolve(run: RunConfig, backbone: Backbone, ds: dict, ds_src: str) -> ResolvedRun:
    """A training run from what the start-up checks resolved (``preflight.run``: the backbone and
    the DeepSpeed JSON): its tokenizer and tasks, every split read."""
    tokenizer = load_tokenizer(backbone)
    return ResolvedRun(run, backbone, tokenizer, read_tasks(run, tokenizer), ds, ds_src)


def for_evaluation(run: RunConfig, ds_config_path: str, check=None,
                   splits: tuple[str, ...] = ()) -> ResolvedRun:
    """Collective: a run rebuilt from an artifact, resolved for evaluation (no preflight: nothing is
    written but the results). ``check(backbone, task)`` runs before any data or weights load and may
    refuse them; ``splits`` (none: every split but train) are read and tokenised."""
    preflight.check_names(run)
    backbone = resolve_backbone(run.model.path, run.model.family)
    tokenizer = load_tokenizer(backbone)
    task = build_task(run.task, tokenizer)
    if check is not None:
        check(backbone, task)
    for split in splits or tuple(s for s in task.splits if s != "train"):
        task.features(split)
    ds = ds_setup.resolve_for_world(ds_setup.read_ds_config(ds_config_path), run, backbone.config.hidden_size,
                                    ds_config_path)
    return ResolvedRun(run, backbone, tokenizer, [task], ds, ds_config_path)


def build(resolved: ResolvedRun, run: RunConfig | None = None, init=None) -> ds_setup.Built:
    """The DeepSpeed engine of a resolved run (``run``: the same run with its length resolved)."""
    return ds_setup.build(run or resolved.run, resolved.ds_config, resolved.tasks, resolved.backbone, init=init)


def build_for(run: RunConfig, ds_config_path: str, tasks: list, backbone: Backbone | None = None,
              init=None) -> ds_setup.Built:
    """Collective: the engine for tools and tests that bring their own tasks (or stand-ins with
    ``name``, ``head``, ``labels``, ``cfg``): the backbone and the DeepSpeed JSON resolved once, here."""
    backbone = backbone or resolve_backbone(run.model.path, run.model.family)
    ds = ds_setup.resolve_for_world(ds_setup.read_ds_config(ds_config_path), run, backbone.config.hidden_size,
                                    ds_config_path)
    return ds_setup.build(run, ds, tasks, backbone, init=init)
