"""`ServeConfig`: how `medmix serve` runs the HTTP API — address, batching, replicas, limits.

    medmix serve --model medmix@champion --set serve.max_batch_size=32 --set serve.num_gpus=1
    medmix serve --model medmix/3 --emit-config serve.yaml      # for `serve deploy serve.yaml`

Batching (`batching`): "continuous" (the default) keeps one decode batch per model in the
replica that requests join between decode steps and leave as soon as they are done
(`medmix.serve.scheduler`), at most `max_batch_size` rows, the rest waiting their turn;
"static" gathers requests for up to `batch_wait_timeout_s` or until `max_batch_size` are
waiting (`@serve.batch`) and decodes each batch until its longest request is done. A replica
only ever holds `max_ongoing_requests` requests, and Ray Serve's default (5) caps every batch
at 5; `0` here means 2 x max_batch_size, so a full batch runs while as many more wait.

Limits are checked in the ingress, before anything reaches the model: a request over any of
them gets a 4xx JSON error naming the limit and the `--set serve.<key>=...` that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import ConfigError, option

BATCHING = ("continuous", "static")


@dataclass
class ServeConfig:
    """The HTTP API on Ray Serve: address, batching, replicas, resources and request limits."""

    host: str = option("127.0.0.1", "address the HTTP proxy binds; 0.0.0.0 exposes it beyond this machine")
    port: int = option(8000, "HTTP port of the Serve proxy", ge=1, le=65535)
    app_name: str = option("medmix", "Ray Serve application name")
    request_timeout_s: float = option(120.0, "end-to-end HTTP timeout of one request, seconds", gt=0)
    access_log: bool = option(True, "log every request in the replicas' logs (off saves CPU at high request rates)")

    # -- batching -------------------------------------------------------------------------
    batching: str = option("continuous", "how the model replica batches: continuous (requests join the running "
                           "decode batch between steps and leave when done) or static (@serve.batch: a batch "
                           "decodes until its longest request is done)", choices=BATCHING)
    max_batch_size: int = option(16, "most requests one model forward pass serves (continuous: rows of the "
                                 "decode batch; static: @serve.batch's batch)", ge=1, le=1024)
    batch_wait_timeout_s: float = option(0.02, "static batching: longest a request waits for its batch to fill, "
                                         "seconds", ge=0)
    admit_every: int = option(1, "continuous batching: while rows are decoding, admit waiting requests every this "
                              "many decode steps (1 = every step; more prefills newcomers together, one forward for "
                              "several, at up to that many steps' wait)", ge=1, le=64)
    max_ongoing_requests: int = option(0, "requests a model replica holds at once; 0 = 2 x max_batch_size", ge=0)
    compute_in_thread: bool = option(False, "run batches (continuous: decode steps) in a worker thread, leaving "
                                     "the replica's event loop free meanwhile, instead of on the event loop (static "
                                     "batches fill better there: requests that arrive during a batch join the next "
                                     "one together; continuous steps yield the loop between steps either way)")
    health_check_timeout_s: float = option(120.0, "seconds a model replica may take to answer a health check "
                                           "(a batch in progress delays it) before Serve restarts it", gt=0)
    max_pad_fraction: float = option(0.5, "split a batch into length buckets when padding would exceed this "
                                     "share of its prompt tokens", ge=0, le=1)

    # -- replicas and resources -----------------------------------------------------------
    min_replicas: int = option(1, "model replicas kept running (autoscaling floor)", ge=1)
    max_replicas: int = option(1, "model replicas under load (autoscaling ceiling)", ge=1)
    target_ongoing_requests: float = option(0.0, "autoscale to keep this many requests per replica; "
                                            "0 = max_batch_size", ge=0)
    ingress_replicas: int = option(1, "FastAPI ingress replicas (decode, tokenize, validate)", ge=1)
    num_cpus: float = option(1.0, "CPUs per model replica", ge=0)
    ingress_num_cpus: float = option(0.5, "CPUs per ingress replica", ge=0)
    num_gpus: float = option(-1.0, "GPUs per model replica; -1 = 1 if the cluster has GPUs, else 0", ge=-1)
    dtype: str = option("auto", "weights on the replica: auto (bfloat16 on GPU, float32 on CPU)",
                        choices=("auto", "float32", "bfloat16", "float16"))
    torch_threads: int = option(0, "torch intra-op threads per CPU replica; 0 = its CPUs (at least 1)", ge=0)
    max_models_per_replica: int = option(3, "model versions one replica keeps loaded (LRU, @serve.multiplexed)",
                                         ge=1)

    # -- request limits -------------------------------------------------------------------
    max_body_bytes: int = option(32 * 2**20, "largest request body, bytes (base64 images count here)", ge=1024)
    max_image_pixels: int = option(40_000_000, "largest image, width x height pixels (checked before decoding)",
                                   ge=64)
    max_images: int = option(32, "most images one request carries", ge=1)
    max_input_chars: int = option(20_000, "most characters of text over all input fields", ge=16)
    max_new_tokens: int = option(256, "most tokens a request may ask the model to generate", ge=1)
    default_max_new_tokens: int = option(64, "tokens generated when a request does not say", ge=1)
    max_options: int = option(26, "most answer options a multiple-choice request may list", ge=2, le=26)

    # -- following registry aliases ---------------------------------------------------------
    alias_poll_s: float = option(30.0, "how often the ingress asks the registry where each --model alias "
                                 "(medmix@champion) points; when it moved, new requests go to the new version "
                                 "and in-flight ones finish on the old; 0 = resolve once at deploy time", ge=0)

    # -- API keys, rate limits, audit ------------------------------------------------------
    keys_file: str = option("", "JSON file of API keys: name + sha256 of each key (medmix.serve.keys), re-read "
                            "when it changes; '' = none ($MEDMIX_API_TOKEN still works as a key named token)")
    rate_limit_per_minute: float = option(0.0, "requests per minute per API key and ingress replica; 0 = "
                                          "unlimited; a key's own rate_per_minute in the keys file wins", ge=0)
    rate_limit_burst: int = option(0, "requests a key may send at once above its rate; 0 = a minute's worth", ge=0)
    audit_log: str = option("", "JSON-lines audit log, a line per request (key name, endpoint, model, status, "
                            "latency, tokens; no content); '' = <lineage.root>/serve/audit.jsonl, 'off' = none")

    def validate(self) -> None:
        if self.max_replicas < self.min_replicas:
            raise ConfigError(f"max_replicas = {self.max_replicas} is below min_replicas = {self.min_replicas}")
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ConfigError(f"default_max_new_tokens = {self.default_max_new_tokens} exceeds "
                              f"max_new_tokens = {self.max_new_tokens}")
        if self.num_gpus != -1 and self.num_gpus < 0:
            raise ConfigError(f"num_gpus = {self.num_gpus}: use -1 (auto), 0, or a positive count")
        if self.max_ongoing_requests and self.max_ongoing_requests < self.max_batch_size:
            raise ConfigError(f"max_ongoing_requests = {self.max_ongoing_requests} is below max_batch_size = "
                              f"{self.max_batch_size}: batches could never fill (use 0 for 2 x max_batch_size)")

    # -- derived values -------------------------------------------------------------------
    @property
    def ongoing_requests(self) -> int:
        """What the model deployment's `max_ongoing_requests` becomes."""
        return self.max_ongoing_requests or 2 * self.max_batch_size

    @property
    def autoscale_target(self) -> float:
        return self.target_ongoing_requests or float(self.max_batch_size)


def resolve_num_gpus(cfg: ServeConfig) -> float:
    """`num_gpus`, with -1 turned into 1 when the connected Ray cluster has a GPU, else 0."""
    if cfg.num_gpus >= 0:
        return cfg.num_gpus
    import ray
    if not ray.is_initialized():
        return 0.0
    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
