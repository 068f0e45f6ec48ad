"""MPT-2 stage 2: a fresh run starts its prompt (and, with ``prompt.init_head``, the heads of tasks
the artifact has) from a saved artifact, e.g. a multi-task stage-1 run's ``output_dir/artifact``.

Everything is checked before the backbone loads (method, prompt shape, backbone identity, head
labels), each mismatch as one line. Rank 0 reads the artifact and broadcasts it, so (like
``output_dir``) it need only exist on rank 0's node. The values are copied in fp32 before DeepSpeed
makes its master copy, so the run starts from exactly the saved tensors.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from deepprompt.artifacts import check_backbone, copy_tensors, exported_parameters, load_artifact
from deepprompt.config import RunConfig
from deepprompt.engine import comm
from deepprompt.errors import ConfigError

log = logging.getLogger("deepprompt")

# prompt config keys that decide the prompt's tensors: they must equal the artifact's
SHAPE_KEYS = ("method", "length", "reparam", "reparam_hidden", "layers", "encoder_hidden")


def _load_on_rank0(path: str):
    try:
        return comm.from_rank0(lambda: load_artifact(path))
    except ConfigError as e:  # on every rank
        raise ConfigError(f"prompt.init_from: {e}") from None


def prepare(run: RunConfig, model_path: str, family: str, tasks: list) -> tuple[Callable, dict] | None:
    """Check ``prompt.init_from`` against this run; return ``(init, summary)``: ``init(model)``
    copies the tensors into a built PromptedModel (``ds_setup.build(init=...)``), ``summary`` goes
    into results.json. None when ``prompt.init_from`` is unset. Collective (a broadcast)."""
    if not run.prompt.init_from:
        return None
    artifact = _load_on_rank0(run.prompt.init_from)
    where = f"prompt.init_from: artifact {artifact.path}"
    if run.prompt.method == "finetune" or artifact.method == "finetune":
        raise ConfigError(f"{where} is method {artifact.method!r} and this run {run.prompt.method!r}: only prompt "
                          f"methods (prefix, prompt, ptuning) can start from an artifact's prompt")
    saved = artifact.description["prompt"]
    for key in SHAPE_KEYS:
        if saved.get(key) != getattr(run.prompt, key):
            raise ConfigError(f"{where} has prompt.{key}={saved.get(key)!r} but this run has prompt.{key}="
                              f"{getattr(run.prompt, key)!r}; the prompt must be built the same way")
    check_backbone(artifact, model_path, family)
    prompt_tensors = {k: v for k, v in artifact.tensors.items() if k.startswith("prompt.")}
    head_tensors: dict = {}
    matched: list[str] = []
    if run.prompt.init_head:
        saved_tasks = {t["name"]: t for t in artifact.description["tasks"]}
        for task in tasks:
            if task.name not in saved_tasks:
                continue
            if list(task.labels) != saved_tasks[task.name]["labels"]:
                raise ConfigError(f"prompt.init_head: task {task.name!r} has labels {list(task.labels)} but the head "
                                  f"in {artifact.path} was trained for {saved_tasks[task.name]['labels']}")
            matched.append(task.name)
            prefix = f"heads.{task.name}."
            head_tensors.update({k: v for k, v in artifact.tensors.items() if k.startswith(prefix)})
        if not matched:
            raise ConfigError(f"prompt.init_head: artifact {artifact.path} has heads for "
                              f"{', '.join(saved_tasks)}, none of this run's tasks ({', '.join(t.name for t in tasks)})")
    summary = {"artifact": str(artifact.path), "prompt_tensors": sorted(prompt_tensors), "heads": matched,
               "stage1_tasks": artifact.task_names}

    def init(model) -> None:
        params = exported_parameters(model)
        copy_tensors({k: p for k, p in params.items() if k.startswith("prompt.")}, prompt_tensors, where)
        for name in matched:
            prefix = f"heads.{name}."
            copy_tensors({k: p for k, p in params.items() if k.startswith(prefix)},
                         {k: v for k, v in head_tensors.items() if k.startswith(prefix)}, where)
        log.info("prompt initialised from %s (stage-1 tasks: %s)%s", artifact.path, ", ".join(artifact.task_names),
                 f"; heads of {', '.join(matched)} too" if matched else "")

    return init, summary
