"""`medmix tasks`: the task registry as a table."""

from __future__ import annotations

import argparse
import json

from medmix.tasks import all_tasks, get_task, render_prompt
from medmix.tasks.files import register_task_file


def add_parser(sub) -> None:
    p = sub.add_parser("tasks", help="list the registered tasks (MultiMedBench + Med-Gemini kinds)",
                       description="List every registered task: modality, kind, options, metrics "
                                   "and the Med-PaLM M mixture share, with the tasks a store carries "
                                   "(--root) and those a TOML file defines (--task-file; checked, "
                                   "errors name the file, task and key). With --prompt TASK, print "
                                   "that task's rendered prompt for its exemplar context.",
                       epilog="A task file holds [[task]] tables. Required keys: name (lowercase id), "
                              "title, modality (any lowercase word), kind (mcq, qa, summarize, report, "
                              "vqa, classify, variant, risk), instruction, metrics (accuracy, macro_f1, "
                              "macro_auc, auc, bleu1, bleu4, rougeL, token_f1, clinical_f1_micro, "
                              "clinical_f1_macro) and an [task.exemplar] table (context, target, "
                              "num_images). Optional: question, options (classify: at least two), "
                              "image_phrase ('' = text only), context_fields ([[field, label], ...]), "
                              "image_defaults, mixture_weight (share in percent under the medpalm mixture strategy; default 0 = "
                              "evaluation only), augment, source. `medmix ingest ... "
                              "--task-file FILE` registers them and writes them into the store.")
    p.add_argument("--prompt", metavar="TASK", help="print one task's prompt as the model sees it")
    p.add_argument("--task-file", action="append", default=[], metavar="TOML",
                   help="also check and list the tasks a TOML file defines (repeatable)")
    p.add_argument("--root", help="also list the tasks this shard store carries definitions of")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.root:
        from medmix.data.store import ShardStore
        ShardStore(args.root).manifest()
    for path in args.task_file:
        register_task_file(path)
    if args.prompt:
        spec = get_task(args.prompt)
        print(render_prompt(spec, dict(spec.exemplar.context), spec.exemplar.num_images or None))
        return 0
    tasks = all_tasks()
    if args.json:
        print(json.dumps([{"name": t.name, "title": t.title, "modality": t.modality, "kind": t.kind,
                           "options": list(t.options), "metrics": list(t.metrics),
                           "mixture_weight": t.mixture_weight} for t in tasks], indent=1))
        return 0
    rows = [[t.name, t.title, t.modality, t.kind,
             (f"{len(t.options)} options" if t.options else ("per example" if t.kind == "mcq" else "-")),
             ",".join(t.metrics), f"{t.mixture_weight:.2f}"] for t in tasks]
    print(table(rows, ["task", "title", "modality", "kind", "answers", "metrics", "mix %"]))
    print(f"\n{len(tasks)} tasks; Med-PaLM M mixture shares sum to {sum(t.mixture_weight for t in tasks):.2f}%")
    return 0
