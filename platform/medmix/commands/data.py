"""`medmix data verify|show`: check the shard store against its manifest, or look inside it."""

from __future__ import annotations

import argparse
import json

from medmix.commands.tasks import table


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="inspect the shard store (verify, show)",
                       description="Inspect a shard store: `verify` re-hashes every shard against "
                                   "the manifest; `show` prints rows per task/split and sample rows.")
    dsub = p.add_subparsers(dest="data_verb", metavar="<verify|show>", required=True)
    v = dsub.add_parser("verify", help="detect missing, truncated or modified shards",
                        description="Re-read every shard the manifest lists and compare size, "
                                    "sha256 and row count. Exit 1 and name each damaged shard.")
    v.add_argument("--root", default="medmix-data", help="shard store directory (default: medmix-data)")
    v.set_defaults(func=run_verify)
    s = dsub.add_parser("show", help="rows per task and split, and sample rows",
                        description="Print the manifest summary (rows per task/split, digest, "
                                    "sources) and, with --task, sample rows of that task.")
    s.add_argument("--root", default="medmix-data", help="shard store directory (default: medmix-data)")
    s.add_argument("--task", help="show sample rows of this task")
    s.add_argument("--split", default="train", help="split for sample rows (default: train)")
    s.add_argument("-n", type=int, default=3, help="sample rows to show (default: 3)")
    s.set_defaults(func=run_show)


def run_verify(args: argparse.Namespace) -> int:
    from medmix.data.store import ShardStore
    store = ShardStore(args.root)
    problems = store.verify(progress=True)
    shards = store.shards()
    if problems:
        for p in problems:
            print(f"DAMAGED {p}")
        print(f"{len(problems)} of {len(shards)} shards damaged in {args.root}")
        return 1
    print(f"ok: {len(shards)} shards, {sum(s.rows for s in shards)} rows, digest {store.digest()[:16]}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from medmix.data.schema import SPLITS
    from medmix.data.store import ShardStore
    store = ShardStore(args.root)
    counts = store.counts()
    rows = [[task] + [counts[task].get(s, 0) for s in SPLITS] + [sum(counts[task].values())]
            for task in sorted(counts)]
    rows.append(["total"] + [sum(c.get(s, 0) for c in counts.values()) for s in SPLITS]
                + [sum(sum(c.values()) for c in counts.values())])
    print(table(rows, ["task", *SPLITS, "rows"]))
    m = store.manifest()
    print(f"\n{len(m['shards'])} shards, digest {m['digest'][:16]}")
    for src in m.get("sources", []):
        print(f"source: {src.get('kind')} {src.get('path', '')} ({src.get('rows')} rows)")
    if args.task:
        for i, ex in enumerate(store.iter_examples(args.task, args.split)):
            if i >= args.n:
                break
            print(f"\n[{ex.example_id}] split={ex.split} label={ex.label} images={len(ex.images)}"
                  f" ({ex.image_format}) source={ex.source}")
            print(f"  context: {json.dumps(ex.context)[:300]}")
            print(f"  target:  {ex.target[:300]}")
    return 0
