"""Tasks: one `TaskSpec` per task (spec.py), the built-in specs (builtin.py), the registry
(registry.py) and deterministic prompt rendering (prompts.py)."""

from medmix.tasks.prompts import (IMAGE_PLACEHOLDER, format_options, prompt_turns, render_prompt,
                                  render_target)
from medmix.tasks.registry import all_tasks, get_task, register, task_names
from medmix.tasks.spec import KINDS, MODALITIES, OPTION_KINDS, Exemplar, TaskSpec, UnknownTaskError

__all__ = ["IMAGE_PLACEHOLDER", "KINDS", "MODALITIES", "OPTION_KINDS", "Exemplar", "TaskSpec",
           "UnknownTaskError", "all_tasks", "format_options", "get_task", "prompt_turns", "register",
           "render_prompt", "render_target", "task_names"]
