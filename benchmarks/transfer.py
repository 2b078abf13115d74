"""`medmix report transfer` on the bundled suite: is the generalist within 5% of its specialists?

Builds the bundled synthetic suite (or uses --data), then runs the transfer report: the
generalist (the preset's mixture, or a sweep's pick: pass the sweep's `best_config.toml` as
--preset) against two specialists per task — the generalist's total budget on the task alone,
and the generalist's own budget on that task — each headline metric with its 95% bootstrap
interval over the test rows. The target, per task: the generalist's headline metric at least
95% of each specialist's (relative); the table also says where the intervals overlap (the
evaluation cannot tell the two apart). Appends the table and the verdict to
benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/transfer.py                                   # 4 tasks, 60 steps
    .venv/bin/python benchmarks/transfer.py --preset runs/.../best_config.toml --tasks medqa,derm_pad
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _machine import bundled_store, machine, record  # benchmarks/ is on sys.path when run as a script

TASKS = "medqa,pubmedqa,cxr_classify,cxr_report"
WITHIN = 0.05


def within(gen: float, spec: float) -> bool:
    """The generalist's headline metric is at least 95% of the specialist's."""
    return not (math.isnan(gen) or math.isnan(spec)) and gen >= (1 - WITHIN) * spec


def overlap(a: list[float], b: list[float]) -> bool:
    return not any(math.isnan(x) for x in (*a, *b)) and a[0] <= b[1] and b[0] <= a[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug", help="preset name or .toml (e.g. a sweep's best_config.toml)")
    ap.add_argument("--tasks", default=TASKS, help=f"comma-separated tasks (default {TASKS})")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8, help="global batch size")
    ap.add_argument("--eval-rows", type=int, default=48, help="test rows evaluated per task")
    ap.add_argument("--data", default="", help="shard store (default: build the bundled suite in a temp dir)")
    ap.add_argument("--out", default="", help="where the runs go (default: a temp dir)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    from medmix.config import load_config
    from medmix.evaluate.transfer import transfer_report

    work = Path(args.out or tempfile.mkdtemp(prefix="medmix-bench-transfer-"))
    data = bundled_store(args.data, work)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    cfg = load_config(args.preset, [f'data.root="{data}"', f'lineage.root="{work}/runs"', 'name="bench"',
                                    f"train.steps={args.steps}", f"mixture.global_batch_size={args.batch}",
                                    "train.eval_every=0", f"train.log_every={max(args.steps // 4, 1)}",
                                    f"eval.max_examples_per_task={args.eval_rows}", *args.overrides])
    t0 = time.time()
    result = transfer_report(cfg, tasks=tasks, ablate=None, out_dir=work / "transfer")
    seconds = time.time() - t0

    def fmt(v: float, ci: list[float]) -> str:
        return "-" if math.isnan(v) else f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"

    rows, met = [], []
    for r in result.rows:
        ok = within(r["generalist"], r["specialist"]) and within(r["generalist"], r["specialist_task_budget"])
        met.append(ok)
        apart = [name for name, key in (("same total", "specialist"), ("task's budget", "specialist_task_budget"))
                 if not overlap(r["generalist_ci"], r[f"{key}_ci"])]
        rows.append(f"| {r['task']} | {r['metric']} | {r['n']} | {fmt(r['generalist'], r['generalist_ci'])} | "
                    f"{fmt(r['specialist'], r['specialist_ci'])} | "
                    f"{fmt(r['specialist_task_budget'], r['specialist_task_budget_ci'])} ({r['task_budget_steps']} steps) "
                    f"| {'yes' if ok else 'no'} | {', '.join(apart) or 'neither'} |")
    command = "python benchmarks/transfer.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    mixture = cfg.mixture.strategy + (f" {dict(cfg.mixture.weights)}" if cfg.mixture.weights else "")
    lines = [f"## Transfer: generalist vs specialists — {time.strftime('%Y-%m-%d')}", "",
             f"- machine: {machine()}", f"- command: `{command.strip()}`",
             f"- preset `{args.preset}` (mixture {mixture}), {args.steps} steps x {args.batch}, "
             f"{len(tasks)} tasks, {args.eval_rows} test rows per task, 95% bootstrap intervals; "
             f"{len(result.runs)} trainings, {seconds:.0f} s", "",
             "| task | metric | n | generalist | specialist, same total | specialist, task's budget | within 5% | "
             "told apart from (no interval overlap) |",
             "|---|---|---|---|---|---|---|---|", *rows, "",
             f"- target (the generalist within 5% of both specialists on every task): "
             f"{'met' if all(met) else 'not met'} ({sum(met)} of {len(met)} tasks)", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
