"""`medmix tasks`: the task registry as a table."""

from __future__ import annotations

import argparse
import json

from medmix.tasks import all_tasks, get_task, render_prompt


def add_parser(sub) -> None:
    p = sub.add_parser("tasks", help="list the registered tasks (MultiMedBench + Med-Gemini kinds)",
                       description="List every registered task: modality, kind, options, metrics "
                                   "and the Med-PaLM M mixture share. With --prompt TASK, print "
                                   "that task's rendered prompt for its exemplar context.")
    p.add_argument("--prompt", metavar="TASK", help="print one task's prompt as the model sees it")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
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
