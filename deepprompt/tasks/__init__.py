"""Tasks; importing this package registers them all."""
from deepprompt.tasks import custom, generation, glue, ner, qa, sentiment, srl, superglue  # noqa: F401
from deepprompt.tasks.base import NoOptions, Task, build_task  # noqa: F401


def option_families() -> list[tuple[str, type]]:
    """(the tasks that share it, options dataclass) for every shipped family with ``task.*`` keys of
    its own, for the generated docs/config.md (a task registered elsewhere, e.g. by a test, is not
    documented here)."""
    from deepprompt.registry import TASKS

    families: dict[type, list[str]] = {}
    for name, cls in TASKS.items():
        if cls.Options is not NoOptions and cls.__module__.startswith("deepprompt."):  # shipped tasks only
            families.setdefault(cls.Options, []).append(name)
    return [(", ".join(names), options) for options, names in families.items()]
