"""Run a batch of prepared requests through one loaded model: generation and option scoring.

    runner = ModelRunner.load("exports/debug-20", device="cpu")
    results = runner.run([item, item2, ...])      # ModelInputs from medmix.serve.inputs
    results[0]["tokens"], results[0]["finish_reason"], results[0]["option_logprobs"]

This is what a Serve model replica calls on each `@serve.batch` (`serve.batching = "static"`);
with continuous batching (the default) the replica hands requests to `Scheduler.of(runner)`
(`medmix.serve.scheduler`), which decodes them as one batch that requests join and leave
between steps. Neither imports Ray, so both are tested (and benchmarked) on their own. Static
batching rules:

- Greedy requests batch together; sampled requests batch with others of the same temperature,
  top_p and `ignore_eos`; a *seeded* sampled request runs alone, so its answer is the same
  whatever else arrived with it.
- Padding-aware: `generate` left-pads, so a batch costs its longest prompt in every row. The
  prompts are sorted by length and cut into buckets wherever padding would exceed
  `max_pad_fraction` of the bucket's prompt tokens (`plan_buckets`).
- A batch generates up to its largest `max_new_tokens`; each row is cut to its own, which
  gives exactly what that row would get alone (greedy decoding does not look across rows).
- If a batch fails (e.g. out of memory), each request is retried alone, so one bad request
  fails only itself and the replica stays up.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmix.model import generate, load_exported, score_options
from medmix.model.export_meta import ExportMeta

log = logging.getLogger(__name__)

DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def plan_buckets(lengths: Sequence[int], max_pad_fraction: float) -> list[list[int]]:
    """Indices grouped into buckets of similar length (sorted ascending, stable).

    A bucket grows while the padding its longest member forces on the others stays at most
    `max_pad_fraction` of the bucket's padded size (`1` keeps everything in one bucket).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    buckets: list[list[int]] = []
    for i in order:
        if buckets:
            current = buckets[-1]
            width = lengths[i]  # ascending: the newcomer is the longest
            padded = width * (len(current) + 1)
            real = sum(lengths[j] for j in current) + lengths[i]
            if padded and (padded - real) / padded <= max_pad_fraction:
                current.append(i)
                continue
        buckets.append([i])
    return buckets


def pick_device(num_gpus: float = 0) -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelRunner:
    """One exported model on one device, answering batches of `ModelInputs`."""

    def __init__(self, model: Any, device: str, *, eos_id: int, pad_id: int | None = None,
                 max_pad_fraction: float = 0.5, score_batch_size: int = 64):
        self.model = model
        self.device = device
        self.eos_id = eos_id
        self.pad_id = pad_id if pad_id is not None else (model.pad_token_id or 0)
        self.max_pad_fraction = max_pad_fraction
        self.score_batch_size = score_batch_size
        self.stats = {"batches": 0, "requests": 0, "buckets": 0, "retries": 0}
        self.scheduler: Any = None
        """this model's continuous-batching scheduler, or why it has none (`Scheduler.of` keeps it here)"""

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", dtype: str = "auto", **kwargs) -> "ModelRunner":
        import torch

        meta = ExportMeta.read(path)
        (eos_id,) = meta.require(path, "eos_id")
        model, _ = load_exported(path, device=device, meta=meta)
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        model = model.to(getattr(torch, DTYPES[dtype]))
        return cls(model, device, eos_id=eos_id, pad_id=meta.pad_id, **kwargs)

    # -- one batch -------------------------------------------------------------------------
    def run(self, items: list[Any]) -> list[dict[str, Any]]:
        """Results in item order: tokens, finish_reason, option log-likelihoods/probabilities."""
        self.stats["batches"] += 1
        self.stats["requests"] += len(items)
        try:
            return self._run(items)
        except Exception as exc:  # noqa: BLE001 - isolate the request that breaks the batch
            if len(items) == 1:
                log.exception("request failed")
                return [{"error": f"{type(exc).__name__}: {exc}"}]
            log.warning("batch of %d failed (%s); retrying each request alone", len(items), exc)
            self.stats["retries"] += 1
            return [self.run([item])[0] for item in items]

    def _run(self, items: list[Any]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        results: list[dict[str, Any]] = [{} for _ in items]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, it in enumerate(items):
            sampled = it.temperature > 0
            key = (it.temperature if sampled else 0.0, it.top_p if sampled else 1.0, it.ignore_eos,
                   (i, it.seed) if sampled and it.seed is not None else None)
            groups[key].append(i)
        for (temperature, top_p, ignore_eos, alone), members in groups.items():
            lengths = [len(items[i].prompt_ids) for i in members]
            for bucket in plan_buckets(lengths, self.max_pad_fraction):
                self.stats["buckets"] += 1
                idx = [members[b] for b in bucket]
                self._generate(items, idx, results, temperature, top_p, ignore_eos,
                               None if alone is None else alone[1])
        scored = [i for i, it in enumerate(items) if it.option_ids]
        if scored:
            self._score(items, scored, results)
        for i, it in enumerate(items):
            if getattr(it, "logprobs", None) is not None:
                results[i]["logprobs"] = self.token_logprobs(it, results[i]["tokens"], it.logprobs)
        ms = (time.perf_counter() - t0) * 1000
        for r in results:
            r["batch_size"] = len(items)
            r["model_ms"] = ms
        return results

    def _pixels(self, items: list[Any], idx: list[int]):
        import torch
        arrays = [items[i].pixel_values for i in idx if len(items[i].pixel_values)]
        if not arrays:
            return None
        return torch.from_numpy(np.concatenate(arrays).astype(np.float32, copy=False)).to(self.device)

    def _generate(self, items, idx, results, temperature, top_p, ignore_eos, seed) -> None:
        max_new = max(items[i].max_new_tokens for i in idx)
        rows = generate(self.model, [items[i].prompt_ids for i in idx], self._pixels(items, idx),
                        max_new_tokens=max_new, eos_token_id=None if ignore_eos else self.eos_id,
                        pad_token_id=self.pad_id, temperature=temperature, top_p=top_p, seed=seed)
        for i, row in zip(idx, rows):
            limit = items[i].max_new_tokens
            tokens = row[:limit]
            stopped = not ignore_eos and len(row) < limit  # ended at end of text within its limit
            results[i]["tokens"] = [int(t) for t in tokens]
            results[i]["finish_reason"] = "stop" if stopped else "length"

    def stream(self, item: Any):
        """Generate one request token by token: yields each new token id as soon as it is decoded
        and returns the finish reason ("stop" at end of text, else "length"). The same steps as
        `generate` on a batch of one (prompt once through the KV cache, then a token per step), so
        a greedy stream equals the batched answer."""
        import torch

        from medmix.model.generation import _cache_kwarg, _new_cache, _sample, left_pad
        model, device = self.model, self.device
        stops = [] if item.ignore_eos else [self.eos_id]
        generator = None
        if item.temperature > 0 and item.seed is not None:
            generator = torch.Generator(device=device).manual_seed(item.seed)
        with torch.no_grad():
            ids, mask = left_pad([item.prompt_ids], self.pad_id, device)
            embeds = model.embed(ids, self._pixels([item], [0]))
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            decoder, cache_kw = model.decoder, _cache_kwarg(model.decoder)
            cache = _new_cache(decoder)
            banned = [model.image_token_id] + ([self.pad_id] if self.pad_id not in stops else [])
            step_embeds, step_pos = embeds, positions
            for _ in range(item.max_new_tokens):
                out = decoder(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_pos,
                              use_cache=True, logits_to_keep=1, **{cache_kw: cache})
                logits = out.logits[:, -1].float()
                logits[:, banned] = float("-inf")
                nxt = _sample(logits, item.temperature, item.top_p, generator)
                token = int(nxt[0])
                if token in stops:
                    return "stop"
                yield token
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                step_pos = positions[:, -1:] + 1
                positions = torch.cat([positions, step_pos], dim=1)
                step_embeds = decoder.get_input_embeddings()(nxt[:, None])
        return "length"

    def token_logprobs(self, item: Any, tokens: list[int], top: int) -> list[dict[str, Any]]:
        """Each generated token's log-probability under the model (and the `top` likeliest
        tokens at its position): one forward pass over prompt + answer, after generation.

        The distribution is the model's own (temperature 1, no top-p), with the tokens that
        generation never emits (image, padding) excluded, as `generate` excludes them."""
        import torch
        if not tokens:
            return []
        prompt = list(item.prompt_ids)
        ids = torch.as_tensor([prompt + list(tokens)], dtype=torch.long, device=self.device)
        pixels = self._pixels([item], [0])
        with torch.no_grad():
            embeds = self.model.embed(ids, pixels)
            positions = torch.arange(ids.shape[1], device=self.device)[None]
            logits = self.model.decoder(inputs_embeds=embeds, attention_mask=torch.ones_like(ids),
                                        position_ids=positions, use_cache=False).logits[0]
            rows = logits[len(prompt) - 1:len(prompt) - 1 + len(tokens)].float()
            banned = [self.model.image_token_id] + ([self.pad_id] if self.pad_id != self.eos_id else [])
            rows[:, banned] = float("-inf")
            logp = torch.log_softmax(rows, dim=-1)
            chosen = logp.gather(1, torch.as_tensor(tokens, device=logp.device)[:, None])[:, 0].tolist()
            best = logp.topk(top, dim=-1) if top else None
        out = []
        for k, (token, lp) in enumerate(zip(tokens, chosen)):
            entry: dict[str, Any] = {"id": int(token), "logprob": float(lp)}
            if best is not None:
                entry["top"] = [(int(t), float(v)) for t, v in zip(best.indices[k].tolist(), best.values[k].tolist())]
            out.append(entry)
        return out

    def _score(self, items, idx, results) -> None:
        scores = score_options(self.model, [items[i].score_prompt_ids for i in idx],
                               [items[i].option_ids for i in idx], self._pixels(items, idx),
                               batch_size=self.score_batch_size, pad_token_id=self.pad_id)
        for i, s in zip(idx, scores):
            results[i]["option_logprobs"] = [float(v) for v in s.logprobs]
            results[i]["option_probs"] = [float(v) for v in s.probs]
