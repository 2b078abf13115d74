"""The evaluation report: a per-task Markdown table, a PNG bar chart, and the raw numbers.

    out = write_eval_report(result, "medmix-runs/eval/medmix-3-test")
    # out/report.md, out/metrics.png, out/metrics.json, out/predictions.jsonl

`report.md` has one row per task and one column per metric any evaluated task reports
(blank where a task does not have that metric), the model's lineage above it, the polygenic
baseline comparison and notes below. `metrics.png` draws, per task, a bar for each of its
metrics (every metric is a fraction in [0, 1]), with the chance accuracy of option tasks
marked (the majority class's share, or 1/options for multiple choice). The chart uses
matplotlib's Agg back end: no display needed.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from medmix.storage import local_dir, location, upload
from medmix.tasks import get_task

# column order of the table and the chart: the order metrics are usually read in
METRIC_ORDER = ("accuracy", "macro_f1", "macro_auc", "auc", "linear_prs_auc", "bleu1", "bleu4", "rougeL",
                "token_f1", "clinical_f1_micro", "clinical_f1_macro", "snp_f1", "indel_f1")


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for a table: 3 decimals, `n/a` for NaN, integers as integers."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers right-aligned."""
    cells = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    align = ["---:" if rows and all(not isinstance(r[i], str) or r[i] in ("", "n/a") for r in rows) else "---"
             for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def metric_columns(per_task: dict[str, dict[str, float]]) -> list[str]:
    present = {k for m in per_task.values() for k in m if k != "n"}
    return [m for m in METRIC_ORDER if m in present] + sorted(present - set(METRIC_ORDER))


def chance_accuracy(task: str, records: Sequence[dict]) -> float | None:
    """What answering without looking scores: the majority class's share for fixed options,
    the mean 1/options for per-question options (MCQ); None for free-text tasks."""

    spec = get_task(task)
    if not spec.has_options or not records:
        return None
    if spec.options:
        return Counter(r["reference"] for r in records).most_common(1)[0][1] / len(records)
    sizes = [len(r["option_probs"]) for r in records if r.get("option_probs")]
    return sum(1 / k for k in sizes) / len(sizes) if sizes else None


def per_task_table(result: Any) -> str:
    cols = metric_columns(result.per_task)
    rows = []
    for task in result.tasks:
        m = result.per_task[task]
        chance = chance_accuracy(task, result.predictions.get(task, []))
        rows.append([task, get_task(task).kind, int(m.get("n", 0)), *[m.get(c) for c in cols],
                     chance if chance is not None else ""])
    return markdown_table(["task", "kind", "n", *cols, "chance"], rows)


def bar_chart(per_task: dict[str, dict[str, float]], path: str | Path, title: str,
              chance: dict[str, float] | None = None) -> Path:
    """Grouped bars: one group per task, one bar per metric it has; chance accuracy as a tick."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = metric_columns(per_task)
    tasks = list(per_task)
    colors = {m: plt.get_cmap("tab20")(i % 20) for i, m in enumerate(cols)}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) + 2) + 2.0, 4.2))
    seen: set[str] = set()
    for x, task in enumerate(tasks):
        names = [m for m in cols if m in per_task[task] and not math.isnan(per_task[task][m])]
        width = 0.8 / max(len(names), 1)
        for j, m in enumerate(names):
            ax.bar(x - 0.4 + width * (j + 0.5), per_task[task][m], width, color=colors[m],
                   label=m if m not in seen else None)
            seen.add(m)
        if chance and task in chance:
            ax.hlines(chance[task], x - 0.45, x + 0.45, colors="black", linestyles="dashed", linewidth=1,
                      label="chance accuracy" if "chance" not in seen else None)
            seen.add("chance")
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (fraction)")
    ax.set_title(title)
    if seen:  # outside the axes: bars reach the top
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _baseline_section(baselines: dict[str, Any]) -> list[str]:
    out = []
    for task, b in baselines.items():
        out += ["", f"## {task}: model vs linear polygenic risk score", ""]
        if not b.get("available"):
            out.append(f"Linear PRS baseline not computed: {b.get('reason')}.")
            continue
        rows = [[o, v["n"], v["model_auc"], v["linear_prs_auc"], f"p < {v['threshold']:g}"]
                for o, v in b["outcomes"].items()]
        rows.append(["mean", "", b["model_auc"], b["linear_prs_auc"], ""])
        out.append(markdown_table(["outcome", "n", "model AUC (P(yes))", "linear PRS AUC", "PRS threshold"], rows))
    return out


def store_eval_report(result: Any, report_dir: str, name: str) -> tuple[str, Path]:
    """Write the report to `<report_dir>/<name>/` — a local folder, or an `s3://` URI (built in the
    cache, then uploaded with report.md last, so a reader that finds report.md finds it all).
    Returns (where it is, a local copy of it)."""
    dest = location(report_dir).join(name)
    local = dest.local_path() if dest.is_local else local_dir(report_dir, name)
    if local.exists():
        shutil.rmtree(local)
    write_eval_report(result, local)
    if not dest.is_local:
        upload(local, dest, last=("report.md",))
    return dest.uri, local


def write_eval_report(result: Any, out_dir: str | Path) -> Path:
    """report.md, metrics.png, metrics.json and predictions.jsonl for an `EvalResult`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = result.model
    chance = {t: c for t in result.tasks
              if (c := chance_accuracy(t, result.predictions.get(t, []))) is not None}
    title = f"{src.label} on {result.split}{' (blank images)' if result.blank_images else ''}"
    bar_chart(result.per_task, out / "metrics.png", title, chance)
    lines = [f"# Evaluation: {title}", "",
             f"- model: `{src.ref}`" + (f" (registered {src.version})" if src.version else ""),
             f"- training run: {src.run_id or 'unknown'}, step {src.step if src.step is not None else '?'}",
             f"- checkpoint: {src.checkpoint or 'unknown'}",
             f"- split: {result.split}; images: {'replaced by blank ones (control)' if result.blank_images else 'as stored'}",
             "- option tasks are scored by the likelihood of each option (argmax; AUC from the option "
             "probabilities); free-text tasks by greedy decoding", "",
             per_task_table(result), "", "![metrics](metrics.png)"]
    lines += _baseline_section(result.baselines)
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps({"model": src.__dict__, "split": result.split,
                                                  "blank_images": result.blank_images, "metrics": result.metrics,
                                                  "baselines": result.baselines}, indent=1, default=str))
    with open(out / "predictions.jsonl", "w") as f:
        for task, records in result.predictions.items():
            for r in records:
                f.write(json.dumps({"task": task, **r}) + "\n")
    return out
