"""`TaskSpec`: everything medmix needs to know about one task.

The registry that holds them is `registry.py`; the built-in specs are `builtin.py`. The
stream, the trainer, evaluation and serving all read the spec, never a task name.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

MODALITIES = ("text", "cxr", "derm", "mammo", "path", "radiology", "genomics", "polygenic", "volume")
"""The built-in tasks' modalities. A modality only describes a task's inputs (nothing branches
on it), so a task defined in TOML may name its own: any lowercase word (`fundus`, `ecg`)."""
KINDS = ("mcq", "qa", "summarize", "report", "vqa", "classify", "variant", "risk")
"""Closed: a kind decides how prompts are framed, how answers are scored and which metrics apply."""
# kinds whose answer is one of a closed set of options (scored with `score_options`)
OPTION_KINDS = ("mcq", "qa", "classify", "variant", "risk")
# image augmentations a task may allow (`stream.augment = true` applies them while training)
AUGMENTS = ("hflip", "vflip", "crop")
# the metrics `medmix.evaluate.metrics.compute_metrics` knows; the second set needs answer options
METRICS = ("accuracy", "macro_f1", "macro_auc", "auc", "bleu1", "bleu4", "rougeL", "token_f1",
           "clinical_f1_micro", "clinical_f1_macro", "snp_f1", "indel_f1")
OPTION_METRICS = ("macro_f1", "macro_auc", "auc", "snp_f1", "indel_f1")
_MODALITY = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Exemplar:
    """The text-only one-shot example rendered before every prompt of a task."""

    context: dict[str, Any]
    target: str
    num_images: int = 0  # rendered as that many literal `<img>` strings, never as images


@dataclass(frozen=True)
class TaskSpec:
    name: str
    """Short id used in shards, configs and the API (`derm_pad`)."""
    title: str
    """Human name (`PAD-UFES-20 dermatology`)."""
    modality: str
    kind: str
    instruction: str
    """The task's instruction, the first line of every prompt."""
    question: str
    """The question asked when the example's context carries none."""
    exemplar: Exemplar
    metrics: tuple[str, ...]
    mixture_weight: float
    """Med-PaLM M mixture share in percent (0: evaluation only / not in the paper's mixture)."""
    context_fields: tuple[tuple[str, str], ...] = ()
    """(field, label) pairs rendered as `Label: value.` in this order when present."""
    options: tuple[str, ...] = ()
    """Fixed answer options (classification); MCQ examples carry theirs in context["options"]."""
    image_phrase: str = ""
    """How the prompt introduces the image, e.g. `the {view} view X-ray image`; '' = no image."""
    image_defaults: dict[str, str] = field(default_factory=dict)
    """Values for `{placeholders}` of `image_phrase` that an example's context lacks."""
    multi_image: bool = False
    """Examples hold a sequence of images (volume slices) rather than exactly one."""
    source: str = ""
    """The dataset this task stands for, and the paper's train/test sizes."""
    augment: tuple[str, ...] = ()
    """Training-time image augmentations that keep the answer true (subset of AUGMENTS).

    A flip is allowed only where orientation carries no meaning: never for chest X-rays
    (the heart is on the left), full mammograms (laterality is in the prompt) or VQA
    (questions ask about sides)."""

    @property
    def has_image(self) -> bool:
        return bool(self.image_phrase)

    @property
    def has_options(self) -> bool:
        return self.kind in OPTION_KINDS

    def options_for(self, context: dict[str, Any]) -> tuple[str, ...]:
        """The answer options of one example: its own (MCQ) or the task's fixed ones."""
        opts = context.get("options")
        if opts:
            return tuple(str(o) for o in opts)
        return self.options

    def __post_init__(self) -> None:
        if not _MODALITY.match(self.modality):
            raise ValueError(f"task {self.name}: modality {self.modality!r} must be one lowercase word "
                             f"(letters, digits, - or _), e.g. one of {', '.join(MODALITIES)}")
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind {self.kind!r} not in {KINDS}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"task {self.name}: unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
        if not self.metrics:
            raise ValueError(f"task {self.name}: metrics is empty; name at least one of {', '.join(METRICS)}")
        needs = [m for m in self.metrics if m in OPTION_METRICS]
        if needs and not self.has_options:
            raise ValueError(f"task {self.name}: metric {needs[0]!r} needs answer options, which kind "
                             f"{self.kind!r} has not (kinds with options: {', '.join(OPTION_KINDS)})")
        if self.kind == "classify" and len(self.options) < 2:
            raise ValueError(f"task {self.name}: a classify task needs at least two options")
        bad = [a for a in self.augment if a not in AUGMENTS]
        if bad:
            raise ValueError(f"task {self.name}: augment {bad} not in {AUGMENTS}")
        if self.augment and not self.has_image:
            raise ValueError(f"task {self.name}: augment {list(self.augment)} given but the task has no image")
        if self.mixture_weight < 0:
            raise ValueError(f"task {self.name}: mixture_weight must be >= 0")


def spec_to_dict(spec: TaskSpec) -> dict[str, Any]:
    """A spec as JSON-able data (what a store's manifest and an export carry for a task defined
    outside medmix); `spec_from_dict` reads it back."""
    out = asdict(spec)
    out["exemplar"] = asdict(spec.exemplar)
    out["context_fields"] = [list(pair) for pair in spec.context_fields]
    for key in ("metrics", "options", "augment"):
        out[key] = list(out[key])
    return out


def spec_from_dict(data: Mapping[str, Any]) -> TaskSpec:
    """The inverse of `spec_to_dict` (lists back to tuples); ValueError on a bad spec."""
    d = dict(data)
    ex = dict(d.pop("exemplar", None) or {})
    d["exemplar"] = Exemplar(dict(ex.get("context") or {}), str(ex.get("target", "")), int(ex.get("num_images", 0)))
    d["context_fields"] = tuple(tuple(pair) for pair in d.get("context_fields") or ())
    for key in ("metrics", "options", "augment"):
        d[key] = tuple(d.get(key) or ())
    return TaskSpec(**d)


class UnknownTaskError(KeyError):
    def __str__(self) -> str:
        return self.args[0]
