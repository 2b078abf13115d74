"""`medmix report transfer`: the generalist-vs-specialist table (and the one-task ablation)."""

from __future__ import annotations

import argparse

from medmix.cli import add_config_args, resolve_config
from medmix.evaluate.transfer import transfer_report


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="comparison reports built from several trained models",
                       description="Reports that train and evaluate several models. `medmix report transfer` "
                                   "reproduces Med-PaLM M's generalist-vs-specialist comparison in miniature.")
    verbs = p.add_subparsers(dest="report_verb", metavar="<report>", required=True)
    t = verbs.add_parser(
        "transfer", help="generalist vs two specialists per task at matched compute, with intervals, plus "
                         "a one-task ablation",
        description="Train the generalist (the config's mixture strategy over the tasks, train.steps x "
                    "mixture.global_batch_size) and two specialists per task (mixture weight 1 on that task): "
                    "one with the generalist's total budget, one with the generalist's budget on that task "
                    "(as many of its examples as the generalist saw), plus the generalist without --ablate; "
                    "evaluate all on eval.split (test) and print/save the table 'generalist vs specialist per "
                    "task': each headline metric with its bootstrap interval (eval.bootstrap replicates), the "
                    "transfer deltas (generalist - specialist) and the ablation delta (without - generalist). "
                    "Writes transfer.md, transfer.csv and transfer.png (bars with intervals) to --out and logs "
                    "them to MLflow. Finished runs found under --out are reused.")
    t.add_argument("--tasks", default=None, metavar="T1,T2,...",
                   help="comma-separated tasks to compare (default: the mixture's tasks with rows in eval.split)")
    t.add_argument("--ablate", default="cxr_classify", metavar="TASK",
                   help="task the ablated generalist leaves out (default cxr_classify; 'none' = no ablation; "
                        "ignored when not among the tasks)")
    t.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: <lineage.root>/transfer/<name>-<settings hash>)")
    add_config_args(t)
    t.set_defaults(func=run_transfer)


def run_transfer(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    tasks = [x.strip() for x in args.tasks.split(",") if x.strip()] if args.tasks else None
    ablate = None if str(args.ablate).lower() in ("", "none") else args.ablate
    result = transfer_report(cfg, tasks=tasks, ablate=ablate, out_dir=args.out)
    print(result.markdown)
    print(f"written: {result.out_dir}/transfer.md, transfer.csv, transfer.png ({result.seconds:.0f} s)"
          + (f"; MLflow run {result.run_id}" if result.run_id else ""))
    return 0
