"""Per-rank data streams: the rank's slice of each global batch of the plan, as torch tensors.

    plan = MixturePlan.from_config(store, cfg.mixture, seed=cfg.seed)
    plan.load_state_dict(saved)                      # resume (optional)
    stream = build_stream(plan, store.root, tok, cfg.model.image_size, cfg.model.num_image_tokens,
                          cfg.stream, rank=rank, world_size=world_size)
    for batch in stream:                             # steps plan.step, plan.step + 1, ...
        train_step(batch)                            # batch["input_ids"], ["labels"], ["pixel_values"], ...
        checkpoint["data"] = stream.state_dict()     # the plan state at the next step to consume

`RayStream` builds the rank's batches on Ray, off the training process. A background thread
draws the next steps from the rank's own copy of the plan and keeps its slice of each; every
step's rows are read from the Parquet shards (grouped by
shard, only the row groups needed), images decoded and padded/resized, prompts rendered and
tokenized and the batch padded (`medmix.data.collate.build_batch`). Two engines
(`stream.engine`):

- `actors` (default): a pool of `stream.concurrency` preprocessing actors that lives as long
  as the stream (one per rank per run), each holding the unpickled batch spec; every step is
  one method call, results are taken in step order, and a batch comes back as numpy arrays
  through the object store (Ray's out-of-band buffers: no pickled payload, no copy on the
  way). A step costs a method call instead of a share of a Dataset's start-up, and the calls
  in flight (`concurrency + prefetch_batches`) are topped up one step at a time, so the actors
  never idle at a block boundary.
- `dataset`: Ray Data, one `from_items` Dataset per `steps_per_block` steps, one item per step,
  order-preserving `map_batches` tasks (the engine of earlier versions; kept to compare).

Order is preserved and batches are prefetched (`stream.prefetch_batches`, the bound on what
waits for the trainer: backpressure). On a cluster with nodes labelled `medmix-role=data`
alive when the stream starts, the actors (or tasks) run only there (`medmix.placement`; else
anywhere); `stats()["built_on"]` counts the batches each node built.

`LocalStream` is the same row -> tensors path in-process (no Ray): evaluation, tests, debug.

Batches (`Batch`, a dict): `input_ids`, `attention_mask`, `labels` (B x L, padded right;
labels -100 except target + eos), `pixel_values` (N_images x 3 x S x S, in row order; each
row's images fill its image-token runs in order), `image_counts` (B), `task_ids` (B, index
into `stream.task_names`), and lists `example_ids`, `tasks`; `batch.meta` holds the step, the
skipped rows and the time the consumer waited for this batch.

A training rank uses `build_rank_stream(cfg, tokenizer, rank, world_size)`: the plan from the
config and store, the Ray stream over it, validation batches, digests for lineage.

Local cluster sizing (STACK-NOTES: `ray.init()` on 2 CPUs + 2 one-CPU train workers + a Ray
Data read hangs forever, since the read operator waits for a whole CPU that never frees):
- the stream has no read operator: its input blocks come from `from_items` in the rank's own
  process, so every Ray task it starts is a `map_batches` task;
- those tasks ask for `stream.num_cpus_per_task` (0.25) logical CPUs, at most
  `stream.concurrency` (2) at a time per rank: 0.5 CPU per rank, never a whole one;
- a local cluster is started with logical CPUs for train workers *plus* their streams
  (`medmix.runtime.local_num_cpus`, the one sizing rule), whatever the physical cores;
- a cluster with fewer CPUs than one preprocessing task needs fails at once with a message
  instead of hanging.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pickle
import queue
import threading
import time
from collections import deque
from dataclasses import astuple
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from medmix.data.collate import BatchSpec, StreamError, build_batch
from medmix.data.mixture import ExampleRef, MixturePlan, rank_slice
from medmix.data.store import ShardStore
from medmix.model.preprocess import ImagePreprocess, image_preprocess
from medmix.placement import DATA, place
from medmix.tasks.files import carried

__all__ = ["Batch", "BatchSpec", "LocalStream", "RankStream", "RayStream", "StreamError", "build_rank_stream",
           "build_stream", "iter_split", "make_batch_spec", "to_torch"]

if TYPE_CHECKING:
    from medmix.config import MedmixConfig

SKIP_LOG_LIMIT = 100  # skipped rows kept (with reasons) for stats(); the count is exact
MAX_RAY_FAILURES = 3  # consecutive failures of Ray (calls, or blocks of the dataset engine) on good data before the stream fails
IN_PROCESS = "in-process"  # stats()["built_on"] key of batches built in the consumer's process

log = logging.getLogger(__name__)


def make_batch_spec(plan: MixturePlan, store_root, tokenizer, image_size: int, num_image_tokens: int,
                    cfg, preprocess: ImagePreprocess | None = None) -> BatchSpec:
    """The BatchSpec of a plan's stream, from a `StreamConfig`; `preprocess` = the vision tower's
    normalisation (ImageNet's when None)."""
    return BatchSpec(store_root=str(store_root), tokenizer=tokenizer, image_size=image_size,
                     image_mean=preprocess.mean if preprocess else None,
                     image_std=preprocess.std if preprocess else None,
                     num_image_tokens=num_image_tokens, max_seq_len=cfg.max_seq_len,
                     task_names=list(plan.task_names), exemplar=cfg.exemplar, on_error=cfg.on_error,
                     orders={t: o.spec() for t, o in plan.orders.items()},
                     augment=cfg.augment, seed=plan.seed, tasks=carried(list(plan.task_names)))


class Batch(dict):
    """One rank's batch: per-row tensors/lists as dict items, the rest in `meta`.

    Items: `input_ids`, `attention_mask`, `labels` (B x L), `pixel_values` (N_images x 3 x S x S),
    `image_counts` (B), `task_ids` (B), `example_ids`, `tasks` (lists of B). Every item is
    indexed by row except `pixel_values` (by image), so micro-batching can slice it generically.
    `meta`: step, skipped rows, data-wait seconds, exemplars dropped, prompts truncated.
    """

    def __init__(self, items: dict[str, Any], meta: dict[str, Any] | None = None):
        super().__init__(items)
        self.meta = dict(meta or {})

    @property
    def step(self) -> int:
        return int(self.meta.get("step", -1))

    def __reduce__(self):
        return (Batch, (dict(self), self.meta))


def to_torch(batch: dict[str, Any]) -> Batch:
    """A collated numpy batch -> a `Batch` of torch tensors (zero-copy); lists pass through."""
    import torch
    items = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
             for k, v in batch.items() if k != "meta"}
    return Batch(items, batch.get("meta"))


class _Stream:
    """What both streams share: drawing slices from the plan, state, data-wait, stats."""

    def __init__(self, plan: MixturePlan, spec: BatchSpec, rank: int = 0, world_size: int = 1,
                 end_step: int | None = None):
        rank_slice(list(range(plan.global_batch_size)), rank, world_size)  # validates early
        self.plan, self.spec = plan, spec
        self.rank, self.world_size = rank, world_size
        self.end_step = end_step
        self.task_names = list(plan.task_names)
        self._state = plan.state_dict()
        self._wait_s = 0.0
        self._last_wait_s = 0.0
        self._first_request: float | None = None
        self._batches = 0
        self._skipped = 0
        self._skip_log: list[dict] = []
        self._built_on: dict[str, int] = {}
        self._build_s = 0.0   # time the batches handed out took to build where they were built (actors)
        self._fetch_s = 0.0   # time the producer spent taking built batches into this process (actors)

    def _draw(self) -> tuple[int, list[ExampleRef], dict] | None:
        """Next step's slice and the plan state after it; None past end_step."""
        if self.end_step is not None and self.plan.step >= self.end_step:
            return None
        step = self.plan.step
        refs = rank_slice(self.plan.batch(), self.rank, self.world_size)
        return step, refs, self.plan.state_dict()

    def _produce(self) -> tuple[int, dict, dict] | None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        if self._first_request is None:
            self._first_request = t0
        got = self._produce()
        if got is None:
            raise StopIteration
        step, batch, state_after = got
        self._last_wait_s = time.perf_counter() - t0
        self._wait_s += self._last_wait_s
        self._batches += 1
        self._state = state_after
        skipped = batch["meta"]["skipped"]
        if skipped:
            self._skipped += len(skipped)
            room = SKIP_LOG_LIMIT - len(self._skip_log)
            self._skip_log.extend({**s, "step": step} for s in skipped[:max(room, 0)])
        batch["meta"]["data_wait_s"] = self._last_wait_s
        self._build_s += batch["meta"].pop("build_s", 0.0)
        node = batch["meta"].pop("built_on", IN_PROCESS)
        self._built_on[node] = self._built_on.get(node, 0) + 1
        return to_torch(batch)

    # -- checkpoint contract ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """The plan state at the next step this stream will hand out (what checkpoints store)."""
        return json.loads(json.dumps(self._state))

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Continue from a saved state (call before iterating, or after `close()`)."""
        self.close()
        self.plan.load_state_dict(state, strict=strict)
        self._state = self.plan.state_dict()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- observability ---------------------------------------------------------------------
    def stats(self) -> dict:
        """Realised mix (from the plan state of the last batch handed out), data-wait, skips."""
        out = self.plan.stats(self._state)
        elapsed = (time.perf_counter() - self._first_request) if self._first_request else 0.0
        out.update({
            "rank": self.rank, "world_size": self.world_size, "batches": self._batches,
            "data_wait_s": self._wait_s, "last_data_wait_s": self._last_wait_s,
            "data_wait_fraction": self._wait_s / elapsed if elapsed > 0 else 0.0,
            "skipped": self._skipped, "skipped_rows": list(self._skip_log),
            "ray_failures": getattr(self, "ray_failures", 0), "built_on": dict(self._built_on),
            "build_s": self._build_s, "fetch_s": self._fetch_s})
        return out


class LocalStream(_Stream):
    """The plan's batches built in this process, one step at a time (no Ray, no prefetch)."""

    def _produce(self) -> tuple[int, dict, dict] | None:
        drawn = self._draw()
        if drawn is None:
            return None
        step, refs, state_after = drawn
        return step, build_batch(self.spec, refs, step), state_after


# -- Ray Data execution ----------------------------------------------------------------------

_SPEC_CACHE: dict[str, BatchSpec] = {}


def _preprocess(batch: dict[str, np.ndarray], spec_key: str, spec_blob: bytes) -> dict[str, np.ndarray]:
    """Ray Data map_batches UDF: one step's refs -> that step's collated batch, pickled."""
    spec = _SPEC_CACHE.get(spec_key)
    if spec is None:  # once per worker process: unpickling a tokenizer is not free
        if len(_SPEC_CACHE) > 8:
            _SPEC_CACHE.clear()
        spec = _SPEC_CACHE[spec_key] = pickle.loads(spec_blob)
    if len(batch["step"]) != 1:
        raise ValueError(f"_preprocess takes one step per call (map_batches batch_size=1), got {len(batch['step'])}")
    step = int(batch["step"][0])
    refs = [ExampleRef(*r) for r in json.loads(batch["refs"][0])]
    import ray  # only ever called inside a Ray task
    out = build_batch(spec, refs, step)
    out["meta"]["built_on"] = ray.get_runtime_context().get_node_id()
    payload = pickle.dumps(out, protocol=5)
    # a uint8 tensor column: Arrow wraps the numpy buffer, where a column of Python bytes goes
    # through a much slower conversion (~20 MB per step at 224 px and batch 32)
    return {"step": np.array([step], dtype=np.int64), "payload": np.frombuffer(payload, dtype=np.uint8)[None, :]}


class _Builder:
    """A preprocessing actor of `RayStream`'s `actors` engine: the batch spec, unpickled once."""

    def __init__(self, spec_blob: bytes):
        import ray
        self.spec = pickle.loads(spec_blob)
        self.node = ray.get_runtime_context().get_node_id()

    def build(self, step: int, refs: list[tuple]) -> dict[str, Any]:
        t0 = time.perf_counter()
        out = build_batch(self.spec, [ExampleRef(*r) for r in refs], step)
        out["meta"]["built_on"] = self.node
        out["meta"]["build_s"] = time.perf_counter() - t0
        return out   # numpy arrays travel as out-of-band buffers through the object store


def _writable(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch from the object store with its arrays copied into this process (they arrive as
    read-only views of shared memory, which torch must not be handed to write into)."""
    return {k: (np.array(v) if isinstance(v, np.ndarray) and not v.flags.writeable else v) for k, v in batch.items()}


class RayStream(_Stream):
    """The plan's batches built on Ray: a long-lived actor pool (`stream.engine = "actors"`) or
    Ray Data, one Dataset per `steps_per_block` steps (`"dataset"`)."""

    _END = object()

    def __init__(self, plan: MixturePlan, spec: BatchSpec, cfg, rank: int = 0, world_size: int = 1,
                 end_step: int | None = None):
        super().__init__(plan, spec, rank, world_size, end_step)
        self.cfg = cfg
        blob = pickle.dumps(spec, protocol=5)
        self._spec_kw = {"spec_key": hashlib.sha256(blob).hexdigest()[:16], "spec_blob": blob}
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, cfg.prefetch_batches))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ray_failures = 0
        self._placement = None
        self._actors: list | None = None

    def _start(self) -> None:
        import ray
        if not ray.is_initialized():
            raise StreamError("RayStream needs a running Ray (ray.init() or a Ray Train worker); "
                              "use LocalStream to stream without Ray")
        self._placement = place(DATA, f"stream rank {self.rank} preprocessing")
        cpus = self._placement.cpus
        if cpus < self.cfg.num_cpus_per_task:
            where = "the Ray cluster has" if self._placement.selector is None else \
                f"the nodes labelled {self._placement.selector} have"
            raise StreamError(f"{where} {cpus:g} CPUs; one preprocessing task asks for "
                              f"stream.num_cpus_per_task = {self.cfg.num_cpus_per_task}")
        self._stop.clear()
        self._queue = queue.Queue(maxsize=max(1, self.cfg.prefetch_batches))
        self._thread = threading.Thread(target=self._run, name=f"medmix-stream-r{self.rank}", daemon=True)
        self._thread.start()

    def _pool(self) -> list:
        """The stream's preprocessing actors, started on first use (and again after one died)."""
        if self._actors is None:
            import ray
            # "DEFAULT": never captured into the placement group of whoever starts the stream (a
            # Tune trial's holds 0.01 CPU, a Train worker's its own CPU): the actors would wait
            # forever for room there
            builder = ray.remote(_Builder).options(
                num_cpus=self.cfg.num_cpus_per_task, max_concurrency=1, scheduling_strategy="DEFAULT",
                label_selector=self._placement.selector if self._placement else None)
            self._actors = [builder.remote(self._spec_kw["spec_blob"]) for _ in range(self.cfg.concurrency)]
        return self._actors

    @staticmethod
    def _fetch(call) -> dict[str, Any]:
        """An actor call's batch, in this process."""
        import ray
        return _writable(ray.get(call))

    def _kill_pool(self) -> None:
        actors, self._actors = self._actors, None
        if actors:
            import ray
            for actor in actors:
                try:
                    ray.kill(actor)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    def _dataset_block(self, block: list[tuple[int, list[ExampleRef], dict]]) -> Iterator[tuple[int, dict]]:
        for out in self._ray_dataset(block).iter_batches(batch_size=None, batch_format="numpy",
                                                         prefetch_batches=self.cfg.prefetch_batches):
            for step, payload in zip(out["step"], out["payload"]):
                yield int(step), pickle.loads(memoryview(np.ascontiguousarray(payload)))

    def _ray_dataset(self, block: list[tuple[int, list[ExampleRef], dict]]):
        import ray
        from ray.data import DataContext
        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        # one Dataset per block: its start/finish lines would flood the training log
        logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
        items = [{"step": s, "refs": json.dumps([astuple(r) for r in refs])} for s, refs, _ in block]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        return ds.map_batches(_preprocess, batch_size=1, batch_format="numpy", fn_kwargs=self._spec_kw,
                              num_cpus=self.cfg.num_cpus_per_task,
                              label_selector=self._placement.selector if self._placement else None,
                              compute=ray.data.TaskPoolStrategy(size=min(self.cfg.concurrency, len(block))))

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        if getattr(self.cfg, "engine", "actors") == "dataset":
            self._run_blocks()
        else:
            self._run_actors()

    def _run_actors(self) -> None:
        """The `actors` engine: one pipeline for the whole run. Up to `concurrency +
        prefetch_batches` steps are in flight, handed to the actors in turn; a step's batch is
        taken in step order, and each one taken lets the next step be drawn and sent — the
        actors never wait for a block boundary."""
        import ray
        from ray.exceptions import RayActorError
        inflight: deque = deque()   # (step, refs, plan state after it, object ref), in step order
        failures = 0   # consecutive failed calls while the data itself was fine
        calls = 0
        exhausted = False
        try:
            while not self._stop.is_set():
                actors = self._pool()
                depth = len(actors) + max(1, self.cfg.prefetch_batches)
                while not exhausted and len(inflight) < depth:
                    drawn = self._draw()
                    if drawn is None:
                        exhausted = True
                        break
                    step, refs, state = drawn
                    call = actors[calls % len(actors)].build.remote(step, [astuple(r) for r in refs])
                    calls += 1
                    inflight.append((step, refs, state, call))
                if not inflight:
                    break
                step, refs, state, call = inflight[0]
                try:
                    ray.wait([call], fetch_local=False)   # built: what follows is only the taking in
                    t0 = time.perf_counter()
                    batch = self._fetch(call)
                    self._fetch_s += time.perf_counter() - t0
                except Exception as exc:  # noqa: BLE001 - redone below, in order, to fail at the exact step
                    # A failed call: build this step and every one in flight here, in order. A bad
                    # row then raises its own clean error (not wrapped by Ray) at its exact step; a
                    # dead actor or node just heals (a fresh pool serves the steps after).
                    if isinstance(exc, RayActorError):
                        self._kill_pool()
                    first, redone = step, len(inflight)
                    for step, refs, state, _ in list(inflight):
                        inflight.popleft()
                        if not self._put((step, build_batch(self.spec, refs, step), state)):
                            return
                    # the data was fine, so Ray failed: tolerate a few, never fall back silently
                    failures += 1
                    self.ray_failures += 1
                    first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                    log.warning("stream rank %d: Ray failed on step %d (%s); built it and the steps in flight "
                                "in-process (%d in all)", self.rank, first, first_line, redone)
                    if failures >= MAX_RAY_FAILURES:
                        raise
                    continue
                inflight.popleft()
                failures = 0
                if not self._put((step, batch, state)):
                    return
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(exc)

    def _run_blocks(self) -> None:
        """The `dataset` engine: `steps_per_block` steps at a time, one Ray Dataset each."""
        failures = 0  # consecutive blocks Ray Data failed on while the data itself was fine
        try:
            while not self._stop.is_set():
                block = []
                for _ in range(self.cfg.steps_per_block):
                    drawn = self._draw()
                    if drawn is None:
                        break
                    block.append(drawn)
                if not block:
                    break
                states = {s: st for s, _, st in block}
                done = 0
                try:
                    for step, batch in self._dataset_block(block):
                        if not self._put((step, batch, states[step])):
                            return
                        done += 1
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - redone below, in order, to fail at the exact step
                    # A failed actor call (or task: Ray Data then aborts the whole Dataset, dropping
                    # batches already built) ends the block. Build the rest of it here, in order:
                    # the consumer gets every good batch, then the error of the bad step (clean, not
                    # wrapped by Ray); a transient failure (a dead actor or node) just heals.
                    for step, refs, state in block[done:]:
                        if not self._put((step, build_batch(self.spec, refs, step), state)):
                            return
                    # the data was fine, so Ray failed: tolerate a few, never fall back silently
                    failures += 1
                    self.ray_failures += 1
                    first_line = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
                    log.warning("stream rank %d: Ray failed on steps %d-%d (%s); built them in-process",
                                self.rank, block[0][0], block[-1][0], first_line)
                    if failures >= MAX_RAY_FAILURES:
                        raise
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(exc)

    def _produce(self) -> tuple[int, dict, dict] | None:
        if self._thread is None:
            self._start()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive():
                    raise StreamError("the stream's producer thread stopped without a result") from None
        if item is self._END:
            self._queue.put(self._END)  # stay exhausted
            return None
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        """Stop the producer (and its Ray Data execution); prepared batches are dropped."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        while thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
        self._kill_pool()
        # the plan ran ahead in the producer: rewind it to the last batch handed out
        self.plan.load_state_dict(self._state)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def build_stream(plan: MixturePlan, store_root, tokenizer, image_size: int, num_image_tokens: int, cfg,
                 rank: int = 0, world_size: int = 1, end_step: int | None = None,
                 use_ray: bool = True) -> _Stream:
    """The rank's stream over `plan` from its current step (RayStream, or LocalStream without Ray)."""
    spec = make_batch_spec(plan, store_root, tokenizer, image_size, num_image_tokens, cfg)
    return _open_stream(plan, spec, cfg, rank, world_size, end_step, use_ray)


def _open_stream(plan: MixturePlan, spec: BatchSpec, cfg, rank: int, world_size: int,
                 end_step: int | None, use_ray: bool) -> _Stream:
    if use_ray:
        return RayStream(plan, spec, cfg, rank, world_size, end_step)
    return LocalStream(plan, spec, rank, world_size, end_step)


def split_refs(store, task: str, split: str) -> list[ExampleRef]:
    """Every row of one task's split, in manifest order."""
    refs: list[ExampleRef] = []
    for shard in store.shards(task=task, split=split):
        for row in range(shard.rows):
            refs.append(ExampleRef(task, shard.path, row, len(refs), 0, len(refs)))
    return refs


def iter_split(spec: BatchSpec, store, task: str, split: str, batch_size: int,
               limit: int | None = None) -> Iterator[Batch]:
    """One task's split in manifest order, as training-style batches (validation loss, tests).

    In-process, same row -> tensors path as the streams.
    """
    refs = split_refs(store, task, split)[:limit]
    for i in range(0, len(refs), batch_size):
        yield to_torch(build_batch(spec, refs[i:i + batch_size], step=-1))


# -- what a training rank holds ------------------------------------------------------------

class RankStream:
    """One training rank's data: the plan (from config + store), its stream, validation batches.

        rs = build_rank_stream(cfg, tokenizer, rank, world_size)
        rs.load_state_dict(checkpoint["data_state"])      # on resume
        for batch in rs.batches(start_step=step): ...
    """

    def __init__(self, cfg: MedmixConfig, tokenizer, rank: int = 0, world_size: int = 1,
                 use_ray: bool | None = None):
        store = ShardStore(cfg.data.root)
        self.cfg, self.store, self.rank, self.world_size = cfg, store, rank, world_size
        self.plan = MixturePlan.from_config(store, cfg.mixture, seed=cfg.seed)
        self.spec = make_batch_spec(self.plan, store.root, tokenizer, cfg.model.image_size,
                                    cfg.model.num_image_tokens, cfg.stream, image_preprocess(cfg.model))
        self.task_names = list(self.plan.task_names)
        self.store_digest = store.digest()
        self.task_digests = {t: store.task_digest(t) for t in self.plan.active}
        if use_ray is None:
            import ray
            use_ray = ray.is_initialized()
        self.use_ray = use_ray
        self.stream: _Stream | None = None

    def task_name(self, task_id: int) -> str:
        return self.task_names[task_id]

    def batches(self, start_step: int | None = None, end_step: int | None = None) -> _Stream:
        """The stream from the plan's current step (which must be `start_step` when given)."""
        if start_step is not None and start_step != self.plan.step:
            raise ValueError(f"the data plan is at step {self.plan.step}, the trainer at {start_step}: "
                             f"load the checkpoint's data state (load_state_dict) before streaming")
        if self.stream is not None:
            self.stream.close()
        self.stream = _open_stream(self.plan, self.spec, self.cfg.stream, self.rank, self.world_size,
                                   end_step, self.use_ray)
        return self.stream

    def state_dict(self) -> dict:
        return self.stream.state_dict() if self.stream is not None else self.plan.state_dict()

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        self.plan.load_state_dict(state, strict=strict)

    def stats(self) -> dict:
        return self.stream.stats() if self.stream is not None else self.plan.stats()

    def realised_mixture(self) -> dict[str, float]:
        """Fraction of examples per task handed out so far (resumed runs included)."""
        return {t: s["fraction"] for t, s in self.stats()["tasks"].items()}

    def realised_classes(self) -> dict[str, dict[str, float]]:
        """For each class-balanced task, the fraction of its examples handed out so far per class
        (option name), resumed runs included."""
        return {t: {name: c["fraction"] for name, c in s["classes"].items()}
                for t, s in self.stats()["tasks"].items() if "classes" in s}

    def validation_batches(self, num_batches: int, split: str = "val") -> list[Batch]:
        """`num_batches` batches per task with rows in `split`, this rank's share.

        Every rank gets the same number of batches (small splits wrap around), so ranks that
        run collective forwards (FSDP) stay in step.
        """
        k = max(1, self.plan.global_batch_size // self.world_size)
        spec = dataclasses.replace(self.spec, augment=False)  # validation sees the stored pixels
        out = []
        for task in self.plan.active:
            refs = split_refs(self.store, task, split)
            if not refs:
                continue
            for j in range(num_batches):
                start = (j * self.world_size + self.rank) * k
                chunk = [refs[(start + i) % len(refs)] for i in range(k)]
                out.append(to_torch(build_batch(spec, chunk)))
        return out

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def build_rank_stream(cfg: MedmixConfig, tokenizer, rank: int = 0, world_size: int = 1,
                      use_ray: bool | None = None) -> RankStream:
    """A training rank's data from the root config (Ray stream when Ray is running)."""
    return RankStream(cfg, tokenizer, rank, world_size, use_ray)
