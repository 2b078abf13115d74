"""What `--model` names -> the export directories a Serve app loads, with ids and lineage.

    entries = resolve_models(["medmix@champion", "exports/debug-20"], cfg)
    entries[0].id        # "medmix/3"  (registry versions keep their registry name)
    entries[1].id        # "export-1a2b3c4d5e6f"  (a plain export: its weights' digest)

A `--model` is whatever `medmix.model.resolve.resolve` takes: a registry reference
(`medmix@champion`, `medmix/3`, `models:/medmix/3`), an export directory (written by
`medmix export`), or a training checkpoint — a `step-NNNNNN` directory or a run directory
(its latest step) — which is exported once into `<lineage.root>/exports/<run>-step<N>` and
served from there. Each served model answers to its id and its aliases (what was given,
the alias `champion`, the bare version number), which is what the `X-Medmix-Model` header
and the `model` request field may name.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmix.model.export_meta import WEIGHTS_FILE, ExportMeta, is_export
from medmix.model.resolve import Export, resolve

if TYPE_CHECKING:
    from medmix.lineage.config import TrackerConfig


@dataclass
class ModelEntry:
    """One served model version (sent to the Serve replicas as a dict)."""

    id: str
    path: str
    """Local export directory (model.safetensors, config.json, tokenizer.json[, medmix.json])."""
    source: str
    """What `--model` said."""
    digest: str
    """sha256 of model.safetensors."""
    version: str | None = None
    aliases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelEntry":
        return cls(**data)

    @classmethod
    def from_export(cls, export: Export) -> "ModelEntry":
        """A registry version keeps its registry id (`medmix/3`); an export is named by its weights."""
        digest = weights_digest(export.path)
        if export.version is None:
            plain = f"export-{digest[:12]}"
            return cls(id=plain, path=str(export.path), source=export.ref, digest=digest,
                       aliases=[export.ref] if export.ref != plain else [])
        name, _, number = export.version.rpartition("/")
        aliases = [export.ref, *(f"{name}@{a}" for a in export.aliases), *export.aliases, number]
        return cls(id=export.version, path=str(export.path), source=export.ref, digest=digest, version=number,
                   aliases=[a for a in dict.fromkeys(aliases) if a != export.version])

    def names(self) -> list[str]:
        return [self.id, *self.aliases]

    def describe(self) -> dict[str, Any]:
        """GET /v1/models: settings from config.json, lineage from medmix.json."""
        meta = ExportMeta.read(self.path)
        lineage = None
        if meta.lineage is not None:
            lineage = {f.name: getattr(meta.lineage, f.name) for f in fields(meta.lineage)
                       if f.name != "config" and getattr(meta.lineage, f.name) is not None}
            cfg = meta.lineage.config
            lineage["run_name"] = cfg.get("name")
            lineage["scale"] = (cfg.get("model") or {}).get("scale")
            lineage["mixture"] = (cfg.get("mixture") or {}).get("weights") or None
        return {"id": self.id, "aliases": list(self.aliases), "version": self.version, "digest": self.digest,
                "source": self.source, "params": meta.params, "image_size": meta.image_size,
                "num_image_tokens": meta.num_image_tokens, "max_seq_len": meta.max_seq_len,
                "lineage": lineage}


def weights_digest(export_dir: str | Path) -> str:
    """sha256 of the export's weights file."""
    h = hashlib.sha256()
    with open(Path(export_dir) / WEIGHTS_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_model(spec: str, lineage_cfg: TrackerConfig) -> ModelEntry:
    """One `--model` value -> a ModelEntry (downloading or exporting as needed)."""
    return ModelEntry.from_export(resolve(spec, lineage_cfg))


def resolve_models(specs: list[str], lineage_cfg: TrackerConfig) -> list[ModelEntry]:
    """Every `--model`, in order (the first is the default); duplicates merge their aliases."""
    if not specs:
        raise ValueError("no model to serve: give --model medmix@champion, medmix/N, an export or a checkpoint")
    out: dict[str, ModelEntry] = {}
    for spec in specs:
        entry = resolve_model(spec, lineage_cfg)
        if entry.id in out:
            kept = out[entry.id]
            kept.aliases = list(dict.fromkeys(kept.aliases + entry.aliases))
        else:
            out[entry.id] = entry
    # an alias must name one model only: the earlier model keeps it
    taken: set[str] = set(out)
    for entry in out.values():
        entry.aliases = [a for a in entry.aliases if a not in taken or a == entry.id]
        taken.update(entry.aliases)
    return list(out.values())


def local_path(entry: ModelEntry, lineage_cfg: TrackerConfig) -> Path:
    """The entry's export directory on this node: as resolved, or fetched again from the
    registry (replicas on another node of a cluster without shared storage)."""
    path = Path(entry.path)
    if is_export(path) or entry.version is None:
        return path
    return resolve(f"models:/{entry.id}", lineage_cfg).path
