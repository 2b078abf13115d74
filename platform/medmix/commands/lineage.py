"""`medmix lineage`: print where a model version or a checkpoint came from."""

from __future__ import annotations

import argparse
import json

from medmix.cli import add_config_args, resolve_config
from medmix.lineage.query import format_chain, trace


def add_parser(sub) -> None:
    p = sub.add_parser("lineage", help="trace a model version or checkpoint back to its data sources",
                       description="Print the chain model version -> checkpoint -> run -> config -> "
                                   "mixture -> shard digests per task -> ingest sources. REF is a "
                                   "registered version (medmix/3), an alias (medmix@champion) or a "
                                   "checkpoint directory. The tracking store comes from lineage.* "
                                   "(--set lineage.root=DIR, or $MLFLOW_TRACKING_URI).")
    p.add_argument("ref", metavar="REF", help="medmix/3, medmix@champion, models:/medmix/3 or a checkpoint path")
    p.add_argument("--shards", action="store_true", help="list every shard file with its sha256")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    cfg = resolve_config(args)
    chain = trace(args.ref, cfg.lineage)
    if args.json:
        print(json.dumps(chain.to_json(), indent=1, default=str))
    else:
        print(format_chain(chain, shards=args.shards))
    return 0
