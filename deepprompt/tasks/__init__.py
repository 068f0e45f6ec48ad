"""Tasks; importing this package registers them all."""
from deepprompt.tasks import custom, generation, glue, ner, qa, srl, superglue  # noqa: F401
from deepprompt.tasks.base import Task, build_task  # noqa: F401
