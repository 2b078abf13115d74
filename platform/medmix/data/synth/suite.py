"""Build the bundled synthetic suite into a shard store, in one transaction.

    from medmix.data.store import ShardStore
    from medmix.data.synth import SynthConfig, build_suite
    summary = build_suite(SynthConfig(size="small"), ShardStore("medmix-data"), image_size=224)

Every example is a pure function of (seed, task, split, index), so two builds with the same
seed write byte-identical shards, and the work can be cut into chunks drawn in parallel
processes without changing a byte: chunks come back in order and the transaction adds them
in order. Re-running replaces the suite's tasks (`replace_tasks`) and leaves other tasks in
the store alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing as mp
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

import numpy as np

from medmix.data.images import encode_png, square_resize
from medmix.data.schema import SPLITS, Example
from medmix.data.store import ShardStore
from medmix.data.synth.base import GENERATORS, SIZES, Key, Sample
from medmix.data.synth.config import SynthConfig
from medmix.options import ConfigError
from medmix.tasks import task_names

# modules whose @generator functions make up the suite (genomics and volumes add theirs here)
GENERATOR_MODULES = ("facts", "pubmed", "cxr", "derm", "mammo", "slake", "pathology")
CHUNK = 64  # examples per unit of parallel work
PNG_LEVEL = 1


def load_generators() -> dict:
    for name in GENERATOR_MODULES:
        importlib.import_module(f"medmix.data.synth.{name}")
    return GENERATORS


def suite_tasks(requested: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The tasks to build, in registry order: `requested`, or every task with a generator."""
    gens = load_generators()
    registered = task_names()
    for name in requested:
        if name not in registered:
            raise ConfigError(f"synth.tasks: {name!r} is not a registered task; registered tasks: "
                              f"{', '.join(registered)}")
        if name not in gens:
            raise ConfigError(f"synth.tasks: task {name!r} has no synthetic generator; the suite "
                              f"generates: {', '.join(t for t in registered if t in gens)}")
    wanted = set(requested) if requested else set(gens)
    return [t for t in registered if t in wanted]


def encode_image(image: np.ndarray, image_size: int) -> bytes:
    """Pad/resize with the store's one preprocessing function, then PNG. Grayscale images stay
    8-bit gray PNGs (a third of the bytes); `decode_image` gives every reader 3 channels.
    zlib level 1: a quarter of level 6's encode time (the largest cost of a build) for ~20%
    more bytes."""
    square = square_resize(image, image_size)
    return encode_png(square[..., 0] if image.ndim == 2 else square, compress_level=PNG_LEVEL)


def make_example(key: Key, sample: Sample, image_size: int) -> Example:
    images = [encode_image(im, image_size) for im in sample.images]
    return Example(example_id=key.example_id, task=key.task, split=key.split, context=sample.context,
                   target=sample.target, source=key.source, images=images,
                   image_format="png" if images else None, label=sample.label)


def build_chunk(seed: int, task: str, split: str, start: int, stop: int, raw_size: int,
                image_size: int) -> list[Example]:
    """Examples [start, stop) of one task/split (runs in worker processes too)."""
    gen = load_generators()[task]
    out = []
    for i in range(start, stop):
        key = Key(seed, task, split, i, raw_size)
        out.append(make_example(key, gen(key), image_size))
    return out


def _chunks(cfg: SynthConfig, tasks: list[str], image_size: int) -> list[tuple]:
    sizes = SIZES[cfg.size]
    return [(cfg.seed, task, split, lo, min(lo + CHUNK, sizes[split]), cfg.image_size, image_size)
            for task in tasks for split in SPLITS for lo in range(0, sizes[split], CHUNK)]


def _run_chunks(chunks: list[tuple], workers: int) -> Iterator[list[Example]]:
    """Yield each chunk's examples in order, drawing up to `workers` chunks at a time."""
    ctx = None
    if workers > 1 and len(chunks) > 1 and "fork" in mp.get_all_start_methods():
        # fork: workers need nothing from the parent but this module, and unlike spawn it
        # works from any __main__ (a REPL, `python -`, pytest); the children only run numpy/PIL
        ctx = mp.get_context("fork")
    if ctx is None:
        for c in chunks:
            yield build_chunk(*c)
        return
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            pending: deque = deque()
            for c in chunks:  # a bounded window keeps memory flat on `medium`
                pending.append(pool.submit(build_chunk, *c))
                if len(pending) >= 3 * workers:
                    yield pending.popleft().result()
                    done += 1
            while pending:
                yield pending.popleft().result()
                done += 1
    except BrokenProcessPool:
        # a worker died (killed, out of memory): draw what is left here; same bytes either way
        for c in chunks[done:]:
            yield build_chunk(*c)


def default_workers(cfg: SynthConfig) -> int:
    if cfg.workers:
        return cfg.workers
    if cfg.size == "tiny":
        return 1  # process start-up costs more than the work
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def build_suite(cfg: SynthConfig, store: ShardStore, image_size: int, progress: bool = True) -> dict:
    """Write the synthetic suite for `cfg` into `store` through one transaction.

    Args:
        cfg: suite size, seed, tasks (empty = all the suite knows), drawn image size, workers.
        store: the shard store; the suite's tasks are replaced, other tasks are kept.
        image_size: side of the stored square images (the store's `data.image_size`).
        progress: show a progress bar.

    Returns: {"root", "size", "seed", "tasks", "rows": {task: {split: n}}, "total_rows",
    "seconds", "bytes" (the suite's shards on disk), "digest" (of the whole store)}.
    """
    if cfg.size not in SIZES:
        raise ConfigError(f"synth.size = {cfg.size!r} is not one of {', '.join(SIZES)}")
    tasks = suite_tasks(cfg.tasks)
    chunks = _chunks(cfg, tasks, image_size)
    total = sum(c[4] - c[3] for c in chunks)
    workers = default_workers(cfg)
    source = {"kind": "synth", "path": f"synth:{cfg.size}:seed={cfg.seed}", "size": cfg.size,
              "seed": cfg.seed, "image_size": image_size, "raw_size": cfg.image_size, "tasks": tasks}
    start = time.perf_counter()
    rows: dict[str, dict[str, int]] = {t: {s: 0 for s in SPLITS} for t in tasks}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=f"synth {cfg.size}", unit="row", dynamic_ncols=True)
    try:
        with store.transaction(source=source, known_tasks=set(task_names()), replace_tasks=set(tasks)) as tx:
            for examples in _run_chunks(chunks, workers):
                for ex in examples:
                    tx.add(ex)
                    rows[ex.task][ex.split] += 1
                if bar is not None:
                    bar.update(len(examples))
                    bar.set_postfix_str(examples[-1].task if examples else "")
    finally:
        if bar is not None:
            bar.close()
    shards = [s for s in store.shards() if s.task in rows]
    return {"root": str(store.root), "size": cfg.size, "seed": cfg.seed, "tasks": tasks, "rows": rows,
            "total_rows": total, "seconds": round(time.perf_counter() - start, 3), "workers": workers,
            "bytes": sum(s.bytes for s in shards), "digest": store.digest()}


def build_bundled(cfg, root: str | None = None, progress: bool = True) -> dict:
    """Everything `medmix synth` builds, from the root config: the image and text tasks
    (`build_suite`), then the genomics, polygenic and 3D-volume tasks where that part of the
    suite is installed (`medmix.data.genomics.synth`) and wanted by `synth.tasks`.

    Args:
        cfg: the root MedmixConfig (`synth.*`, and `data.*` for the store).
        root: the store directory; default `data.root`.
    """
    try:
        from medmix.data.genomics.synth import TASKS as GENOMICS_TASKS
        from medmix.data.genomics.synth import synth_genomics
    except ImportError:
        GENOMICS_TASKS, synth_genomics = (), None
    store_cfg = dataclasses.replace(cfg.data, root=str(root)) if root else cfg.data
    store = ShardStore(store_cfg.root, store_cfg)
    requested = list(cfg.synth.tasks)
    mine = [t for t in requested if t not in GENOMICS_TASKS]
    theirs = [t for t in GENOMICS_TASKS if not requested or t in requested]
    start = time.perf_counter()
    if mine or not requested:
        summary = build_suite(dataclasses.replace(cfg.synth, tasks=mine), store, store_cfg.image_size, progress)
    else:  # only genomics tasks asked for
        summary = {"root": str(store.root), "size": cfg.synth.size, "seed": cfg.synth.seed, "tasks": [],
                   "rows": {}, "total_rows": 0, "seconds": 0.0, "workers": 0, "bytes": 0}
    if theirs and synth_genomics is not None:
        synth_genomics(dataclasses.replace(cfg, data=store_cfg), store)
        counts = store.counts()
        for task in theirs:
            summary["rows"][task] = {s: counts.get(task, {}).get(s, 0) for s in SPLITS}
            summary["tasks"].append(task)
        summary["total_rows"] = sum(sum(r.values()) for r in summary["rows"].values())
        summary["bytes"] = sum(s.bytes for s in store.shards() if s.task in summary["rows"])
    summary["seconds"] = round(time.perf_counter() - start, 3)
    summary["digest"] = store.digest() if store.exists() else ""
    return summary
