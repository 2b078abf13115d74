"""The Ray Serve application: a FastAPI ingress in front of a batched, multiplexed model deployment.

    medmix serve --model medmix@champion                 # run it here, until Ctrl-C
    serve deploy serve.yaml                              # from `medmix serve --emit-config`
    build_app({"models": ["medmix@champion"]})           # what that YAML's import_path calls

HTTP (all JSON; OpenAPI at /docs):
    POST /v1/predict   {task, inputs, options} -> text (+ option probabilities, genotype)
    GET  /v1/tasks     each task's input fields and a working example body
    POST /v1/chat/completions  OpenAI's chat completions (images as data: URIs, streaming; medmix.chat)
    GET  /v1/models    the served versions and their lineage, in OpenAI's list shape
    GET  /healthz      liveness (no token needed)

Two deployments. `MedmixIngress` (FastAPI, CPU) authenticates, enforces the limits, decodes
images and tokenizes with each served model's own tokenizer (`medmix.serve.inputs`, the
training code path); only a request that passed every check reaches the model. `MedmixModel`
holds up to `serve.max_models_per_replica` versions per replica (`@serve.multiplexed`; the
`X-Medmix-Model` header, `serve_multiplexed_model_id` header or `model` field picks one), its
`max_ongoing_requests` set so that batches can fill. How it batches is `serve.batching`:

- "continuous" (default): each version has one decode batch (`medmix.serve.scheduler`) that a
  request joins at the next decode step and leaves as soon as it is done, so a short request
  is not held up by a long one; streams ride the same batch. The steps run on the replica's
  event loop, which they yield between steps: requests are admitted, health checks and streams
  answered mid-decode (`serve.compute_in_thread` runs each step in a worker thread instead).
- "static": `@serve.batch` (`medmix.serve.runner`: length buckets, one forward pass per
  bucket); a batch decodes until its longest request is done. It runs on the event loop by
  default: requests arriving meanwhile queue in Ray and join the next batch together
  (`serve.compute_in_thread` trades that for health checks answered mid-batch). Streams decode
  one request each, beside the batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import serve

from medmix.config import config_from_dict
from medmix.model.export_meta import WEIGHTS_FILE
from medmix.observability.metrics import record_batch, set_served_model
from medmix.serve.auth import token_digest
from medmix.serve.chat import (Answer, ChatCompletionRequest, ChatError, StreamText, chat_item, completion_id,
                               cut_at_stop, error_body, logprobs_content, model_card, now, parse_turns, sse_event)
from medmix.serve.config import ServeConfig, resolve_num_gpus
from medmix.serve.keys import AuditLog, Keyring, RateLimiter, load_keys
from medmix.serve.inputs import InputError, Limits, Preprocessor, genotype, task_info
from medmix.lineage.registry import get_version, parse_model_ref
from medmix.model.resolve import resolve
from medmix.serve.models import ModelEntry, local_path, resolve_models
from medmix.serve.runner import ModelRunner, pick_device
from medmix.tasks import all_tasks, get_task
from medmix.tasks.spec import UnknownTaskError

log = logging.getLogger(__name__)

INGRESS_NAME = "MedmixIngress"
MODEL_NAME = "MedmixModel"


def _config(sections: dict[str, Any]):
    """A root config from plain dicts (what travels to replicas and sits in the Serve YAML)."""
    return config_from_dict({k: v for k, v in sections.items() if k in ("serve", "lineage")})


def _sections(cfg) -> dict[str, Any]:
    return {"serve": dataclasses.asdict(cfg.serve), "lineage": dataclasses.asdict(cfg.lineage)}


def _created(path: str) -> int:
    try:
        return int(Path(path, WEIGHTS_FILE).stat().st_mtime)
    except OSError:
        return 0


# --- the model deployment ------------------------------------------------------------------

@serve.deployment(name=MODEL_NAME)
class MedmixModel:
    """Model versions (multiplexed) answering batches of prepared requests."""

    def __init__(self, entries: list[dict], sections: dict[str, Any]):
        import torch

        cfg = _config(sections)
        self.cfg: ServeConfig = cfg.serve
        self.lineage = cfg.lineage
        self.entries = {e["id"]: ModelEntry.from_dict(e) for e in entries}
        self.device = pick_device()
        import medmix.model.export  # noqa: F401 - pay torch/timm/transformers imports before the first request
        if self.device == "cpu":
            torch.set_num_threads(self.cfg.torch_threads or max(1, int(self.cfg.num_cpus)))

        async def load_model(model_id: str):
            return await asyncio.to_thread(self._load, model_id)

        # built here (not as a class decorator) so the LRU size comes from the config
        self.get_model = serve.multiplexed(max_num_models_per_replica=self.cfg.max_models_per_replica)(load_model)
        self.static_only: set[str] = set()  # versions continuous batching cannot serve
        self.predict_batch.set_max_batch_size(self.cfg.max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s)

    def _load(self, model_id: str):
        if model_id not in self.entries:
            ref = parse_model_ref(model_id)
            if ref is None or ref.version is None:
                raise KeyError(f"model {model_id!r} is not served by this deployment ({', '.join(self.entries)})")
            # a registry version an alias moved to after deployment (`MedmixIngress.follow_aliases`)
            self.entries[model_id] = ModelEntry.from_export(resolve(f"models:/{model_id}", self.lineage))
        path = local_path(self.entries[model_id], self.lineage)
        t0 = time.perf_counter()
        runner = ModelRunner.load(path, device=self.device, dtype=self.cfg.dtype,
                                  max_pad_fraction=self.cfg.max_pad_fraction)
        log.info("loaded %s from %s on %s in %.1fs", model_id, path, self.device, time.perf_counter() - t0)
        return runner

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def predict_batch(self, items: list) -> list[dict]:
        """Static batching: the batch `@serve.batch` gathered, decoded until its longest request is done."""
        record_batch(len(items), serve.get_multiplexed_model_id())
        # Serve splits batches by multiplexed model id, so one batch is one model
        runner = await self.get_model(serve.get_multiplexed_model_id())
        if self.cfg.compute_in_thread:
            return await asyncio.to_thread(runner.run, items)
        # On the event loop: requests that arrive meanwhile wait in Ray's queue and are admitted
        # together when the batch ends. In a thread, the decode loop and the event loop fight for
        # the GIL and only ~4 requests got in per batch at concurrency 32 (benchmarks/serve.py).
        return runner.run(items)

    def _scheduler(self, runner: ModelRunner, model_id: str):
        """The version's continuous-batching scheduler; None under static batching, or for a model
        whose KV cache cannot merge rows (served with static batches, said once in the log)."""
        from medmix.serve.scheduler import ContinuousBatchingUnsupported, Scheduler  # torch: replicas only
        if self.cfg.batching != "continuous":
            return None
        try:
            return Scheduler.of(runner, self.cfg.max_batch_size, admit_every=self.cfg.admit_every,
                                in_thread=self.cfg.compute_in_thread, on_step=lambda size: record_batch(size, model_id))
        except ContinuousBatchingUnsupported as exc:
            if model_id not in self.static_only:
                self.static_only.add(model_id)
                log.warning("%s: %s; serving it with static batches", model_id, exc)
            return None

    async def predict(self, item) -> dict:
        if self.cfg.batching == "continuous":
            model_id = serve.get_multiplexed_model_id()
            scheduler = self._scheduler(await self.get_model(model_id), model_id)
            if scheduler is not None:
                return await scheduler.submit(item)
        return await self.predict_batch(item)

    async def stream(self, item):
        """One request, token by token (`stream: true` chat completions): yields token ids, then
        {"finish_reason": ...}. Under continuous batching it is a row of the decode batch like
        any request; otherwise it runs beside the batches, a decode step at a time, yielding the
        event loop between steps so that batches and other streams go on meanwhile."""
        model_id = serve.get_multiplexed_model_id()
        runner = await self.get_model(model_id)
        scheduler = self._scheduler(runner, model_id)
        if scheduler is not None:
            rows = scheduler.stream(item)
            try:
                async for step in rows:
                    yield step
            finally:
                await rows.aclose()  # a client that left: its row leaves the batch at the next step
            return
        steps = runner.stream(item)
        while True:
            try:
                token = next(steps)
            except StopIteration as done:
                yield {"finish_reason": done.value, "batch_size": 1}
                return
            yield token
            await asyncio.sleep(0)


# --- the HTTP ingress ----------------------------------------------------------------------

@serve.deployment(name=INGRESS_NAME)
@serve.ingress()
class MedmixIngress:
    """FastAPI front: auth, limits, validation and preprocessing; forwards to MedmixModel."""

    def __init__(self, model, entries: list[dict], sections: dict[str, Any], token_sha256: str | None):
        cfg = _config(sections)
        self.model = model
        self.handles: dict[str, Any] = {}
        self.cfg: ServeConfig = cfg.serve
        self.limits = Limits.from_config(self.cfg)
        self.entries = [ModelEntry.from_dict(e) for e in entries]
        self.prep = {e.id: Preprocessor.from_export(local_path(e, cfg.lineage)) for e in self.entries}
        self.names = {}
        for e in self.entries:
            for name in e.names():
                self.names.setdefault(name, e.id)
        self.by_id = {e.id: e for e in self.entries}
        self.default = self.entries[0].id
        self.token_sha256 = token_sha256
        self.keyring = Keyring(self.cfg.keys_file or None, token_sha256)
        self.limiter = RateLimiter(self.cfg.rate_limit_per_minute, self.cfg.rate_limit_burst)
        self.audit = AuditLog(None if self.cfg.audit_log in ("", "off") else self.cfg.audit_log)
        self.tasks = [task_info(spec) for spec in all_tasks()]
        self.models = [{**e.describe(), "default": e.id == self.default} for e in self.entries]
        # OpenAI's model objects: `created` is when the version's weights were written
        self.model_cards = [model_card(m, _created(e.path)) for m, e in zip(self.models, self.entries)]
        # decoding and tokenizing are CPU work: off the event loop, a few at a time
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="medmix-prep")
        set_served_model([e.id for e in self.entries])  # Prometheus: the versions this app answers with
        self.lineage = cfg.lineage
        # --model values that name a registry alias: {ref: (registry name, alias)}, followed by a poller
        self.following = {}
        for e in self.entries:
            ref = parse_model_ref(e.source)
            if ref is not None and ref.alias is not None:
                self.following[e.source] = (ref.name, ref.alias)
        self.stop_polling = threading.Event()
        if self.following and self.cfg.alias_poll_s > 0:
            threading.Thread(target=self._poll_aliases, name="medmix-alias-poll", daemon=True).start()

    def _poll_aliases(self) -> None:
        while not self.stop_polling.wait(self.cfg.alias_poll_s):
            try:
                self.follow_aliases()
            except Exception as exc:  # noqa: BLE001 - the registry may be down for a while; keep serving
                log.warning("alias poll failed (%s: %s); still serving %s", type(exc).__name__, exc,
                            ", ".join(self.names[s] for s in self.following))

    def follow_aliases(self) -> list[str]:
        """Ask the registry where each followed alias points; switch the ones that moved (returns
        the new ids). The new version gets its own tokenizer and entry; the alias names (the
        `--model` value, `name@alias`, `alias`) then lead to it, so new requests use it, while a
        request already past `pick_model` finishes on the old one, which stays servable by id."""
        moved = []
        for source, (name, alias) in self.following.items():
            current = self.names[source]
            version = get_version(self.lineage, name, alias)
            new_id = f"{version.name}/{version.version}"
            if new_id == current:
                continue
            if new_id not in self.by_id:
                entry = ModelEntry.from_export(resolve(f"models:/{new_id}", self.lineage))
                prep = Preprocessor.from_export(local_path(entry, self.lineage))
                self.prep[entry.id] = prep  # before any name leads to it
                self.entries = [*self.entries, entry]
                self.by_id = {**self.by_id, entry.id: entry}
            entry = self.by_id[new_id]
            taken = {source, f"{name}@{alias}", alias}
            names = dict(self.names)
            for n in [entry.id, *entry.aliases]:
                names.setdefault(n, entry.id)
            for n in taken:
                names[n] = entry.id
            for e in self.entries:  # the alias names belong to the new version only
                e.aliases = [a for a in e.aliases if a not in taken or e.id == entry.id]
            entry.aliases = list(dict.fromkeys([*entry.aliases, *sorted(taken - {entry.id})]))
            if self.default == current:
                self.default = entry.id
            self.names = names
            self._describe()
            set_served_model([e.id for e in self.entries])
            log.info("%s moved: %s -> %s (new requests use %s)", f"{name}@{alias}", current, new_id, new_id)
            moved.append(new_id)
        return moved

    def _describe(self) -> None:
        models = [{**e.describe(), "default": e.id == self.default} for e in self.entries]
        cards = [model_card(m, _created(e.path)) for m, e in zip(models, self.entries)]
        self.models, self.model_cards = models, cards

    def __serve_build_asgi_app__(self):
        from medmix.serve.http import build_http_app
        return build_http_app(self)

    def pick_model(self, header: str | None, field: str | None) -> str:
        name = header or field
        if not name:
            return self.default
        if name not in self.names:
            raise InputError(f"model {name!r} is not served here; served: "
                             f"{', '.join(e.id for e in self.entries)} (GET /v1/models)",
                             "X-Medmix-Model" if header else "model", status=404)
        return self.names[name]

    async def predict(self, body, header_model: str | None) -> dict:
        """Validate, preprocess, ask the model, build the response (raises InputError)."""
        t0 = time.perf_counter()
        model_id = self.pick_model(header_model, body.model)
        try:
            spec = get_task(body.task)
        except UnknownTaskError as exc:
            raise InputError(str(exc), "task") from None
        prep = self.prep[model_id]
        loop = asyncio.get_running_loop()
        item = await loop.run_in_executor(self.executor, prep.prepare, spec, body.inputs, body.options, self.limits)
        result = await self._ask(model_id, item)
        entry = self.by_id[model_id]
        out: dict[str, Any] = {
            "task": spec.name, "text": prep.decode(result["tokens"]),
            "model": {"id": entry.id, "version": entry.version, "digest": entry.digest},
            "finish_reason": result["finish_reason"], "num_prompt_tokens": len(item.prompt_ids),
            "num_generated_tokens": len(result["tokens"]), "exemplar": item.exemplar,
            "truncated": item.truncated, "batch_size": result.get("batch_size", 1),
            "ignored_fields": item.ignored_fields,
        }
        if item.options and "option_probs" in result:
            probs = result["option_probs"]
            out["options"] = [{"option": o, "prob": p, "logprob": lp}
                              for o, p, lp in zip(item.options, probs, result["option_logprobs"])]
            out["prediction"] = item.options[max(range(len(probs)), key=probs.__getitem__)]
            if spec.kind == "variant":
                out["genotype"] = genotype(probs)
        out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return out


    async def chat_prepare(self, body: ChatCompletionRequest):
        """Validate and encode a chat request: (model id, task spec or None, ModelInputs); raises ChatError."""
        body.check()
        try:
            model_id = self.pick_model(None, body.model)
        except InputError as exc:
            raise ChatError(exc.message, "model", 404, "model_not_found") from None
        spec = None
        if body.medmix is not None:
            try:
                spec = get_task(body.medmix.task)
            except UnknownTaskError as exc:
                raise ChatError(str(exc), "medmix.task") from None
        prep = self.prep[model_id]
        turns = parse_turns(body.messages, self.limits)
        loop = asyncio.get_running_loop()
        item = await loop.run_in_executor(self.executor, chat_item, prep, turns, body, self.limits, spec)
        return model_id, spec, item

    async def chat(self, body: ChatCompletionRequest) -> Answer:
        """A chat completion request -> its Answer (raises ChatError for a bad request)."""
        model_id, spec, item = await self.chat_prepare(body)
        prep = self.prep[model_id]
        result = await self._ask(model_id, item)
        tokens = result["tokens"]
        text = prep.decode(tokens)
        tokens, text, stopped = cut_at_stop(prep.tokenizer, tokens, text, body.stops)
        entry = self.by_id[model_id]
        logprobs = None
        if "logprobs" in result:
            logprobs = logprobs_content(prep.tokenizer, result["logprobs"][:len(tokens)])
        return Answer(id=completion_id(), created=now(), model=entry.id, fingerprint=f"medmix-{entry.digest[:12]}",
                      text=text, tokens=tokens, finish_reason="stop" if stopped else result["finish_reason"],
                      prompt_tokens=len(item.prompt_ids), logprobs=logprobs,
                      medmix={"model_version": entry.version, "digest": entry.digest,
                              "task": spec.name if spec else None, "exemplar": item.exemplar if spec else False,
                              "truncated": item.truncated, "batch_size": result.get("batch_size", 1)})

    async def chat_stream(self, body: ChatCompletionRequest, model_id: str, spec, item, note: dict):
        """Server-sent events of a chat completion, each token's text sent as soon as the model
        decoded it (`medmix.serve.chat.StreamText`), then the finish reason, the usage (with
        stream_options.include_usage) and `data: [DONE]`. `note` receives the token counts."""
        prep, entry = self.prep[model_id], self.by_id[model_id]
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        head = Answer(id=completion_id(), created=now(), model=entry.id, fingerprint=f"medmix-{entry.digest[:12]}",
                      text="", tokens=[], finish_reason="length", prompt_tokens=len(item.prompt_ids), logprobs=None,
                      medmix={})
        text = StreamText(prep.tokenizer, body.stops)
        yield sse_event(head.chunk({"role": "assistant", "content": ""}, usage=include_usage))
        finish, completed = "length", False
        handle = self.model.options(multiplexed_model_id=model_id, stream=True)
        steps = handle.stream.remote(item)
        try:
            async for step in steps:
                if isinstance(step, dict):
                    finish, completed = step["finish_reason"], True
                    break
                delta = text.add(step)
                if text.stopped:
                    finish = "stop"
                if delta or not text.stopped:
                    yield sse_event(head.chunk({"content": delta}, usage=include_usage))
                if text.stopped:
                    break
        except Exception as exc:  # noqa: BLE001 - the stream has begun: report in-band, then end it
            log.exception("chat stream failed")
            yield sse_event(error_body(500, f"internal error while streaming: {type(exc).__name__}: {exc}"))
            yield "data: [DONE]\n\n"
            return
        finally:
            if not completed and hasattr(steps, "cancel"):
                steps.cancel()  # a stop sequence ended the answer, or the client left: free the replica
        rest = text.finish()
        if rest:
            yield sse_event(head.chunk({"content": rest}, usage=include_usage))
        yield sse_event(head.chunk({}, finish=finish, usage=include_usage))
        head.tokens = text.tokens
        note.update(prompt_tokens=head.prompt_tokens, completion_tokens=len(text.tokens))
        if include_usage:
            yield sse_event({**head.chunk({}), "choices": [], "usage": head.usage})
        yield "data: [DONE]\n\n"

    async def _ask(self, model_id: str, item) -> dict:
        if model_id not in self.handles:  # one handle per version: Serve routes it to replicas holding it
            self.handles[model_id] = self.model.options(multiplexed_model_id=model_id)
        result = await self.handles[model_id].predict.remote(item)
        if "error" in result:
            raise RuntimeError(f"model {model_id} failed on this request: {result['error']}")
        return result


# --- building the application --------------------------------------------------------------

def deployment_options(cfg: ServeConfig, num_gpus: float | None = None) -> dict[str, dict[str, Any]]:
    """Per-deployment Serve options (what `.options()` gets and what the YAML lists)."""
    model: dict[str, Any] = {"max_ongoing_requests": cfg.ongoing_requests,
                             # a static batch runs on the replica's event loop: give long ones
                             # room before Serve calls the replica unhealthy
                             "health_check_timeout_s": cfg.health_check_timeout_s,
                             "ray_actor_options": {"num_cpus": cfg.num_cpus}}
    if num_gpus:
        model["ray_actor_options"]["num_gpus"] = num_gpus
    if cfg.max_replicas > cfg.min_replicas:
        model["autoscaling_config"] = {"min_replicas": cfg.min_replicas, "initial_replicas": cfg.min_replicas,
                                       "max_replicas": cfg.max_replicas,
                                       "target_ongoing_requests": cfg.autoscale_target}
    else:
        model["num_replicas"] = cfg.min_replicas
    if not cfg.access_log:
        model["logging_config"] = {"enable_access_log": False}
    ingress = {"num_replicas": cfg.ingress_replicas,
               # the ingress only awaits: let it hold every request the model replicas can
               "max_ongoing_requests": max(256, 2 * cfg.ongoing_requests * cfg.max_replicas),
               "ray_actor_options": {"num_cpus": cfg.ingress_num_cpus}}
    if not cfg.access_log:
        ingress["logging_config"] = {"enable_access_log": False}
    return {MODEL_NAME: model, INGRESS_NAME: ingress}


def resolve_keys_file(path: str) -> str:
    """The keys file as an absolute path (replicas do not share the caller's working directory);
    checked here so that a bad file stops the deploy with its reason."""
    if not path:
        return ""
    resolved = str(Path(path).expanduser().resolve())
    load_keys(resolved)
    return resolved


def audit_path(setting: str, lineage_root: str) -> str:
    """Where the audit log goes: the setting, else <lineage.root>/serve/audit.jsonl ('' = nowhere:
    'off', or a lineage root that is not a local folder)."""
    if setting == "off":
        return ""
    if setting:
        return str(Path(setting).expanduser().resolve())
    if "://" in lineage_root:
        log.warning("serve.audit_log: lineage.root %s is not a local folder; no audit log unless "
                    "serve.audit_log names a file", lineage_root)
        return ""
    return str(Path(lineage_root).expanduser().resolve() / "serve" / "audit.jsonl")


def build_application(cfg, entries: list[ModelEntry], token_sha256: str | None = None):
    """The bound Serve application for already resolved models."""
    opts = deployment_options(cfg.serve, resolve_num_gpus(cfg.serve))
    sections = _sections(cfg)
    sections["serve"].update(keys_file=resolve_keys_file(cfg.serve.keys_file),
                             audit_log=audit_path(cfg.serve.audit_log, cfg.lineage.root))
    plain = [e.to_dict() for e in entries]
    model = MedmixModel.options(**opts[MODEL_NAME]).bind(plain, sections)
    return MedmixIngress.options(**opts[INGRESS_NAME]).bind(model, plain, sections, token_sha256)


def build_app(args: dict[str, Any]):
    """Application builder for `serve run` / `serve deploy` (the YAML's import_path).

    Args (the YAML's `args`):
        models: list of `--model` values (registry refs, export or checkpoint directories).
        serve, lineage: the `serve` and `lineage` config sections (defaults where left out).
    The API token comes from $MEDMIX_API_TOKEN where the app is built (the cluster).
    """
    args = dict(args or {})
    models = args.pop("models", None)
    if isinstance(models, str):
        models = [models]
    unknown = sorted(set(args) - {"serve", "lineage"})
    if unknown:
        raise ValueError(f"build_app args: unknown key {unknown[0]!r}; valid: models, serve, lineage")
    cfg = _config(args)
    return build_application(cfg, resolve_models(list(models or []), cfg.lineage), token_digest())
