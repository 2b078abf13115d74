"""Start, stop and describe the Serve app: what `medmix serve`, `jobs/serve.py` and tests call.

    url = start(cfg, resolve_models(["medmix@champion"], cfg.lineage))   # returns when ready
    serve_forever(cfg, ["medmix@champion"])                               # until Ctrl-C
    text = emit_config(cfg, ["medmix@champion"], "serve.yaml")            # for `serve deploy`

`start` connects to the cluster named by RAY_ADDRESS (or the Ray this process already
joined), else starts a local one; it binds `serve.host` (127.0.0.1 by default: the API is
not reachable from other machines unless you say `--host 0.0.0.0`). The emitted YAML is a
Ray Serve config file: HTTP options, one application whose `import_path` is
`medmix.serve.app:build_app` with the models and the serve/lineage config as args, and
both deployments' replicas, autoscaling and resources. It is checked against Ray's own
`ServeDeploySchema` before it is written. It never contains the API token: set
MEDMIX_API_TOKEN in the cluster's environment (or the application's runtime_env).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import ray
from ray import serve

from medmix.lineage.backend import pin_tracking_uri
from medmix.lineage.registry import parse_model_ref
from medmix.runtime import ensure_ray as ensure
from medmix.serve.app import INGRESS_NAME, MODEL_NAME, build_application, deployment_options
from medmix.serve.auth import token_digest
from medmix.serve.client import ask
from medmix.serve.models import ModelEntry, resolve_models
from medmix.tasks import get_task


def ensure_ray(cfg) -> None:
    """Join RAY_ADDRESS / the current Ray, else start a local one with room for both deployments."""
    if ray.is_initialized():
        return
    s = cfg.serve
    ensure(s.num_cpus * s.max_replicas + s.ingress_num_cpus * s.ingress_replicas)


def start(cfg, entries: list[ModelEntry], token_sha256: str | None = None) -> str:
    """Deploy the app on Serve (starting Serve on `serve.host:serve.port` if needed); returns its URL."""
    ensure_ray(cfg)
    s = cfg.serve
    serve.start(http_options={"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s})
    serve.run(build_application(cfg, entries, token_sha256), name=s.app_name, route_prefix="/")
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
    return f"http://{host}:{s.port}"


def stop(cfg, shutdown: bool = True) -> None:
    """Delete the app; with `shutdown`, stop Serve on the cluster as well."""
    if shutdown:
        serve.shutdown()
    else:
        serve.delete(cfg.serve.app_name)


def describe(url: str, entries: list[ModelEntry], auth: bool, keys_file: str = "") -> str:
    if keys_file:
        how = f"Bearer token required (keys file {keys_file}{' and $MEDMIX_API_TOKEN' if auth else ''})"
    elif auth:
        how = "Bearer token required ($MEDMIX_API_TOKEN)"
    else:
        how = "off (set MEDMIX_API_TOKEN or serve.keys_file to require a key)"
    lines = [f"medmix serving at {url}  (OpenAPI: {url}/docs; OpenAI-compatible: {url}/v1/chat/completions)",
             f"  auth: {how}"]
    for i, e in enumerate(entries):
        alias = f"  aliases: {', '.join(e.aliases)}" if e.aliases else ""
        lines.append(f"  model {e.id}{' (default)' if i == 0 else ''}: {e.path}{alias}")
    lines.append(f"  try: curl -s {url}/v1/tasks | head -c 600")
    return "\n".join(lines)


def serve_forever(cfg, models: list[str], *, detach: bool = False, out=print) -> int:
    """Resolve models, deploy, print how to reach it, block until Ctrl-C (then shut down)."""
    if any(parse_model_ref(m) for m in models):
        # replicas on other nodes fetch registry versions from exactly this server
        pin_tracking_uri(cfg.lineage)
    entries = resolve_models(models, cfg.lineage)
    digest = token_digest()
    url = start(cfg, entries, digest)
    out(describe(url, entries, digest is not None, cfg.serve.keys_file))
    if detach:
        out(f"  detached: the app keeps running on the cluster; stop it with `serve shutdown` "
            f"or `serve delete {cfg.serve.app_name}`")
        return 0
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        out("medmix serve: shutting down")
    finally:
        stop(cfg, shutdown=True)
    return 0


# --- the Serve config file ---------------------------------------------------------------------

def _model_arg(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def serve_config(cfg, models: list[str], runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Ray Serve config (`serve deploy` / `serve run`) for these models and settings; `runtime_env`
    (what `medmix deploy kuberay serve` carries: the tracking URI) goes to the application."""
    s = cfg.serve
    if not models:
        raise ValueError("no model to serve: give --model medmix@champion, medmix/N, an export or a checkpoint")
    # -1 (auto) stays out of the file: build_app decides on the cluster, which knows its GPUs
    num_gpus = s.num_gpus if s.num_gpus >= 0 else None
    opts = deployment_options(s, num_gpus)
    deployments = [{"name": name, **opts[name]} for name in (MODEL_NAME, INGRESS_NAME)]
    sections = {"serve": dataclasses.asdict(s), "lineage": dataclasses.asdict(cfg.lineage)}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s},
        "applications": [{
            "name": s.app_name,
            "route_prefix": "/",
            "import_path": "medmix.serve.app:build_app",
            "args": {"models": [_model_arg(m) for m in models], **sections},
            "deployments": deployments,
            **({"runtime_env": runtime_env} if runtime_env else {}),
        }],
    }


def serve_config_yaml(cfg, models: list[str], runtime_env: dict[str, Any] | None = None) -> str:
    """`serve_config` as YAML, checked by Ray's own schema of the file `serve deploy` reads
    (and of a KubeRay RayService's serveConfigV2)."""
    import yaml
    from ray.serve.schema import ServeDeploySchema
    data = serve_config(cfg, models, runtime_env)
    ServeDeploySchema.model_validate(data)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def emit_config(cfg, models: list[str], path: str | Path | None = None) -> str:
    """The YAML text of `serve_config` with a header saying how to deploy it; written to `path` if given."""
    header = ("# Ray Serve config for medmix, written by `medmix serve --emit-config`.\n"
              "# Deploy: serve deploy THIS_FILE  (RAY_ADDRESS or --address names the cluster)\n"
              "# The API token is not in this file: set MEDMIX_API_TOKEN in the cluster's environment\n"
              "# (or add runtime_env: {env_vars: {MEDMIX_API_TOKEN: ...}} to the application). A keys file\n"
              "# (serve.keys_file) must exist at that path on the nodes running the ingress.\n"
              "# Export directories given as paths must exist on the cluster's nodes; registry\n"
              "# references (medmix@champion) are fetched there from lineage.tracking_uri.\n")
    text = header + serve_config_yaml(cfg, models)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text


# --- one real answer (what `make demo` ends with) -----------------------------------------------

def store_request(store_root: str | Path, task: str, split: str = "test") -> dict[str, Any]:
    """A /v1/predict body built from the first `split` row of `task` in the shard store."""

    from medmix.data.store import ShardStore
    row = next(iter(ShardStore(store_root).iter_examples(task, split)), None)
    if row is None:
        raise ValueError(f"no {split} row of task {task} in {store_root}")
    inputs: dict[str, Any] = dict(row.context)
    images = [base64.b64encode(b).decode() for b in row.images]
    if images:
        if get_task(task).multi_image:
            inputs["images"] = images
        else:
            inputs["image"] = images[0]
    return {"task": task, "inputs": inputs, "reference": row.target, "example_id": row.example_id}


def answer_once(cfg, model: str = "medmix@champion", task: str = "cxr_classify") -> dict[str, Any]:
    """Serve `model`, ask it about one test example of `task` over HTTP, stop; returns
    {"request": {...}, "reference": target, "answer": response JSON}."""

    body = store_request(cfg.data.root, task)
    token = os.environ.get("MEDMIX_API_TOKEN")
    url = start(cfg, resolve_models([model], cfg.lineage), token_digest())
    try:
        answer = ask(url, body["task"], body["inputs"], token=token)
    finally:
        stop(cfg, shutdown=True)
    shown = {k: (v if k not in ("image", "images") else "<base64 image>") for k, v in body["inputs"].items()}
    return {"request": {"task": task, "example_id": body["example_id"], "inputs": shown},
            "reference": body["reference"], "answer": answer}
