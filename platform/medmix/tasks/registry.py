"""The task registry: name -> `TaskSpec`, holding the built-ins from the start.

A user adds a task without touching medmix's code in a TOML file (`medmix.tasks.files`:
`medmix ingest ... --task-file my_tasks.toml`), which the store and exports then carry to every
process; or, in Python, with `register(TaskSpec(...))` in the processes that need it.
"""

from __future__ import annotations

from medmix.tasks.builtin import BUILTIN
from medmix.tasks.spec import TaskSpec, UnknownTaskError

_REGISTRY: dict[str, TaskSpec] = {spec.name: spec for spec in BUILTIN}
_SOURCES: dict[str, str] = {}
"""Where each task registered from a file, store or export came from (for error messages)."""


def register(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; registered tasks: "
                               f"{', '.join(sorted(_REGISTRY))}") from None


def all_tasks() -> list[TaskSpec]:
    return list(_REGISTRY.values())


def task_names() -> list[str]:
    return [t.name for t in all_tasks()]
