"""Continuous batching: one decode batch that requests join and leave between decode steps.

    scheduler = Scheduler.of(runner, max_sequences=32)    # runner: medmix.serve.runner.ModelRunner
    result = await scheduler.submit(item)                 # what ModelRunner.run gives for one item
    async for step in scheduler.stream(item): ...         # token ids, then {"finish_reason": ...}

    seq = scheduler.add(item)                             # synchronous, as the tests drive it
    while scheduler.busy:
        scheduler.step()
    seq.result

Why: a static batch (`@serve.batch` -> `ModelRunner.run`) decodes until its longest request is
done, so a 4-token request that arrives behind a 256-token one waits for all 256 steps, and
every row freed early idles until the batch ends. Here the replica keeps one running batch and
each `step()`

1. admits waiting requests while the batch has room (`max_sequences`; with `admit_every` > 1,
   newcomers to a running batch wait up to that many steps, to be prefilled together): scores
   the options of those that have them (one `score_options` call for all of them), prefills
   their prompts in length buckets (`plan_buckets`; each bucket its own forward with a fresh KV
   cache, its first token sampled from the prefill's logits, as `generate` does), and merges the
   new cache rows into the batch's cache, the shorter side left-padded with masked columns;
2. decodes one token for every row (one forward through the shared cache);
3. retires each row that produced a stop token, reached its `max_new_tokens` or was cancelled
   (a stream whose client left) at once: its result is handed back, its cache rows dropped
   (`DynamicCache.batch_select_indices`) and the leading columns no remaining row needs cut.

Every row keeps `generate`'s semantics, so a greedy answer equals `generate` on that request
alone (`tests/unit/serve/test_serve_scheduler.py`): left padding with positions counted per row
(the tokens it has in the cache, which is what `generate`'s mask cumsum gives), the image token
banned and padding banned unless it is a stop token, and sampling per row with the request's
temperature and top_p. A seeded request samples from its own `torch.Generator` seeded as
`generate` seeds it, so it draws the same numbers whatever else is in the batch (from logits
that, as for greedy rows, equal a forward alone up to float rounding). Option scores and
per-token log-probabilities are what `ModelRunner.run` reports.

Failures: a prefill that fails is retried request by request, so only the request that breaks
it fails (`{"error": ...}`, as `ModelRunner.run` reports it); scoring and log-probabilities are
isolated the same way. A decode step that fails (out of memory) fails the rows of that batch —
its inputs are one token id per row, nothing that singles out a request — and the loop goes on
with the requests still waiting. The cache is transformers' `DynamicCache`; only models whose
layers all keep a plain full-attention cache (`DynamicLayer`) can merge rows this way, others
(sliding-window, linear-attention layers) raise `ContinuousBatchingUnsupported` when the
scheduler is built, and the replica serves them with static batches.

No Ray here: the Serve replica (`medmix.serve.app`) drives it on its event loop, yielding the
loop between steps so that new requests, health checks and streams are answered mid-decode.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import torch

from medmix.model.generation import _cache_kwarg, _new_cache, _sample, left_pad
from medmix.serve.runner import plan_buckets

if TYPE_CHECKING:
    from medmix.serve.runner import ModelRunner

log = logging.getLogger(__name__)


class ContinuousBatchingUnsupported(ValueError):
    """The model's KV cache cannot merge and drop rows (sliding-window or linear-attention layers)."""


@dataclass(eq=False)
class Sequence:
    """One request in the scheduler: waiting, decoding, or finished (`result` set)."""

    item: Any
    """the request (`medmix.serve.inputs.ModelInputs`)"""
    stream: bool = False
    """a streamed request: tokens only (no option scores or log-probabilities)"""
    tokens: list[int] = field(default_factory=list)
    """tokens generated so far, without the stop token"""
    result: dict[str, Any] | None = None
    """set once it finished: what `ModelRunner.run` returns for it"""
    cancelled: bool = False
    """set by the consumer that no longer wants it; the next step drops it"""
    peak_batch: int = 0
    """largest decode batch it was part of (reported as `batch_size`)"""
    notify: Callable[[], None] | None = None
    """called on the event loop after each step that gave it a token or finished it"""
    # decoding state
    generator: torch.Generator | None = None
    stops: frozenset[int] = frozenset()
    ban_pad: bool = True
    length: int = 0
    """tokens of this row in the cache: the position of the next token fed"""
    next_token: int = -1
    """the last sampled token, fed at the next decode step"""
    extra: dict[str, Any] = field(default_factory=dict)
    """option scores, to be merged into the result"""
    started: float = 0.0


class Scheduler:
    """Continuous batching over one `ModelRunner` (its model, device, eos and pad ids)."""

    def __init__(self, runner: "ModelRunner", max_sequences: int = 32, *, admit_every: int = 1,
                 in_thread: bool = False, on_step: Callable[[int], None] | None = None):
        """
        Args:
            max_sequences: most rows in the decode batch; further requests wait their turn.
            admit_every: while rows are decoding, admit waiting requests at most every this many
                steps, so that newcomers are prefilled together (one forward for several rather
                than one each); an idle scheduler admits at once.
            in_thread: run each step in a worker thread (the event loop stays free during a
                step) rather than on the event loop between awaits.
            on_step: called with the decode batch size after every decode step (metrics).
        """
        if max_sequences < 1:
            raise ValueError(f"max_sequences = {max_sequences}: need at least 1")
        self.runner = runner
        self.model = runner.model
        self.decoder = runner.model.decoder
        self.device = runner.device
        self.max_sequences = max_sequences
        if admit_every < 1:
            raise ValueError(f"admit_every = {admit_every}: need at least 1")
        self.admit_every = admit_every
        self.since_admit = admit_every  # steps since the last admission
        self.in_thread = in_thread
        self.on_step = on_step
        self.cache_kw = _cache_kwarg(self.decoder)
        self._check_cache()
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []
        """rows of the decode batch, in cache row order"""
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        """(rows, cache length) attention mask of the cache: 0 = left padding"""
        self.lock = threading.Lock()  # `add` (event loop) against `step` (maybe a worker thread)
        self.admitting: list[Sequence] = []
        """taken from `waiting` by the step in progress, not yet in `active`"""
        self.task: asyncio.Task | None = None
        self.stats = {"steps": 0, "prefills": 0, "finished": 0, "failed": 0, "peak_batch": 0}

    @classmethod
    def of(cls, runner: "ModelRunner", max_sequences: int = 32, **kwargs) -> "Scheduler":
        """The runner's scheduler, made on first use (later calls return it whatever they pass) and
        kept on the runner, so that it goes when the replica drops the model. Raises
        `ContinuousBatchingUnsupported` for a decoder whose KV cache cannot merge rows, every time
        it is asked."""
        if isinstance(runner.scheduler, ContinuousBatchingUnsupported):
            raise ContinuousBatchingUnsupported(str(runner.scheduler))
        if runner.scheduler is None:
            try:
                runner.scheduler = cls(runner, max_sequences, **kwargs)
            except ContinuousBatchingUnsupported as exc:
                runner.scheduler = exc
                raise
        return runner.scheduler

    def _check_cache(self) -> None:
        from transformers.cache_utils import DynamicLayer
        cache = _new_cache(self.decoder)
        other = sorted({type(layer).__name__ for layer in getattr(cache, "layers", [])
                        if type(layer) is not DynamicLayer})
        if other:
            raise ContinuousBatchingUnsupported(
                f"continuous batching merges and drops rows of a full-attention KV cache, but this decoder's "
                f"cache has {', '.join(other)} layers; serve it with serve.batching=\"static\"")

    # -- the queue -------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Something is waiting or decoding."""
        return bool(self.active or self.waiting)

    def add(self, item: Any, *, stream: bool = False) -> Sequence:
        """Queue a request; the next `step` admits it if the batch has room."""
        seq = Sequence(item=item, stream=stream)
        with self.lock:
            self.waiting.append(seq)
        return seq

    # -- one step --------------------------------------------------------------------------
    def step(self) -> list[Sequence]:
        """Admit, decode one token for every row, retire; returns the sequences that got a token
        or finished (their `notify` is the async layer's business)."""
        touched: list[Sequence] = []
        with torch.no_grad():
            self._drop_cancelled(touched)
            self._admit(touched)
            if self.active:
                self._decode(touched)
        return touched

    def _drop_cancelled(self, touched: list[Sequence]) -> None:
        if any(s.cancelled for s in self.active):
            for s in self.active:
                if s.cancelled:
                    self._finish(s, "cancelled", touched)
            self._retire()

    def _admit(self, touched: list[Sequence]) -> None:
        new: list[Sequence] = []
        self.admitting = new
        self.since_admit += 1
        if self.active and self.since_admit < self.admit_every:
            return
        with self.lock:
            while self.waiting and len(self.active) + len(new) < self.max_sequences:
                seq = self.waiting.popleft()
                if seq.cancelled:
                    self._finish(seq, "cancelled", touched)
                else:
                    new.append(seq)
        if not new:
            return
        self.since_admit = 0
        now = time.perf_counter()
        for seq in new:
            seq.started = now
        scored = [s for s in new if s.item.option_ids and not s.stream]
        if scored:
            self._score(scored, touched)
        todo = [s for s in new if s.result is None]
        for s in [s for s in todo if s.item.max_new_tokens <= 0]:
            self._finish(s, "length", touched)
        todo = [s for s in todo if s.result is None]
        lengths = [len(s.item.prompt_ids) for s in todo]
        for bucket in plan_buckets(lengths, self.runner.max_pad_fraction):
            members = [todo[b] for b in bucket]
            try:
                self._prefill(members, touched)
            except Exception as exc:  # noqa: BLE001 - find the request that breaks the bucket
                if len(members) == 1:
                    self._fail(members[0], exc, touched)
                    continue
                log.warning("prefill of %d requests failed (%s); retrying each alone", len(members), exc)
                for seq in members:
                    if seq.result is not None:  # finished before the bucket failed (at its merge)
                        continue
                    try:
                        self._prefill([seq], touched)
                    except Exception as one:  # noqa: BLE001
                        self._fail(seq, one, touched)

    def _score(self, seqs: list[Sequence], touched: list[Sequence]) -> None:
        """Option scores of the newcomers that have options: one `score_options` call (each
        alone if that fails, so that only the request that breaks it fails)."""
        items = [s.item for s in seqs]
        results: list[dict[str, Any]] = [{} for _ in seqs]
        try:
            self.runner._score(items, list(range(len(items))), results)
        except Exception as exc:  # noqa: BLE001
            if len(seqs) > 1:
                log.warning("option scoring of %d requests failed (%s); scoring each alone", len(seqs), exc)
            for seq, res in zip(seqs, results):
                try:
                    self.runner._score([seq.item], [0], [res])
                except Exception as one:  # noqa: BLE001
                    self._fail(seq, one, touched)
        for seq, res in zip(seqs, results):
            if seq.result is None:
                seq.extra.update(res)

    def _prefill(self, seqs: list[Sequence], touched: list[Sequence]) -> None:
        """Prompts through the model into a fresh cache (as `generate` begins), first tokens
        sampled; the rows that go on are merged into the decode batch."""
        self.stats["prefills"] += 1
        items = [s.item for s in seqs]
        for seq, it in zip(seqs, items):  # (again, when a failed bucket is retried row by row)
            seq.tokens, seq.length, seq.peak_batch = [], len(it.prompt_ids), 0
            seq.stops = frozenset() if it.ignore_eos else frozenset([self.runner.eos_id])
            seq.ban_pad = self.runner.pad_id not in seq.stops
            if it.temperature > 0 and it.seed is not None:
                seq.generator = torch.Generator(device=self.device).manual_seed(it.seed)
        ids, mask = left_pad([it.prompt_ids for it in items], self.runner.pad_id, self.device)
        embeds = self.model.embed(ids, self.runner._pixels(items, list(range(len(items)))))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache(self.decoder)
        out = self.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           use_cache=True, logits_to_keep=1, **{self.cache_kw: cache})
        tokens = self._sample(out.logits[:, -1].float(), seqs)
        for seq, token in zip(seqs, tokens):
            seq.peak_batch = len(seqs)
            self._accept(seq, token, touched)
        keep = [r for r, s in enumerate(seqs) if s.result is None]
        if not keep:
            return
        if len(keep) < len(seqs):
            cache.batch_select_indices(torch.tensor(keep, device=self.device))
            mask = mask[keep]
        self._merge(cache, mask, [seqs[r] for r in keep])

    def _decode(self, touched: list[Sequence]) -> None:
        rows = self.active
        assert self.mask is not None
        try:
            fed = torch.tensor([[s.next_token] for s in rows], dtype=torch.long, device=self.device)
            positions = torch.tensor([[s.length] for s in rows], dtype=torch.long, device=self.device)
            mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
            out = self.decoder(inputs_embeds=self.decoder.get_input_embeddings()(fed), attention_mask=mask,
                               position_ids=positions, use_cache=True, logits_to_keep=1,
                               **{self.cache_kw: self.cache})
            tokens = self._sample(out.logits[:, -1].float(), rows)
        except Exception as exc:  # noqa: BLE001 - the cache may be half updated: fail this batch, go on
            log.exception("decode step over %d rows failed; failing them", len(rows))
            for seq in rows:
                self._fail(seq, exc, touched)
            self.active, self.cache, self.mask = [], None, None
            return
        self.mask = mask
        self.stats["steps"] += 1
        self.stats["peak_batch"] = max(self.stats["peak_batch"], len(rows))
        if self.on_step is not None:
            self.on_step(len(rows))
        for seq, token in zip(rows, tokens):
            seq.length += 1
            seq.peak_batch = max(seq.peak_batch, len(rows))
            self._accept(seq, token, touched)
        self._retire()

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """(rows, V) fp32 logits -> a token per row: `generate`'s bans and sampler, row by row."""
        logits[:, self.model.image_token_id] = float("-inf")
        banned = [r for r, s in enumerate(seqs) if s.ban_pad]
        if banned:
            logits[banned, self.runner.pad_id] = float("-inf")
        out = logits.argmax(-1)
        for r, seq in enumerate(seqs):
            if seq.item.temperature > 0:
                out[r] = _sample(logits[r:r + 1], seq.item.temperature, seq.item.top_p, seq.generator)[0]
        return [int(t) for t in out.tolist()]

    def _accept(self, seq: Sequence, token: int, touched: list[Sequence]) -> None:
        if token in seq.stops:
            self._finish(seq, "stop", touched)
            return
        seq.tokens.append(token)
        seq.next_token = token
        if len(seq.tokens) >= seq.item.max_new_tokens:
            self._finish(seq, "length", touched)
        else:
            touched.append(seq)

    def _finish(self, seq: Sequence, reason: str, touched: list[Sequence]) -> None:
        result: dict[str, Any] = {"tokens": list(seq.tokens), "finish_reason": reason, **seq.extra}
        k = getattr(seq.item, "logprobs", None)
        if k is not None and not seq.stream and reason != "cancelled":
            try:
                result["logprobs"] = self.runner.token_logprobs(seq.item, seq.tokens, k)
            except Exception as exc:  # noqa: BLE001
                self._fail(seq, exc, touched)
                return
        result["batch_size"] = max(1, seq.peak_batch)
        result["model_ms"] = (time.perf_counter() - seq.started) * 1000 if seq.started else 0.0
        seq.result = result
        self.stats["finished"] += 1
        touched.append(seq)

    def _fail(self, seq: Sequence, exc: BaseException, touched: list[Sequence]) -> None:
        if seq.result is not None:
            return
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        seq.result = {"error": f"{type(exc).__name__}: {exc}", "batch_size": max(1, seq.peak_batch)}
        self.stats["failed"] += 1
        touched.append(seq)

    # -- cache surgery ---------------------------------------------------------------------
    # Rows leave through DynamicCache.batch_select_indices. Joining rows and cutting columns on
    # the left have no public method: they write the layers' `keys`/`values`, the tensors a
    # DynamicLayer keeps (every layer is one: `_check_cache`), each in a single copy at most.
    def _merge(self, cache: Any, mask: torch.Tensor, seqs: list[Sequence]) -> None:
        """Append rows (their own cache and mask) to the decode batch, left-padding the shorter side."""
        if self.cache is None or self.mask is None:
            self.cache, self.mask, self.active = cache, mask, list(seqs)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for layer, new in zip(self.cache.layers, cache.layers):
            layer.keys = _stack_left_padded(layer.keys, new.keys, width)
            layer.values = _stack_left_padded(layer.values, new.values, width)
        self.mask = _stack_left_padded(self.mask, mask, width)
        self.active = self.active + list(seqs)

    def _retire(self) -> None:
        """Drop the finished rows from the cache; cut the leading columns that only padded them."""
        keep = [r for r, s in enumerate(self.active) if s.result is None]
        if len(keep) == len(self.active):
            return
        if not keep:
            self.active, self.cache, self.mask = [], None, None
            return
        assert self.mask is not None
        self.cache.batch_select_indices(torch.tensor(keep, device=self.device))
        self.mask = self.mask[keep]
        self.active = [self.active[r] for r in keep]
        first = int(self.mask.any(0).to(torch.int8).argmax())  # first column some row attends to
        if first > 0:  # views: the next step's update copies them anyway
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
            self.mask = self.mask[:, first:]

    # -- the asyncio side ------------------------------------------------------------------
    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self._loop())

    async def _loop(self) -> None:
        """Step while there is work, yielding the event loop between steps (admissions, health
        checks and stream consumers run there); ends when idle, `_start` begins it again."""
        while self.busy:
            try:
                touched = await asyncio.to_thread(self.step) if self.in_thread else self.step()
            except Exception as exc:  # noqa: BLE001 - a bug in a step must not strand its requests
                log.exception("scheduler step failed")
                touched = []
                for seq in [*self.active, *self.admitting]:
                    self._fail(seq, exc, touched)
                self.active, self.cache, self.mask = [], None, None
            for seq in touched:
                if seq.notify is not None:
                    seq.notify()
            await asyncio.sleep(0)

    async def submit(self, item: Any) -> dict[str, Any]:
        """The request's result (tokens, finish_reason, option scores, logprobs, batch_size), or
        {"error": ...} when it failed."""
        done = asyncio.Event()
        seq = self.add(item)
        seq.notify = lambda: done.set() if seq.result is not None else None
        self._start()
        try:
            await done.wait()
        finally:
            if seq.result is None:  # the caller went away
                seq.cancelled = True
        assert seq.result is not None
        return seq.result

    async def stream(self, item: Any) -> AsyncIterator[Any]:
        """Token ids as they are decoded, then {"finish_reason", "batch_size"}; raises RuntimeError
        if the request failed. Closing the iterator early drops the row at the next step."""
        news = asyncio.Event()
        seq = self.add(item, stream=True)
        seq.notify = news.set
        self._start()
        sent = 0
        try:
            while True:
                await news.wait()
                news.clear()
                finished = seq.result is not None  # set after its last token: read it first
                while sent < len(seq.tokens):
                    sent += 1
                    yield seq.tokens[sent - 1]
                if finished:
                    assert seq.result is not None
                    if "error" in seq.result:
                        raise RuntimeError(f"request failed: {seq.result['error']}")
                    yield {"finish_reason": seq.result["finish_reason"], "batch_size": seq.result["batch_size"]}
                    return
        finally:
            if seq.result is None:
                seq.cancelled = True


def _stack_left_padded(a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor:
    """a's rows then b's, dim 2 (a cache's sequence, a mask's columns for 2-D) right-aligned to
    `width` with zeros on the left."""
    seq = 2 if a.dim() == 4 else 1
    shape = list(a.shape)
    shape[0], shape[seq] = a.shape[0] + b.shape[0], width
    out = a.new_empty(shape)
    for part, src in ((out[:a.shape[0]], a), (out[a.shape[0]:], b)):
        pad = width - src.shape[seq]
        part.narrow(seq, 0, pad).zero_()
        part.narrow(seq, pad, src.shape[seq]).copy_(src)
    return out
