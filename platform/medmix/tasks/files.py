"""Tasks defined in a TOML file: a new task without editing medmix's code.

    # fundus.toml — one [[task]] table per task
    [[task]]
    name = "fundus_dr"                       # lowercase id: shards, configs, the API
    title = "Diabetic retinopathy grading"
    modality = "fundus"                      # any lowercase word (describes the inputs)
    kind = "classify"                        # one of medmix.tasks.KINDS (prompts, scoring)
    instruction = "Grade the diabetic retinopathy in the fundus photograph."
    question = "What is the retinopathy grade?"
    options = ["none", "mild", "moderate", "severe", "proliferative"]
    metrics = ["accuracy", "macro_f1"]
    image_phrase = "the fundus photograph"   # '' for a text-only task
    context_fields = [["age", "Age"]]        # optional: (field, label) rendered before the question
    mixture_weight = 10.0                    # optional: share (%) under the medpalm strategy; 0 (the
                                             #   default) = evaluation only, like PubMedQA
    [task.exemplar]                          # the one-shot example every prompt starts with
    context = { age = "61" }
    target = "moderate"
    num_images = 1

    medmix ingest conversations fundus.json --task fundus_dr --task-file fundus.toml
    medmix tasks --task-file fundus.toml     # check it, see its prompt with --prompt fundus_dr

Where a task defined here travels: `medmix ingest --task-file` registers it and the ingest's
commit writes its spec into the store's manifest; every process that opens the store (the
training driver, Ray Train workers, Ray Data tasks, evaluation actors) registers it from
there, so no node needs the file. An export carries the specs of its tasks in its
`medmix.json`, so `medmix serve` knows them without the store.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Mapping, Sequence

from medmix.options import ConfigError
from medmix.storage import location
from medmix.tasks import registry
from medmix.tasks.builtin import BUILTIN
from medmix.tasks.spec import TaskSpec, spec_from_dict, spec_to_dict

BUILTIN_NAMES = frozenset(spec.name for spec in BUILTIN)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_REQUIRED = ("name", "title", "modality", "kind", "instruction", "exemplar", "metrics")
_FIELDS = {"name", "title", "modality", "kind", "instruction", "question", "exemplar", "metrics",
           "mixture_weight", "context_fields", "options", "image_phrase", "image_defaults", "multi_image",
           "source", "augment"}


def tasks_from_toml(text: str, where: str) -> list[TaskSpec]:
    """Every `[[task]]` table of a TOML document, as specs; ConfigError naming `where`, the
    task and the key for anything wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML ({exc})") from exc
    extra = sorted(set(data) - {"task"})
    if extra:
        raise ConfigError(f"{where}: unknown top-level key {extra[0]!r}; define tasks as [[task]] tables")
    tables = data.get("task")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{where}: no [[task]] table")
    specs, seen = [], set()
    for i, table in enumerate(tables):
        label = f"{where}: task {i + 1}" + (f" ({table.get('name')!r})" if isinstance(table, dict) and
                                            table.get("name") else "")
        spec = _spec(table, label)
        if spec.name in seen:
            raise ConfigError(f"{label}: name {spec.name!r} is defined twice in the file")
        seen.add(spec.name)
        specs.append(spec)
    return specs


def _spec(table: Any, label: str) -> TaskSpec:
    if not isinstance(table, dict):
        raise ConfigError(f"{label}: must be a table")
    missing = [k for k in _REQUIRED if k not in table]
    if missing:
        raise ConfigError(f"{label}: missing key {missing[0]!r} (required: {', '.join(_REQUIRED)})")
    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise ConfigError(f"{label}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(_FIELDS))}")
    name = table["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{label}: name {name!r} must be a lowercase identifier (letters, digits, _; "
                          f"at most 48 characters)")
    if name in BUILTIN_NAMES:
        raise ConfigError(f"{label}: {name!r} is a built-in task; give the new task its own name")
    ex = table["exemplar"]
    if not isinstance(ex, dict) or "target" not in ex or not isinstance(ex.get("context", {}), dict):
        raise ConfigError(f"{label}: exemplar must be a table with target (and a context table)")
    for key in ("metrics", "options", "augment"):
        if key in table and not (isinstance(table[key], list) and all(isinstance(v, str) for v in table[key])):
            raise ConfigError(f"{label}: {key} must be a list of strings")
    if "context_fields" in table and not all(isinstance(p, list) and len(p) == 2 for p in table["context_fields"]):
        raise ConfigError(f"{label}: context_fields must be a list of [field, label] pairs")
    data = {"question": "", "mixture_weight": 0.0, **table}
    try:
        return spec_from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def load_task_file(path: str | Path) -> list[TaskSpec]:
    """Read a task file (local path or object-storage URI) into specs, without registering them."""
    loc = location(path)
    if not loc.is_file():
        raise ConfigError(f"task file {loc.uri} does not exist")
    return tasks_from_toml(loc.read_text(), loc.uri)


def register_specs(specs: Sequence[TaskSpec], where: str) -> list[TaskSpec]:
    """Register tasks defined outside medmix. A name registered again with the same definition
    is fine (every store and export re-registers its tasks); a different definition under a
    registered name is an error naming both sources."""
    known_specs, sources = registry._REGISTRY, registry._SOURCES
    for spec in specs:
        if spec.name in BUILTIN_NAMES:
            raise ConfigError(f"{where}: {spec.name!r} is a built-in task and cannot be redefined")
        known = known_specs.get(spec.name)
        if known is not None and known != spec:
            raise ConfigError(f"{where}: task {spec.name!r} differs from the one already registered from "
                              f"{sources.get(spec.name, 'code')}; rename one of them")
    for spec in specs:
        if spec.name not in known_specs:
            known_specs[spec.name] = spec
            sources[spec.name] = where
    return list(specs)


def register_task_file(path: str | Path) -> list[TaskSpec]:
    """`load_task_file` + `register_specs`: the tasks of one file, registered."""
    specs = load_task_file(path)
    return register_specs(specs, str(path))


def register_carried(tasks: Mapping[str, Any] | None, where: str) -> None:
    """Register the task specs a store manifest or an export carries ({name: spec_to_dict})."""
    if not tasks:
        return
    try:
        specs = [spec_from_dict(d) for d in tasks.values()]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: a carried task definition is invalid ({exc})") from exc
    register_specs(specs, where)


def carried(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The specs of those of `names` that are registered but not built in, as a manifest or an
    export carries them (a name nothing registered is left for its user to report)."""
    known = registry._REGISTRY
    return {n: spec_to_dict(known[n]) for n in sorted(set(names)) if n not in BUILTIN_NAMES and n in known}
