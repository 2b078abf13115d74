"""The shard store: immutable Parquet part files per task/split and a manifest that lists them.

Layout: `<root>/<task>/<split>/part-NNNNN-<sha256[:16]>.parquet` and `<root>/manifest.json`;
the root is a local path or an `s3://bucket/prefix` URI (medmix.storage). A part file is named
by its position and its content, so writing the same rows again (a re-run `medmix synth`)
yields the same names and the same store digest — and a key, once written, is never written
with other bytes. Writers go through a transaction: each part file appears whole (a temporary
name and a rename locally, one PUT on object storage), and the manifest is written last, as one
object, only when the whole transaction succeeds. If anything fails, the new part files are
deleted and the store is exactly as it was; a writer killed before it could clean up leaves
only unlisted keys, and a reader never sees a shard that the manifest does not list.

    store = ShardStore("medmix-data")          # or ShardStore("s3://bucket/medmix-data")
    with store.transaction(source={"kind": "dicom", "path": "scans/"}) as tx:
        tx.add(example)            # many times
    store.verify()                 # sha256 + row count of every listed shard
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from medmix.data.config import StoreConfig
from medmix.data.schema import SCHEMA, SCHEMA_VERSION, Example, RowError, check_example
from medmix.storage import Location, location
from medmix.tasks.files import carried, register_carried

MANIFEST = "manifest.json"


class StoreError(RuntimeError):
    """The store is missing, damaged or inconsistent; the message names the file."""


@dataclass
class ShardInfo:
    path: str          # relative to the store root
    task: str
    split: str
    rows: int
    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


def sha256_file(path: str | os.PathLike | Location) -> str:
    return location(path).sha256()


class ShardStore:
    """A folder (local or object storage) of Parquet shards and the manifest that is the truth
    about them. `root` is the store's URI as every process should see it: an absolute local
    path, or `s3://bucket/prefix`; `loc` is its Location."""

    def __init__(self, root: str | os.PathLike | Location, config: StoreConfig | None = None):
        self.loc = location(root)
        self.root = self.loc.uri
        self.config = config or StoreConfig(root=self.root)

    # -- reading the manifest --------------------------------------------------------------
    @property
    def manifest_path(self) -> Location:
        return self.loc.join(MANIFEST)

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        if not self.exists():
            raise StoreError(f"no shard store at {self.root}: {self.manifest_path} is missing "
                             f"(build one with `medmix synth` or `medmix ingest`)")
        try:
            data = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.manifest_path}: not valid JSON ({exc})") from exc
        if data.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{self.manifest_path}: schema_version {data.get('schema_version')} "
                             f"is not {SCHEMA_VERSION}, the version this medmix reads")
        if data.get("tasks"):   # tasks defined in TOML travel with their rows (medmix.tasks.files)
            register_carried(data["tasks"], self.manifest_path.uri)
        return data

    def shards(self, task: str | None = None, split: str | None = None) -> list[ShardInfo]:
        out = [ShardInfo(**s) for s in self.manifest()["shards"]]
        return [s for s in out if (task is None or s.task == task) and (split is None or s.split == split)]

    def digest(self) -> str:
        return self.manifest()["digest"]

    def task_digest(self, task: str) -> str:
        """Digest of one task's shards: what lineage records as that task's dataset."""
        return _digest([s for s in self.shards(task=task)])

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for s in self.shards():
            out[s.task][s.split] = out[s.task].get(s.split, 0) + s.rows
        return dict(out)

    def tasks(self) -> list[str]:
        return sorted({s.task for s in self.shards()})

    def path(self, shard: ShardInfo | str) -> Location:
        return self.loc.join(shard.path if isinstance(shard, ShardInfo) else shard)

    def read_shard(self, shard: ShardInfo | str, columns: list[str] | None = None) -> pa.Table:
        loc = self.path(shard)
        with loc.open_input() as f:
            return pq.read_table(f, columns=columns)

    def read_table(self, task: str, split: str, columns: list[str] | None = None) -> pa.Table:
        tables = [self.read_shard(s, columns=columns) for s in self.shards(task, split)]
        if not tables:
            return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
        return pa.concat_tables(tables)

    def iter_examples(self, task: str | None = None, split: str | None = None) -> Iterator[Example]:
        for s in self.shards(task, split):
            for row in self.read_shard(s).to_pylist():
                yield Example.from_row(row)

    # -- checking --------------------------------------------------------------------------
    def verify(self, progress: bool = False) -> list[str]:
        """Return one problem per damaged shard (missing, truncated, modified); [] if healthy."""
        problems = []
        shards = self.shards()
        it = shards
        if progress:
            from tqdm import tqdm
            it = tqdm(shards, desc="verify shards", unit="shard")
        for s in it:
            p = self.path(s)
            if not p.is_file():
                problems.append(f"{p}: missing (listed in the manifest with {s.rows} rows)")
                continue
            size = p.size()
            if size != s.bytes:
                problems.append(f"{p}: size {size} bytes, manifest says {s.bytes} "
                                f"({'truncated' if size < s.bytes else 'grown'})")
                continue
            if p.sha256() != s.sha256:
                problems.append(f"{p}: sha256 differs from the manifest (modified after writing)")
                continue
            try:
                with p.open_input() as f:
                    rows = pq.ParquetFile(f).metadata.num_rows
            except Exception as exc:  # noqa: BLE001 - any Parquet decode failure is a damaged shard
                problems.append(f"{p}: unreadable Parquet ({exc})")
                continue
            if rows != s.rows:
                problems.append(f"{p}: {rows} rows, manifest says {s.rows}")
        return problems

    # -- writing ---------------------------------------------------------------------------
    def transaction(self, source: dict | None = None, known_tasks: set[str] | None = None,
                    replace_tasks: set[str] | None = None) -> "Transaction":
        """Open a write transaction. `replace_tasks` drops those tasks' old shards on commit."""
        return Transaction(self, source=source, known_tasks=known_tasks, replace_tasks=replace_tasks)

    def existing_ids(self, task: str) -> set[str]:
        ids: set[str] = set()
        for s in self.shards(task=task) if self.exists() else []:
            ids.update(self.read_shard(s, columns=["example_id"]).column(0).to_pylist())
        return ids


def _digest(shards: list[ShardInfo]) -> str:
    h = hashlib.sha256()
    for s in sorted(shards, key=lambda s: s.path):
        h.update(f"{s.path}\t{s.rows}\t{s.sha256}\n".encode())
    return h.hexdigest()


class Transaction:
    """Buffers rows per (task, split), writes bounded part files, publishes on commit."""

    def __init__(self, store: ShardStore, source: dict | None, known_tasks: set[str] | None,
                 replace_tasks: set[str] | None):
        self.store = store
        self.source = source
        self.known_tasks = known_tasks
        self.replace_tasks = set(replace_tasks or ())
        self._buffers: dict[tuple[str, str], list[dict]] = defaultdict(list)
        self._buffer_bytes: dict[tuple[str, str], int] = defaultdict(int)
        self._written: list[ShardInfo] = []
        self._ids: dict[str, set[str]] = {}
        self._next_part: dict[tuple[str, str], int] = {}
        self._kept: set[str] = set()  # written paths that already existed with these bytes
        self.rows_added = 0

    def __enter__(self) -> "Transaction":
        self.store.loc.mkdirs()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def add(self, ex: Example) -> None:
        check_example(ex, self.known_tasks)
        ids = self._ids.get(ex.task)
        if ids is None:
            ids = set() if ex.task in self.replace_tasks else self.store.existing_ids(ex.task)
            self._ids[ex.task] = ids
        if ex.example_id in ids:
            raise RowError(f"{ex.source}: duplicate example_id {ex.example_id!r} in task {ex.task} "
                           f"(ids must be unique within a task; the store already holds it)")
        ids.add(ex.example_id)
        key = (ex.task, ex.split)
        row = ex.to_row()
        self._buffers[key].append(row)
        self._buffer_bytes[key] += sum(len(b) for b in row["images"]) + len(row["context"]) + len(row["target"])
        self.rows_added += 1
        cfg = self.store.config
        if (len(self._buffers[key]) >= cfg.max_rows_per_shard
                or self._buffer_bytes[key] >= cfg.max_bytes_per_shard):
            self._flush(key)

    def _part_index(self, key: tuple[str, str]) -> int:
        """Replaced tasks number from 0 (content in the name keeps old and new apart);
        appended ones continue after the highest index on disk."""
        if key not in self._next_part:
            folder = self.store.loc.join(key[0], key[1])
            taken = [] if key[0] in self.replace_tasks else \
                [int(p.name.split("-")[1]) for p in folder.children()
                 if p.name.startswith("part-") and p.name.endswith(".parquet")]
            self._next_part[key] = max(taken, default=-1) + 1
        idx = self._next_part[key]
        self._next_part[key] += 1
        return idx

    def _flush(self, key: tuple[str, str]) -> None:
        rows = self._buffers.pop(key, [])
        self._buffer_bytes.pop(key, None)
        if not rows:
            return
        task, split = key
        index = self._part_index(key)
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        sink = pa.BufferOutputStream()  # a part is bounded by max_bytes_per_shard: built in memory
        pq.write_table(table, sink, row_group_size=self.store.config.row_group_rows,
                       compression="zstd", write_statistics=["task", "split", "example_id"])
        data = sink.getvalue().to_pybytes()
        digest = hashlib.sha256(data).hexdigest()
        rel = posixpath.join(task, split, f"part-{index:05d}-{digest[:16]}.parquet")
        final = self.store.path(rel)
        if final.is_file() and final.size() == len(data) and final.sha256() == digest:
            self._kept.add(rel)  # same bytes already in place (maybe listed): leave the key be
        else:
            final.write_bytes(data)  # appears whole: rename locally, one PUT on object storage
        self._written.append(ShardInfo(path=rel, task=task, split=split, rows=len(rows),
                                       sha256=digest, bytes=len(data)))

    def commit(self) -> list[ShardInfo]:
        for key in list(self._buffers):
            self._flush(key)
        old = self.store.manifest() if self.store.exists() else {"shards": [], "sources": []}
        dropped = [s for s in old["shards"] if s["task"] in self.replace_tasks]
        shards = [s for s in old["shards"] if s["task"] not in self.replace_tasks]
        shards += [s.to_json() for s in self._written]
        sources = [src for src in old.get("sources", []) if src.get("task") not in self.replace_tasks
                   or not self.replace_tasks]
        if self.source is not None:
            sources.append({**self.source, "rows": self.rows_added,
                            "shards": [s.path for s in self._written],
                            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "shards": sorted(shards, key=lambda s: s["path"]),
            "sources": sources,
            "digest": _digest([ShardInfo(**s) for s in shards]),
        }
        tasks = {**old.get("tasks", {}), **carried([s["task"] for s in shards])}
        if tasks:   # the definitions of tasks that are not built in, for every reader of the store
            manifest["tasks"] = dict(sorted(tasks.items()))
        self.store.manifest_path.write_text(json.dumps(manifest, indent=1))  # the commit point
        for s in dropped:  # only after the new manifest no longer lists them
            if s["path"] not in {w.path for w in self._written}:
                self.store.path(s["path"]).delete()
        return self._written

    def rollback(self) -> None:
        """Delete every part file this transaction wrote; the manifest was never touched.

        Files that were already there with the same bytes are kept: the old manifest may list them."""
        for s in self._written:
            if s.path not in self._kept:
                self.store.path(s.path).delete()
        self._written.clear()
        self._buffers.clear()


def read_rows(store_root: str | os.PathLike, shard_path: str, rows: list[int]) -> list[dict[str, Any]]:
    """Read chosen rows of one shard, decoding only the row groups that hold them (on object
    storage: ranged reads of the footer and those row groups)."""
    path = location(store_root).join(shard_path)
    try:
        source = path.open_input()
    except Exception as exc:  # noqa: BLE001 - missing, unreadable or unreachable: name the shard
        raise StoreError(f"{path}: cannot open Parquet shard ({exc})") from exc
    with source:
        return _read_rows(path, source, rows)


def _read_rows(path: Location, source: Any, rows: list[int]) -> list[dict[str, Any]]:
    try:
        pf = pq.ParquetFile(source)
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"{path}: cannot open Parquet shard ({exc})") from exc
    bounds, start = [], 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        bounds.append((start, start + n))
        start += n
    out: dict[int, dict] = {}
    wanted = sorted(set(rows))
    for g, (lo, hi) in enumerate(bounds):
        need = [r for r in wanted if lo <= r < hi]
        if not need:
            continue
        try:
            table = pf.read_row_group(g).to_pylist()
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{path}: row group {g} (rows {lo}-{hi - 1}) is unreadable: {exc}; "
                             f"row {need[0]} cannot be read") from exc
        for r in need:
            out[r] = table[r - lo]
    missing = [r for r in rows if r not in out]
    if missing:
        raise StoreError(f"{path}: row {missing[0]} is past the end of the shard ({start} rows)")
    return [out[r] for r in rows]
