"""What a model reference names -> a local export directory, and what that export says about itself.

    export = resolve("medmix@champion", cfg.lineage)      # or medmix/3, models:/medmix/3, a path
    export.path, export.label, export.version             # .../models/medmix/3, "medmix/3", "medmix/3"
    export.meta.max_seq_len, export.meta.eos_id           # from config.json
    export.run_id, export.step, export.train_config       # from medmix.json (None when absent)

A reference is a registry version (`name@alias`, `name/version`, `models:/name/version`,
fetched with `medmix.lineage.registry.resolve_model_uri`), an export directory (written by
`medmix export` / `save_exported`), a training checkpoint (a `step-NNNNNN` directory with
`medmix.json`) or a run directory (its latest checkpoint). A checkpoint is exported into
`workdir/<run>-step<N>` once; a later resolve of the same checkpoint reuses that export. Any of
these may be an `s3://` URI: an export there is downloaded once into `workdir/s3/<bucket>/<key>`
(only when its config.json is there, which `medmix export` uploads last).

What an export says about itself is read by `export_meta.ExportMeta` (the one reader of
`config.json` and `medmix.json`). This module imports neither torch nor MLflow at module
level: the command line and the serve ingress resolve exports without loading a model.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmix.lineage.registry import TAG_FORMAT, get_version, parse_model_ref, resolve_model_uri
from medmix.model.export_meta import CONFIG_FILE, FORMAT, LINEAGE_FILE, WEIGHTS_FILE, ExportMeta, is_export
from medmix.storage import check_reachable, download, is_uri, local_dir

if TYPE_CHECKING:
    from medmix.lineage.config import TrackerConfig


@dataclass
class Export:
    """A model reference resolved to a local export directory."""

    ref: str
    """What the user said: a path or a registry reference."""
    path: Path
    """The local export directory (absolute)."""
    label: str
    """Short human name: `medmix/3`, `<run>-step20`, or the directory's name."""
    version: str | None
    """The registry version (`medmix/3`) when the reference was one."""
    meta: ExportMeta
    aliases: tuple[str, ...] = ()
    """The registry aliases of `version` (`champion`, ...)."""

    @property
    def run_id(self) -> str | None:
        return self.meta.lineage.run_id if self.meta.lineage else None

    @property
    def checkpoint(self) -> str | None:
        return self.meta.lineage.checkpoint if self.meta.lineage else None

    @property
    def step(self) -> int | None:
        return self.meta.lineage.step if self.meta.lineage else None

    @property
    def train_config(self) -> dict[str, Any] | None:
        return self.meta.train_config


def slug(text: str) -> str:
    """`text` as a safe file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def checkpoint_label(checkpoint: Path, meta: dict[str, Any]) -> str:
    """`<run name>-step<N>`: what an export of the checkpoint with medmix.json `meta` is called."""
    name = (meta.get("config") or {}).get("name") or checkpoint.resolve().parent.name
    return f"{name}-step{meta.get('step')}"


def resolve(ref: str | Path, lineage_cfg: TrackerConfig, workdir: str | Path | None = None) -> Export:
    """The export `ref` names, exporting a checkpoint into `workdir` (default
    `<lineage.root>/exports`) or fetching a registry version as needed.

    Raises FileNotFoundError when `ref` is neither an existing export, checkpoint or run
    directory nor a registry reference, and LineageError for an unknown registry version.
    """
    if is_uri(str(ref)):
        return _from_object_storage(str(ref), lineage_cfg, workdir)
    path = Path(ref).expanduser()
    if not path.exists():
        return _from_registry(str(ref), lineage_cfg)
    if not path.is_dir():
        raise FileNotFoundError(f"{ref}: a file; give an export directory, a checkpoint directory or a "
                                f"registry reference like medmix@champion")
    if is_export(path):
        path = path.resolve()
        return Export(str(ref), path, path.name, None, ExportMeta.read(path))
    from medmix.train.checkpoint import find_latest_checkpoint
    checkpoint = find_latest_checkpoint(path)
    if checkpoint is None:
        raise FileNotFoundError(f"{ref}: neither an export ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a training "
                                f"checkpoint (a step-NNNNNN directory with {LINEAGE_FILE}, or a run directory "
                                f"holding them)")
    into = Path(workdir) if workdir is not None else local_dir(lineage_cfg.root, "exports")
    return _from_checkpoint(str(ref), checkpoint.resolve(), into)


def _from_object_storage(ref: str, lineage_cfg: TrackerConfig, workdir: str | Path | None) -> Export:
    """An export (or a checkpoint / run directory) at an s3:// URI, downloaded once into
    `<workdir or lineage.root/exports>/s3/<bucket>/<key>`: serving and evaluation read local files."""
    loc = check_reachable(ref)
    into = Path(workdir) if workdir is not None else local_dir(lineage_cfg.root, "exports")
    local = into / "s3" / loc.path.strip("/")
    if not is_export(local):
        if loc.join(CONFIG_FILE).is_file() and loc.join(WEIGHTS_FILE).is_file():
            partial = local.with_name(local.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            download(loc, partial)
            shutil.rmtree(local, ignore_errors=True)
            partial.rename(local)
        else:
            from medmix.train.checkpoint import find_latest_checkpoint
            checkpoint = find_latest_checkpoint(loc.uri)
            if checkpoint is None:
                raise FileNotFoundError(f"{ref}: neither an export ({CONFIG_FILE} + {WEIGHTS_FILE}) nor a "
                                        f"training checkpoint or run directory on object storage")
            return _from_checkpoint(ref, checkpoint, into)   # export_checkpoint reads the URI
    return Export(ref, local.resolve(), slug(loc.path), None, ExportMeta.read(local))


def _from_checkpoint(ref: str, checkpoint: Path | str, workdir: Path) -> Export:
    """The checkpoint's export in `workdir`: the one already there from this checkpoint, else a new one."""
    from medmix.train.checkpoint import read_meta
    from medmix.train.export import export_checkpoint
    label = checkpoint_label(checkpoint, read_meta(checkpoint))
    out = workdir / slug(label)
    if is_export(out):
        meta = ExportMeta.read(out)
        if meta.lineage is not None and meta.lineage.checkpoint == str(checkpoint):
            return Export(ref, out.resolve(), label, None, meta)
    export_checkpoint(checkpoint, out)
    return Export(ref, out.resolve(), label, None, ExportMeta.read(out))


def _from_registry(ref: str, lineage_cfg: TrackerConfig) -> Export:
    """A registry version's export, downloaded once under `<lineage.root>/models`."""
    parsed = parse_model_ref(ref)
    if parsed is None:
        raise FileNotFoundError(f"{ref}: no such directory, and not a registry reference like "
                                f"medmix@champion or medmix/3")
    info = get_version(lineage_cfg, parsed.name, parsed.version or parsed.alias)
    fmt = info.tags.get(TAG_FORMAT, FORMAT)
    if fmt != FORMAT:
        raise FileNotFoundError(f"{ref}: registry version {info} is a {fmt!r} export (tag {TAG_FORMAT}), for "
                                f"transformers/peft; medmix loads {FORMAT!r} versions (`medmix export` without "
                                f"--format)")
    local = resolve_model_uri(f"models:/{info}", lineage_cfg)  # this version, even if the alias moves
    if not is_export(local):
        raise FileNotFoundError(f"{ref}: registry version {info} at {local} is not a medmix export "
                                f"(no {CONFIG_FILE} + {WEIGHTS_FILE})")
    return Export(ref, local.resolve(), str(info), str(info), ExportMeta.read(local), tuple(info.aliases))
