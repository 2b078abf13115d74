"""What `--model` names -> the export directories a Serve app loads, with ids and lineage.

    entries = resolve_models(["medmix@champion", "exports/debug-20"], cfg)
    entries[0].id        # "medmix/3"  (registry versions keep their registry name)
    entries[1].id        # "export-1a2b3c4d5e6f"  (a plain export: its weights' digest)

A `--model` is a registry reference (`medmix@champion`, `medmix/3`, `models:/medmix/3`,
resolved with `medmix.lineage.registry.resolve_model_uri`), an export directory (written by
`medmix export`), or a training checkpoint — a `step-NNNNNN` directory or a run directory
(its latest step) — which is exported first into `<lineage.root>/exports/serve-...` and
served from there. Each served model answers to its id and its aliases (what was given,
the alias `champion`, the bare version number), which is what the `X-Medmix-Model` header
and the `model` request field may name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medmix.lineage.config import TrackerConfig

LINEAGE_KEYS = ("run_id", "step", "checkpoint", "parent_checkpoint", "store_digest", "task_digests",
                "tokenizer_digest", "metrics")


@dataclass
class ModelEntry:
    """One served model version."""

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

    def names(self) -> list[str]:
        return [self.id, *self.aliases]

    def describe(self) -> dict[str, Any]:
        """GET /v1/models: settings from config.json, lineage from medmix.json."""
        path = Path(self.path)
        config = json.loads((path / "config.json").read_text())
        meta = config.get("meta") or {}
        lineage = None
        if (path / "medmix.json").is_file():
            data = json.loads((path / "medmix.json").read_text())
            lineage = {k: data.get(k) for k in LINEAGE_KEYS if data.get(k) is not None}
            cfg = data.get("config") or {}
            lineage["run_name"] = cfg.get("name")
            lineage["scale"] = (cfg.get("model") or {}).get("scale")
            lineage["mixture"] = (cfg.get("mixture") or {}).get("weights") or None
        return {"id": self.id, "aliases": list(self.aliases), "version": self.version, "digest": self.digest,
                "source": self.source, "params": config.get("params"), "image_size": meta.get("image_size"),
                "num_image_tokens": meta.get("num_image_tokens"), "max_seq_len": meta.get("max_seq_len"),
                "lineage": lineage}


def weights_digest(export_dir: str | Path) -> str:
    h = hashlib.sha256()
    with open(Path(export_dir) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def is_export(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def is_checkpoint(path: Path) -> bool:
    return (path / "medmix.json").is_file() or any(path.glob("step-*/medmix.json"))


def export_for_serving(path: Path, lineage_root: str) -> Path:
    """Export a checkpoint (or a run directory's latest) once; reuse the export after that."""
    from medmix.train.checkpoint import latest_checkpoint
    from medmix.train.checkpoint import read_meta
    from medmix.train.export import export_checkpoint
    ckpt = latest_checkpoint(path).resolve()
    meta = read_meta(ckpt)
    name = (meta.get("config") or {}).get("name") or ckpt.parent.name
    out = Path(lineage_root) / "exports" / f"serve-{name}-step{meta['step']}"
    done = out / "medmix.json"
    if is_export(out) and done.is_file() and json.loads(done.read_text()).get("checkpoint") == str(ckpt):
        return out
    return export_checkpoint(ckpt, out)


def resolve_model(spec: str, lineage_cfg: TrackerConfig) -> ModelEntry:
    """One `--model` value -> a ModelEntry (downloading or exporting as needed)."""
    from medmix.lineage.registry import get_version, parse_model_ref, resolve_model_uri
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"--model {spec}: a file; give an export directory, a checkpoint "
                                    f"directory or a registry reference like medmix@champion")
        if not is_export(path):
            if not is_checkpoint(path):
                raise FileNotFoundError(f"--model {spec}: neither an export (config.json + model.safetensors) "
                                        f"nor a training checkpoint (medmix.json)")
            path = export_for_serving(path, lineage_cfg.root)
        digest = weights_digest(path)
        return ModelEntry(id=f"export-{digest[:12]}", path=str(path.resolve()), source=spec, digest=digest,
                          aliases=[spec] if spec != f"export-{digest[:12]}" else [])
    ref = parse_model_ref(spec)
    if ref is None:
        raise FileNotFoundError(f"--model {spec}: no such directory, and not a registry reference like "
                                f"medmix@champion or medmix/3")
    info = get_version(lineage_cfg, ref.name, ref.version or ref.alias)
    local = resolve_model_uri(spec, lineage_cfg)
    if not is_export(local):
        raise FileNotFoundError(f"--model {spec}: registry version {info} at {local} is not a medmix export "
                                f"(no config.json + model.safetensors)")
    aliases = [spec, *(f"{info.name}@{a}" for a in info.aliases), *info.aliases, info.version]
    return ModelEntry(id=f"{info.name}/{info.version}", path=str(Path(local).resolve()), source=spec,
                      digest=weights_digest(local), version=info.version,
                      aliases=[a for a in dict.fromkeys(aliases) if a != f"{info.name}/{info.version}"])


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


def local_path(entry: ModelEntry, lineage_cfg: TrackerConfig | None = None) -> Path:
    """The entry's export directory on this node: as resolved, or fetched again from the
    registry (replicas on another node of a cluster without shared storage)."""
    path = Path(entry.path)
    if is_export(path) or entry.version is None:
        return path
    from medmix.lineage.registry import resolve_model_uri
    return resolve_model_uri(f"models:/{entry.id}", lineage_cfg)
