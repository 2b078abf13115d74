"""Deterministic prompt rendering: instruction, text-only one-shot exemplar, then the example.

    Instructions: <instruction>
    Given the PA view X-ray image <img>.          <- exemplar: the literal text `<img>`
    Reason for the study: cough.
    Q: Describe the findings ... A: The heart size is normal. ...
    Given the AP view X-ray image <img>.          <- the example: its image goes here
    Reason for the study: fever.
    Q: Describe the findings ... A:

The rendered prompt always ends with "A:"; training appends " " + target. Both the
exemplar's and the example's image placeholders are the string `<img>`; the encoder treats
the last `num_images` of them as real image slots and the earlier ones as text, so the
exemplar stays text-only as in Med-PaLM M.
"""

from __future__ import annotations

import string
from typing import Any

from medmix.tasks.spec import TaskSpec

IMAGE_PLACEHOLDER = "<img>"
LETTERS = string.ascii_uppercase


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def format_options(options: tuple[str, ...] | list[str]) -> str:
    return " ".join(f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options))


def _fill(template: str, context: dict[str, Any], defaults: dict[str, str], task: str) -> str:
    values = _Defaults({**defaults, **{k: v for k, v in context.items() if v not in (None, "")}})
    try:
        return template.format_map(values)
    except KeyError as exc:
        raise ValueError(f"task {task}: context lacks field {exc.args[0]!r} needed by "
                         f"{template!r}") from None


def _value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip().rstrip(".")


def render_example(spec: TaskSpec, context: dict[str, Any], num_images: int) -> str:
    """One example block, ending in "A:" (no target)."""
    lines = []
    if spec.has_image:
        phrase = _fill(spec.image_phrase, context, spec.image_defaults, spec.name)
        slots = " ".join([IMAGE_PLACEHOLDER] * max(num_images, 1 if not spec.multi_image else num_images))
        lines.append(f"Given {phrase} {slots}.")
    for key, label in spec.context_fields:
        if context.get(key) not in (None, ""):
            lines.append(f"{label}: {_value(context[key])}.")
    question = context.get("question") or _fill(spec.question, context, {}, spec.name)
    q = f"Q: {question}" if question else "Q:"
    options = spec.options_for(context) if spec.has_options else ()
    if options:
        q += f" {format_options(options)}"
    lines.append(q)
    lines.append("A:")
    return "\n".join(lines)


def render_prompt(spec: TaskSpec, context: dict[str, Any], num_images: int | None = None,
                  *, exemplar: bool = True) -> str:
    """The full prompt for one example: instruction, exemplar (with its answer), the example.

    Args:
        num_images: images the example carries (default: 1 for image tasks, 0 otherwise).
        exemplar: include the one-shot exemplar (the paper's framing; on by default).
    """
    num_images = _image_count(spec, num_images)
    parts = [f"Instructions: {spec.instruction}"]
    if exemplar:
        ex = spec.exemplar
        parts.append(render_example(spec, ex.context, ex.num_images) + " " + ex.target)
    parts.append(render_example(spec, context, num_images))
    return "\n".join(parts)


def _image_count(spec: TaskSpec, num_images: int | None) -> int:
    if num_images is None:
        num_images = 1 if spec.has_image else 0
    if spec.has_image and not spec.multi_image and num_images != 1:
        raise ValueError(f"task {spec.name} takes exactly one image per example, got {num_images}")
    if not spec.has_image and num_images:
        raise ValueError(f"task {spec.name} is text-only, got {num_images} image(s)")
    return num_images


def prompt_turns(spec: TaskSpec, context: dict[str, Any], num_images: int | None = None,
                 *, exemplar: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """The same prompt as chat turns, for a decoder with a chat template: (system, turns).

    The system message is the instruction; the exemplar is a user turn and its answer an
    assistant turn; the example is the last user turn. Each block is `render_example`'s without
    its closing "A:" (the assistant's turn takes its place).
    """
    num_images = _image_count(spec, num_images)
    turns: list[tuple[str, str]] = []
    if exemplar:
        ex = spec.exemplar
        turns += [("user", _question_block(spec, ex.context, ex.num_images)), ("assistant", ex.target.strip())]
    turns.append(("user", _question_block(spec, context, num_images)))
    return spec.instruction, turns


def _question_block(spec: TaskSpec, context: dict[str, Any], num_images: int) -> str:
    block = render_example(spec, context, num_images)
    return block[:-len("A:")].rstrip("\n") if block.endswith("A:") else block


def render_target(spec: TaskSpec, target: str) -> str:
    """The text the model learns to produce after "A:" (a leading space joins it to the prompt)."""
    return " " + target.strip()


def exemplar_image_count(spec: TaskSpec, exemplar: bool = True) -> int:
    """How many literal `<img>` strings the exemplar contributes (they stay text)."""
    return spec.exemplar.num_images if (exemplar and spec.has_image) else 0
