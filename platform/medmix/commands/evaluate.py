"""`medmix evaluate`: per-task metrics of a checkpoint or a registered model on a split."""

from __future__ import annotations

import argparse

from medmix.cli import add_config_args, resolve_config
from medmix.evaluate.report import fmt


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="per-task metrics of a checkpoint or registered model (Ray Data batch inference)",
        description="Answer every row of the chosen split of each task with the model — option scoring for "
                    "classification/MCQ/QA/variant/risk tasks, greedy generation for reports, summaries and "
                    "VQA — in Ray Data actors (one per GPU, or CPU actors locally), compute the task's metrics "
                    "(accuracy, macro-F1/AUC, BLEU, ROUGE-L, token F1, clinical F1, SNP/indel F1), and record "
                    "an MLflow evaluation run nested under the training run with report.md and metrics.png "
                    "(also written to eval.report_dir/NAME/). Deterministic: the same model gives the same "
                    "numbers. The store is data.root; eval.* sets split, tasks, limits and actors.")
    which = p.add_mutually_exclusive_group()  # one is required, except with --dry-run
    which.add_argument("--checkpoint", metavar="PATH",
                       help="training checkpoint (…/<run>/step-NNNNNN), a run directory (its latest "
                            "checkpoint) or an export directory; checkpoints are exported to a temp dir first")
    which.add_argument("--model", metavar="REF",
                       help="registered model: medmix@champion, medmix/3 or models:/medmix/3")
    p.add_argument("--tasks", default=None, metavar="T1,T2",
                   help="comma-separated tasks (default: eval.tasks, else those the model was trained on)")
    p.add_argument("--split", default=None, choices=("train", "val", "test"),
                   help="split to evaluate (default: eval.split, test)")
    p.add_argument("--blank-images", action="store_true",
                   help="replace every image with a blank one: the control for how much answers use images")
    p.add_argument("--name", default=None,
                   help="report folder under eval.report_dir and MLflow run name (default: model-split)")
    p.add_argument("--no-log", action="store_true", help="do not record an MLflow run (report files only)")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if not (args.checkpoint or args.model):
        raise ValueError("say what to evaluate: --checkpoint PATH (checkpoint, run or export directory) "
                         "or --model REF (medmix@champion, medmix/3)")
    if args.blank_images:
        cfg.eval.blank_images = True
    from medmix.evaluate.runner import evaluate
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    result = evaluate(cfg, args.checkpoint or args.model, tasks=tasks, split=args.split, name=args.name,
                      log=not args.no_log)
    print(summary(result))
    return 0


def summary(result) -> str:
    src = result.model
    lines = [f"evaluated {src.label} on {result.split}"
             f"{' with blank images' if result.blank_images else ''}: {len(result.tasks)} task(s), "
             f"{result.seconds:.0f} s"]
    for task in result.tasks:
        m = result.per_task[task]
        lines.append(f"  {task:<18} n={int(m.get('n', 0)):<5} "
                     + "  ".join(f"{k} {fmt(v)}" for k, v in m.items() if k != "n"))
    for note in result.notes:
        lines.append(f"  note: {note}")
    if result.report_dir:
        lines.append(f"  report: {result.report_dir}/report.md  chart: {result.report_dir}/metrics.png")
    if result.run_id:
        lines.append(f"  MLflow run: {result.run_id}")
    return "\n".join(lines)
