"""Tasks; importing this package registers them all."""
from deepprompt.tasks import ner  # noqa: F401
from deepprompt.tasks import qa  # noqa: F401
from deepprompt.tasks.base import Task, build_task  # noqa: F401
