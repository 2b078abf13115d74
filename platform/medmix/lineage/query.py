"""`medmix lineage`: from a model version or a checkpoint back to the shards' ingest sources.

The chain: model version → checkpoint → run → config → mixture → shard digests per task →
ingest sources. Each link is read from what the earlier steps recorded:

- model version tags (`run_id`, `checkpoint`, `step`, `store_digest`; see registry.py);
- the checkpoint's `medmix.json` (step, config, data_state, store_digest, task_digests,
  tokenizer_digest, parent_checkpoint, run_id, metrics) — or, when the directory is gone,
  the run's `checkpoints/step-NNNNNN.json` record;
- the MLflow run (params, dataset inputs, tags) and the store manifest it logged
  (`data/manifest.json`: every shard's sha256 and every ingest source).

    chain = trace("medmix@champion", cfg.lineage)
    print(format_chain(chain))
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medmix.config import flatten
from medmix.lineage import backend, registry
from medmix.lineage.backend import LineageError
from medmix.lineage.config import TrackerConfig
from medmix.lineage.tracker import CHECKPOINT_DIR, MANIFEST_ARTIFACT, TAG_CHECKPOINT, checkpoint_artifact

CHECKPOINT_META = "medmix.json"
# the params `format_chain` shows under "config" (the run holds all of them)
KEY_PARAMS = ("name", "seed", "model.scale", "model.vision_scale", "model.language_scale",
              "model.image_size", "model.num_image_tokens", "model.decoder_path", "train.steps",
              "train.lr", "train.num_workers", "train.grad_accum", "data.root", "tokenizer.path")


@dataclass
class LineageChain:
    """Everything `medmix lineage` found; any link may be missing (see `warnings`)."""

    model: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    """Flattened config (`train.lr` -> value): the checkpoint's, else the run's params."""
    mixture: dict[str, Any] = field(default_factory=dict)
    """The mixture section of the config, plus realised shares logged as `mix/<task>` metrics."""
    datasets: list[dict[str, Any]] = field(default_factory=list)
    """Per task: digest, rows, source, shards (path, rows, sha256)."""
    store_digest: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Ingest sources from the store manifest the run recorded."""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's `medmix.json`; raises LineageError naming the file if unreadable."""
    meta = Path(path) / CHECKPOINT_META
    if not meta.is_file():
        raise LineageError(f"{path} is not a medmix checkpoint: {meta} is missing")
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise LineageError(f"{meta}: not valid JSON ({exc})") from exc


def trace(ref: str | Path, cfg: TrackerConfig | None = None) -> LineageChain:
    """Follow `ref` — a checkpoint directory, `medmix/3`, `medmix@champion` — to its sources."""
    cfg = cfg or TrackerConfig()
    chain = LineageChain()
    meta: dict[str, Any] | None = None
    path = _local(str(ref))
    if path.is_dir():
        meta = read_checkpoint_meta(path)
        chain.checkpoint = _checkpoint_from_meta(path, meta)
        run_id = meta.get("run_id")
        try:
            found = registry.find_versions(cfg, registry.TAG_CHECKPOINT, {str(path), str(path.resolve())})
            if found:
                chain.checkpoint["registered_as"] = [f"{v} ({v.tags.get(registry.TAG_FORMAT, 'medmix-model')})"
                                                     for v in found]
        except LineageError:
            pass  # no store here: _fill_from_run says so
        except Exception as exc:  # noqa: BLE001 - the registry is optional for a checkpoint
            chain.warnings.append(f"could not search the registry: {exc}")
    else:
        model_ref = registry.parse_model_ref(str(ref))
        if model_ref is None:
            raise LineageError(f"{ref!r} is neither a checkpoint directory nor a model reference "
                               f"like medmix/3 or medmix@champion")
        info = registry.get_version(cfg, model_ref.name, model_ref.version or model_ref.alias)
        chain.model = {"ref": str(info), "aliases": list(info.aliases), "source": info.source,
                       "created": _when(info.created), "tags": info.tags}
        run_id = info.tags.get(registry.TAG_RUN_ID) or info.run_id
        ckpt = info.tags.get(registry.TAG_CHECKPOINT, "")
        if ckpt and (_local(ckpt) / CHECKPOINT_META).is_file():
            meta = read_checkpoint_meta(_local(ckpt))
            chain.checkpoint = _checkpoint_from_meta(_local(ckpt), meta)
        elif ckpt:
            chain.warnings.append(f"checkpoint {ckpt} is not readable here; using the run's record of it")
            chain.checkpoint = {"path": ckpt, "step": _int(info.tags.get(registry.TAG_STEP)), "exists": False}
        else:
            chain.warnings.append(f"{info} has no `checkpoint` tag")
    if not run_id:
        chain.warnings.append("no MLflow run id recorded: the chain stops at the checkpoint")
        _fill_from_meta(chain, meta)
        return chain
    _fill_from_run(chain, cfg, run_id, meta)
    return chain


def _checkpoint_from_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {"path": str(path), "step": meta.get("step"), "parent": meta.get("parent_checkpoint"),
            "metrics": meta.get("metrics") or {}, "data_state": meta.get("data_state"),
            "tokenizer_digest": meta.get("tokenizer_digest", ""), "exists": True}


def _fill_from_meta(chain: LineageChain, meta: dict[str, Any] | None) -> None:
    if not meta:
        return
    chain.config = _flatten(meta.get("config") or {})
    chain.mixture = dict((meta.get("config") or {}).get("mixture") or {})
    chain.store_digest = meta.get("store_digest", "")
    chain.datasets = [{"task": t, "digest": d} for t, d in sorted((meta.get("task_digests") or {}).items())]


def _fill_from_run(chain: LineageChain, cfg: TrackerConfig, run_id: str, meta: dict[str, Any] | None) -> None:
    try:
        client = backend.existing_client(cfg)
    except LineageError as exc:   # a copied checkpoint still tells its own part of the story
        chain.warnings.append(str(exc))
        _fill_from_meta(chain, meta)
        return
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001
        if not backend.is_not_found(exc):
            raise
        chain.warnings.append(f"run {run_id} is not in the store at {backend.tracking_uri(cfg)}")
        _fill_from_meta(chain, meta)
        return
    info, data = run.info, run.data
    chain.run = {"run_id": run_id, "name": info.run_name, "status": info.status,
                 "experiment_id": info.experiment_id, "started": _when(info.start_time),
                 "parent_run_id": data.tags.get("mlflow.parentRunId"),
                 "latest_checkpoint": data.tags.get(TAG_CHECKPOINT),
                 # a warm start (train.init_from): the model the run started from
                 "init_from": {k.removeprefix("medmix.init_from").lstrip("_") or "ref": v
                               for k, v in data.tags.items() if k.startswith("medmix.init_from")} or None}
    with tempfile.TemporaryDirectory() as tmp:
        if chain.checkpoint is not None and not chain.checkpoint.get("exists", True):
            record = _artifact_json(client, run_id, checkpoint_artifact(chain.checkpoint["step"] or 0), tmp)
            if record:
                chain.checkpoint.update({"parent": record.get("parent_checkpoint"),
                                         "metrics": record.get("metrics") or {},
                                         "data_state": record.get("data_state")})
        if chain.checkpoint is not None:
            chain.checkpoint["recorded"] = bool(_artifact_exists(client, run_id, CHECKPOINT_DIR,
                                                                 checkpoint_artifact(chain.checkpoint["step"] or 0)))
        manifest = _artifact_json(client, run_id, MANIFEST_ARTIFACT, tmp)

    _fill_from_meta(chain, meta)
    if not chain.config:
        chain.config = dict(data.params)
    if not chain.mixture:
        chain.mixture = {k.split(".", 1)[1]: v for k, v in data.params.items() if k.startswith("mixture.")}
    realised = {k.split("/", 1)[1]: v for k, v in data.metrics.items() if k.startswith(("mix/", "mixture/"))}
    if realised:
        chain.mixture["realised"] = realised

    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    shards_by_task: dict[str, list[dict]] = {}
    for s in (manifest or {}).get("shards", []):
        shards_by_task.setdefault(s["task"], []).append({k: s[k] for k in ("path", "split", "rows", "sha256")})
    digests = {d["task"]: d["digest"] for d in chain.datasets}
    tasks = sorted(set(digests) | set(inputs))
    chain.datasets = []
    for task in tasks:
        entry: dict[str, Any] = {"task": task, "digest": digests.get(task, "")}
        if task in inputs:
            ds = inputs[task].dataset
            profile = json.loads(ds.profile or "{}")
            entry.update(rows=profile.get("rows"), splits=profile.get("splits", {}),
                         source=json.loads(ds.source or "{}").get("uri", ds.source))
            full = profile.get("digest", ds.digest)
            if not entry["digest"]:
                entry["digest"] = full
            elif entry["digest"] != full:
                chain.warnings.append(f"task {task}: checkpoint digest {entry['digest'][:12]} differs from "
                                      f"the run's dataset input {full[:12]}")
        else:
            chain.warnings.append(f"task {task}: in the checkpoint but not among the run's dataset inputs")
        entry["shards"] = shards_by_task.get(task, [])
        chain.datasets.append(entry)
    if manifest:
        chain.store_digest = chain.store_digest or manifest.get("digest", "")
        if chain.store_digest and manifest.get("digest") and chain.store_digest != manifest["digest"]:
            chain.warnings.append(f"store digest {chain.store_digest[:12]} differs from the recorded "
                                  f"manifest's {manifest['digest'][:12]}")
        for src in manifest.get("sources", []):
            tasks_of = sorted({p.split("/", 1)[0] for p in src.get("shards", [])})
            chain.sources.append({**{k: v for k, v in src.items() if k != "shards"}, "tasks": tasks_of})
    else:
        chain.warnings.append(f"run {run_id} recorded no store manifest ({MANIFEST_ARTIFACT}): "
                              f"ingest sources unknown")


def format_chain(chain: LineageChain, shards: bool = False) -> str:
    """The chain as indented text, one section per link; `shards` lists every shard file."""
    out: list[str] = []
    if chain.model:
        m = chain.model
        aliases = f"  aliases: {', '.join(m['aliases'])}" if m["aliases"] else ""
        fmt = (m.get("tags") or {}).get(registry.TAG_FORMAT, "medmix-model")
        out += [f"model       {m['ref']}{aliases}  format {fmt}",
                f"            registered {m['created']}, files {m['source']}"]
    c = chain.checkpoint
    if c:
        out.append(f"checkpoint  {c['path']}  step {c.get('step')}"
                   + ("" if c.get("exists", True) else "  (directory not readable here)"))
        out.append(f"            parent: {c.get('parent') or 'none (trained from scratch)'}")
        if c.get("metrics"):
            out.append(f"            metrics: {_fmt_map(c['metrics'])}")
        if c.get("data_state") is not None:
            out.append(f"            data state: {json.dumps(c['data_state'], sort_keys=True)[:300]}")
        if c.get("tokenizer_digest"):
            out.append(f"            tokenizer digest: {c['tokenizer_digest'][:16]}")
        if c.get("registered_as"):
            out.append(f"            registered as: {', '.join(c['registered_as'])}")
    r = chain.run
    if r:
        out.append(f"run         {r['run_id']}  name {r['name']}  {r['status']}  started {r['started']}")
        if r.get("parent_run_id"):
            out.append(f"            parent run: {r['parent_run_id']}")
        if r.get("init_from"):
            p = r["init_from"]
            out.append(f"            started from: {p.get('ref')}"
                       + "".join(f"  {k} {p[k]}" for k in ("version", "run", "checkpoint") if p.get(k)))
    if chain.config:
        shown = {k: chain.config[k] for k in KEY_PARAMS if k in chain.config and chain.config[k] not in ("", None)}
        out.append(f"config      {_fmt_map(shown)}  ({len(chain.config)} values in all)")
    if chain.mixture:
        mix = {k: v for k, v in chain.mixture.items() if k not in ("realised", "weights")}
        out.append(f"mixture     {_fmt_map(mix)}")
        if chain.mixture.get("weights"):
            out.append(f"            weights: {_fmt_map(_maybe_json(chain.mixture['weights']))}")
        if chain.mixture.get("realised"):
            out.append(f"            realised: {_fmt_map(chain.mixture['realised'])}")
    if chain.datasets:
        out.append(f"shards      store digest {chain.store_digest[:16] or '?'}")
        for d in chain.datasets:
            rows = f"{d['rows']} rows" if d.get("rows") is not None else "rows ?"
            splits = f" ({_fmt_map(d['splits'])})" if d.get("splits") else ""
            out.append(f"            {d['task']:<18} {d['digest'][:16]}  {rows}{splits}"
                       f"  {len(d.get('shards', []))} shards")
            for s in d.get("shards", []) if shards else []:
                out.append(f"              {s['path']}  {s['rows']} rows  sha256 {s['sha256'][:16]}")
    if chain.sources:
        for i, s in enumerate(chain.sources):
            head = "sources     " if i == 0 else "            "
            extra = {k: v for k, v in s.items() if k not in ("kind", "path", "rows", "tasks", "time")}
            out.append(f"{head}{s.get('kind', '?')} {s.get('path', '')}  {s.get('rows', '?')} rows"
                       f"  tasks: {', '.join(s['tasks']) or '?'}  at {s.get('time', '?')}"
                       + (f"  {_fmt_map(extra)}" if extra else ""))
    for w in chain.warnings:
        out.append(f"warning     {w}")
    return "\n".join(out)


# -- helpers ------------------------------------------------------------------------------

def _artifact_json(client, run_id: str, artifact: str, tmp: str) -> dict | None:
    try:
        local = client.download_artifacts(run_id, artifact, tmp)
    except Exception:  # noqa: BLE001 - a missing artifact is a missing link, not a failure
        return None
    try:
        return json.loads(Path(local).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _artifact_exists(client, run_id: str, folder: str, artifact: str) -> bool:
    try:
        return any(f.path == artifact for f in client.list_artifacts(run_id, folder))
    except Exception:  # noqa: BLE001
        return False


def _flatten(node: dict[str, Any]) -> dict[str, Any]:
    return flatten(node)


def _local(path: str) -> Path:
    """A checkpoint reference as a local path (`file://` URIs included; s3:// stays unreadable)."""
    return Path(path[len("file://"):]) if path.startswith("file://") else Path(path)


def _when(ms: int | None) -> str:
    if not ms:
        return "?"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _fmt_map(values: Any) -> str:
    if not isinstance(values, dict):
        return str(values)
    parts = []
    for k, v in values.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        parts.append(f"{k}={v}")
    return " ".join(parts) if parts else "-"
