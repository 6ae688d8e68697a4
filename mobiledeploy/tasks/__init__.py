"""Tasks: one module per task, holding everything that differs between tasks.

A definition's ``task:`` picks one ``Task`` class (``get_task``). The task says what the model's
outputs are (names, canonical shape and layout), how an artifact's outputs are judged (its
metrics and default limits beside the raw-output ones), what the report shows per row and which
Android template family renders its app. Backends stay task-agnostic: they convert a graph and
run it, returning the runtime's output in the artifact's layout; the task turns that into the
canonical layout and judges it.

The registry maps a task name to "module:Class" (as ``backends.registry`` does), so a task's
heavy imports stay lazy and a new task is one module plus one line here.
"""

from __future__ import annotations

from importlib import import_module

from .base import Task

TASKS: dict[str, str] = {
    "image-classification": "mobiledeploy.tasks.classification.task:Classification",
    "semantic-segmentation": "mobiledeploy.tasks.segmentation.task:Segmentation",
    "object-detection": "mobiledeploy.tasks.detection.task:Detection",
    "image-embedding": "mobiledeploy.tasks.embedding.task:Embedding",
}

#: the task of a definition that names none
DEFAULT_TASK = "image-classification"

_cache: dict[str, Task] = {}


def task_name(value) -> str:
    """A task name from a definition, a ``Task`` enum value or a string."""
    if hasattr(value, "task"):
        value = value.task
    return getattr(value, "value", value) or DEFAULT_TASK


def task_modules(value) -> tuple[str, ...]:
    """The modules the task of ``value`` loads: its class's module with its whole task folder
    (``tasks/<name>/``: head, truth files, metrics, decoding, report), and the same for every task
    class it extends. Build keys hash them (``pipeline/keys.py``): the class is loaded by name,
    so no import reaches these modules."""
    from .._modules import folder_modules

    found: dict[str, None] = {}
    for klass in type(get_task(value)).__mro__:
        if isinstance(klass, type) and issubclass(klass, Task) and klass is not Task:
            found.update(dict.fromkeys(folder_modules(klass.__module__, __name__)))
    return tuple(found)


def get_task(value) -> Task:
    """The task of ``value`` (a definition, the definition's enum value or a name)."""
    name = task_name(value)
    if name not in _cache:
        if name not in TASKS:
            from ..errors import UserError

            raise UserError(f"task: unknown task {name!r}; allowed: {', '.join(TASKS)}")
        module, _, cls = TASKS[name].partition(":")
        _cache[name] = getattr(import_module(module), cls)()
    return _cache[name]


def all_tasks() -> list[Task]:
    """Every registered task, in registration order."""
    return [get_task(name) for name in TASKS]


__all__ = ["DEFAULT_TASK", "TASKS", "Task", "all_tasks", "get_task", "task_modules", "task_name"]
