"""`medmix serve`: serve model versions over HTTP with Ray Serve, or write a Serve config file."""

from __future__ import annotations

import argparse
import dataclasses

from medmix.cli import add_config_args, resolve_config
from medmix.options import validate
from medmix.serve.keys import KeysFileError, add_key


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve model versions over HTTP (Ray Serve + FastAPI), or --emit-config a Serve YAML",
        description="Serve one or more model versions behind one HTTP API: POST /v1/predict (every task: "
                    "generated text, option probabilities, genotype), POST /v1/chat/completions (OpenAI-compatible: "
                    "images as data: URIs, streaming), GET /v1/tasks, GET /v1/models (lineage), "
                    "GET /healthz, OpenAPI at /docs. Requests are batched: continuously by default (a request joins "
                    "the replica's running decode batch at the next step and leaves when done; serve.batching="
                    "static is @serve.batch; serve.max_batch_size caps either) "
                    "and a request picks a version with the X-Medmix-Model header (default: the first --model). "
                    "With MEDMIX_API_TOKEN set or a keys file (--keys-file), every endpoint but /healthz needs "
                    "`Authorization: Bearer <key>`; per-key rate limits and a JSON-lines audit log follow. "
                    "Binds 127.0.0.1 unless --host says otherwise. Uses the Ray cluster named by "
                    "RAY_ADDRESS, else starts a local one; blocks until Ctrl-C. Limits, batching, replicas and "
                    "GPUs: the [serve] config section (see --dry-run).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  medmix serve --model medmix@champion\n"
               "  medmix serve --model medmix/3 --model medmix/4 --port 8080\n"
               "  medmix serve --model medmix-runs/exports/debug-step20\n"
               "  medmix serve --model medmix-runs/checkpoints/debug          # exports the latest step first\n"
               "  medmix serve --model medmix@champion --emit-config serve.yaml && serve deploy serve.yaml\n"
               "  medmix serve --keys-file keys.json --add-key radiology-app --key-rate 120\n"
               "  medmix serve --model medmix@champion --keys-file keys.json")
    p.add_argument("--model", dest="models", action="append", default=[], metavar="REF|DIR",
                   help="model to serve (repeatable; the first is the default): a registry reference "
                        "(medmix@champion, medmix/3, models:/medmix/3), an export directory (`medmix export`), "
                        "or a training checkpoint / run directory (exported first). Default: medmix@champion")
    p.add_argument("--host", default=None, help="address to bind (default: serve.host = 127.0.0.1; "
                                                "0.0.0.0 exposes the API to other machines)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: serve.port = 8000)")
    p.add_argument("--gpus", type=float, default=None, metavar="N",
                   help="GPUs per model replica (default: serve.num_gpus = -1: one if the cluster has GPUs)")
    p.add_argument("--emit-config", default=None, metavar="FILE",
                   help="write a Ray Serve config YAML (applications, deployments, autoscaling, resources) for "
                        "`serve deploy FILE` and exit; nothing is started")
    p.add_argument("--keys-file", default=None, metavar="FILE",
                   help="API keys file (name + sha256 per key, re-read when it changes); sets serve.keys_file. "
                        "Requests then need `Authorization: Bearer <key>`; $MEDMIX_API_TOKEN stays a key too")
    p.add_argument("--add-key", default=None, metavar="NAME",
                   help="create a key named NAME in the keys file (--keys-file or serve.keys_file), print it "
                        "once and exit; the file keeps only its sha256. The running server picks it up")
    p.add_argument("--key-rate", type=float, default=None, metavar="PER_MINUTE",
                   help="with --add-key: the key's rate limit in requests per minute (default: "
                        "serve.rate_limit_per_minute)")
    p.add_argument("--detach", action="store_true",
                   help="deploy and return, leaving the app running on the cluster (for `ray job submit`)")
    add_config_args(p)
    p.set_defaults(func=run)


def apply_args(cfg, args: argparse.Namespace):
    """--host/--port/--gpus over the config (they win over --set, as the more specific flags)."""

    changes = {k: v for k, v in (("host", args.host), ("port", args.port), ("num_gpus", args.gpus),
                                 ("keys_file", getattr(args, "keys_file", None))) if v is not None}
    if changes:
        cfg.serve = dataclasses.replace(cfg.serve, **changes)
        validate(cfg.serve, "serve.")
    return cfg


def run(args: argparse.Namespace) -> int:
    models = args.models or ["medmix@champion"]
    if args.dry_run:
        resolve_config(args)  # prints the TOML and exits
    cfg = apply_args(resolve_config(args), args)
    if args.add_key:
        if not cfg.serve.keys_file:
            print("medmix serve --add-key: name the keys file with --keys-file FILE (or --set serve.keys_file=...)")
            return 2
        try:
            key = add_key(cfg.serve.keys_file, args.add_key, rate_per_minute=args.key_rate)
        except KeysFileError as exc:
            print(f"medmix serve --add-key: {exc}")
            return 2
        print(f"added key {args.add_key!r} to {cfg.serve.keys_file} (only its sha256 is stored; this is the "
              f"one time the key is shown):\n{key}")
        return 0
    if args.emit_config:
        from medmix.serve.server import emit_config
        emit_config(cfg, models, args.emit_config)
        print(f"wrote {args.emit_config}: application {cfg.serve.app_name!r} serving {', '.join(models)}; "
              f"deploy with `serve deploy {args.emit_config}`")
        return 0
    from medmix.serve.server import serve_forever
    return serve_forever(cfg, models, detach=args.detach)
