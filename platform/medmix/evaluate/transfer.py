"""`medmix report transfer`: generalist vs specialists at matched compute, and one task ablated.

    result = transfer_report(load_config("debug", ["train.steps=40"]), tasks=["derm_pad", "cxr_classify",
                             "cxr_report"], ablate="cxr_classify")
    print(result.markdown)          # also result.out_dir / transfer.md, transfer.csv, transfer.png

Med-PaLM M's headline claim in miniature: one model trained on every task (the generalist,
with the config's mixture strategy over `tasks`) against one model per task (a specialist:
mixture weight 1 on that task alone), on the same store, all evaluated on the same split
(`eval.split`, test). Each task gets two specialists, so that neither budget flatters the
generalist:

- **same total budget**: the generalist's steps x global batch size, all on the one task;
- **the task's budget**: as many examples of the task as the generalist trained on (read from
  its final checkpoint's data cursor), i.e. that many steps at the same global batch size.

The transfer delta of a task is generalist − specialist on its headline metric (positive:
training on the other tasks helped), once per specialist; every headline value carries a
percentile bootstrap interval over the evaluated examples (`eval.bootstrap` replicates). The
paper's ablation retrains the generalist without one task (`ablate`, default cxr_classify) and
reports what that does to the others (e.g. cxr_report, whose findings the classification
task labels): ablated − generalist.

Every training run is a normal `medmix train` run (MLflow run, checkpoints under
`<out_dir>/checkpoints/`); a run whose final checkpoint already exists is reused, so a
re-run only trains what is missing. Evaluations are `medmix evaluate` runs nested under
their training runs; the report itself is one more MLflow run (tag `medmix.kind=transfer`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from medmix.config import config_from_dict, flatten, to_dict
from medmix.evaluate.report import markdown_table
from medmix.lineage.tracker import build_tracker
from medmix.storage import local_dir
from medmix.tasks import get_task
from medmix.train.launcher import prepare, train

if TYPE_CHECKING:
    from medmix.config import MedmixConfig

# the one metric per task kind the table shows (the CSV has every metric)
TASK_BUDGET = "specialist_task_budget"
CI_LEVEL = 0.95   # the evaluation's percentile bootstrap (medmix.evaluate.metrics.metric_interval)
HEADLINE = {"mcq": "accuracy", "qa": "accuracy", "classify": "accuracy", "variant": "accuracy",
            "risk": "auc", "vqa": "token_f1", "report": "rougeL", "summarize": "rougeL"}


@dataclass
class TransferRun:
    """One trained-and-evaluated model of the comparison."""

    role: str
    """generalist, specialist (the generalist's total budget), specialist_task_budget (the
    generalist's examples of the task) or ablated."""
    name: str
    trained_on: list[str]
    checkpoint: str
    run_id: str | None
    per_task: dict[str, dict[str, float]]
    train_seconds: float
    eval_seconds: float
    reused: bool = False
    steps: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    """Examples per task it trained on (its final checkpoint's data cursor)."""


@dataclass
class TransferResult:
    tasks: list[str]
    ablate: str | None
    steps: int
    global_batch_size: int
    split: str
    rows: list[dict[str, Any]]
    """One per task (`comparison_rows`): headline metric, each model's value and interval, deltas."""
    runs: list[TransferRun] = field(default_factory=list)
    out_dir: str = ""
    markdown: str = ""
    run_id: str | None = None
    seconds: float = 0.0


def headline(task: str) -> str:
    return HEADLINE[get_task(task).kind]


def default_tasks(cfg: MedmixConfig, store, split: str) -> list[str]:
    """Tasks the config's mixture trains on (weight > 0) that have rows in `split`."""
    from medmix.data.mixture import resolve_weights
    counts = store.counts()
    weights = resolve_weights(cfg.mixture, {t: c.get("train", 0) for t, c in counts.items()})
    return sorted(t for t, w in weights.items() if w > 0 and counts.get(t, {}).get(split, 0) > 0)


def _run_config(cfg: MedmixConfig, name: str, storage: Path, mixture: dict[str, Any], steps: int) -> Any:
    data = to_dict(cfg)
    data["name"] = name
    data["train"]["storage_path"] = str(storage)
    data["train"]["steps"] = steps
    data["train"]["checkpoint_every"] = steps  # only the final checkpoint is evaluated
    data["train"]["warmup_steps"] = min(cfg.train.warmup_steps, steps)
    data["mixture"].update(mixture)
    return config_from_dict(data)


def _key(cfg: MedmixConfig, tasks: Sequence[str]) -> str:
    """Identify a comparison: everything that shapes the trained models."""
    flat = {k: v for k, v in flatten(cfg).items()
            if k.split(".")[0] in ("model", "train", "mixture", "stream", "tokenizer", "seed")
            and k not in ("train.storage_path",)}
    text = json.dumps({"cfg": flat, "tasks": sorted(tasks)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def train_and_evaluate(cfg: MedmixConfig, role: str, name: str, storage: Path, mixture: dict[str, Any],
                       trained_on: list[str], eval_tasks: list[str], report_dir: Path,
                       steps: int | None = None) -> TransferRun:
    """Train one model of the comparison for `steps` (default train.steps), or reuse its final
    checkpoint, and evaluate it: every metric, and an interval for each task's headline one."""
    from medmix.evaluate.runner import evaluate
    from medmix.train.checkpoint import read_meta
    steps = steps or cfg.train.steps
    run_cfg = _run_config(cfg, name, storage, mixture, steps)
    final = storage / name / f"step-{steps:06d}"
    t0 = time.time()
    reused = (final / "medmix.json").is_file()
    if reused:
        checkpoint, run_id = str(final), read_meta(final).get("run_id")
    else:
        result = train(run_cfg)
        if result.error or not result.checkpoint:
            raise RuntimeError(f"transfer report: training {role} {name} failed: {result.error or 'no checkpoint'} "
                               f"(run directory {result.run_dir})")
        checkpoint, run_id = result.checkpoint, result.run_id
    train_s = time.time() - t0
    t1 = time.time()
    run_cfg.eval.report_dir = str(report_dir)
    ev = evaluate(run_cfg, checkpoint, tasks=eval_tasks, name=name, progress=False,
                  intervals={t: [headline(t)] for t in eval_tasks})
    return TransferRun(role, name, trained_on, checkpoint, run_id, ev.per_task, train_s, time.time() - t1, reused,
                       steps=steps, examples=examples_seen(checkpoint))


def examples_seen(checkpoint: str) -> dict[str, int]:
    """Examples per task a run trained on, from its checkpoint's data cursor."""
    from medmix.train.checkpoint import read_meta
    counts = read_meta(checkpoint).get("data_state", {}).get("counts", {})
    return {t: int(n) for t, n in counts.items() if n}


def task_budget_steps(examples: int, global_batch_size: int) -> int:
    """Steps at `global_batch_size` that train on `examples` examples (at least one)."""
    return max(1, round(examples / global_batch_size))


def transfer_report(cfg: MedmixConfig, tasks: Sequence[str] | None = None, ablate: str | None = "cxr_classify",
                    out_dir: str | Path | None = None, log: bool = True) -> TransferResult:
    """Train generalist, specialists and the ablated generalist at equal compute; compare them.

    Args:
        cfg: root config; train.steps x mixture.global_batch_size is every run's compute.
        tasks: the tasks compared (default: the mixture's tasks with rows in eval.split).
        ablate: the task the ablated generalist leaves out (None or absent from `tasks`: no ablation).
        out_dir: where checkpoints, evaluation reports and the table go (default
            `<lineage.root>/transfer/<name>-<key>`, key = hash of the settings).
    """
    from medmix.data.store import ShardStore
    t0 = time.time()
    prepare(cfg)
    store = ShardStore(cfg.data.root)
    split = cfg.eval.split
    tasks = sorted(tasks or default_tasks(cfg, store, split))
    if not tasks:
        raise ValueError(f"no tasks to compare: none of the mixture's tasks has {split} rows in {store.root}")
    counts = store.counts()
    for t in tasks:
        headline(t)  # UnknownTaskError for a typo
        if counts.get(t, {}).get("train", 0) <= 0 or counts.get(t, {}).get(split, 0) <= 0:
            raise ValueError(f"task {t!r} needs train and {split} rows in {store.root} (has "
                             f"{counts.get(t, {})})")
    if ablate and (ablate not in tasks or len(tasks) < 2):
        ablate = None
    out = Path(out_dir) if out_dir else local_dir(cfg.lineage.root, "transfer", f"{cfg.name}-{_key(cfg, tasks)}")
    storage, reports = (out / "checkpoints").resolve(), out / "eval"
    gen = train_and_evaluate(cfg, "generalist", f"{cfg.name}-generalist", storage,
                             {"tasks": list(tasks), "exclude": []}, list(tasks), list(tasks), reports)
    runs = [gen]
    for t in tasks:
        alone = {"strategy": "explicit", "weights": {t: 1.0}, "tasks": [t], "exclude": []}
        total = train_and_evaluate(cfg, "specialist", f"{cfg.name}-specialist-{t}", storage, alone, [t], [t], reports)
        runs.append(total)
        steps = task_budget_steps(gen.examples.get(t, 0), cfg.mixture.global_batch_size)
        if steps == cfg.train.steps:   # the generalist spent its whole budget on t: the same run
            runs.append(replace(total, role=TASK_BUDGET))
        else:
            runs.append(train_and_evaluate(cfg, TASK_BUDGET, f"{cfg.name}-specialist-{t}-{steps}steps", storage,
                                           alone, [t], [t], reports, steps=steps))
    if ablate:
        rest = [t for t in tasks if t != ablate]
        runs.append(train_and_evaluate(cfg, "ablated", f"{cfg.name}-without-{ablate}", storage,
                                       {"tasks": rest, "exclude": []}, rest, list(tasks), reports))
    rows = comparison_rows(tasks, runs, ablate)
    result = TransferResult(list(tasks), ablate, cfg.train.steps, cfg.mixture.global_batch_size, split, rows,
                            runs, str(out))
    result.markdown = write_transfer(result, out)
    result.seconds = time.time() - t0
    if log and cfg.lineage.enabled:
        result.run_id = log_transfer(cfg, result)
    return result


def comparison_rows(tasks: Sequence[str], runs: Sequence[TransferRun], ablate: str | None) -> list[dict]:
    """Per task: each model's headline value and interval (`<key>`, `<key>_ci`), the transfer
    deltas against both specialists and, with an ablation, ablated − generalist."""
    gen = next(r for r in runs if r.role == "generalist")
    abl = next((r for r in runs if r.role == "ablated"), None)

    def value(run: TransferRun, task: str, m: str) -> tuple[float, list[float]]:
        got = run.per_task[task]
        return got.get(m, math.nan), [got.get(f"{m}/lo", math.nan), got.get(f"{m}/hi", math.nan)]

    rows = []
    for t in tasks:
        total = next(r for r in runs if r.role == "specialist" and r.trained_on == [t])
        budget = next(r for r in runs if r.role == TASK_BUDGET and r.trained_on == [t])
        m = headline(t)
        (g, g_ci), (s, s_ci), (b, b_ci) = value(gen, t, m), value(total, t, m), value(budget, t, m)
        row = {"task": t, "metric": m, "n": int(gen.per_task[t].get("n", 0)),
               "generalist": g, "generalist_ci": g_ci, "generalist_examples": gen.examples.get(t, 0),
               "specialist": s, "specialist_ci": s_ci, "transfer_delta": g - s,
               "specialist_task_budget": b, "specialist_task_budget_ci": b_ci, "task_budget_steps": budget.steps,
               "transfer_delta_task_budget": g - b}
        if abl is not None:
            a, a_ci = value(abl, t, m)
            row.update({"ablated": a, "ablated_ci": a_ci, "ablation_delta": a - g, "ablated_task": t == ablate})
        rows.append(row)
    return rows


def _with_ci(value: float, ci: Sequence[float]) -> str:
    if math.isnan(value):
        return "-"
    if any(math.isnan(x) for x in ci):
        return f"{value:.3f}"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def write_transfer(result: TransferResult, out: Path) -> str:
    """transfer.md (the table), transfer.csv (every metric of every model), transfer.png."""
    out.mkdir(parents=True, exist_ok=True)
    abl = result.ablate
    level = f"{100 * CI_LEVEL:.0f}%"
    headers = ["task", "metric", "n", "generalist", "specialist, same total", "Δ (gen − spec)",
               "specialist, task's budget", "Δ (gen − spec)"]
    if abl:
        headers += [f"generalist without {abl}", "ablation Δ (without − gen)"]
    table = []
    for r in result.rows:
        row = [r["task"], r["metric"], r["n"], _with_ci(r["generalist"], r["generalist_ci"]),
               _with_ci(r["specialist"], r["specialist_ci"]), f"{r['transfer_delta']:+.3f}",
               _with_ci(r["specialist_task_budget"], r["specialist_task_budget_ci"]) +
               f" ({r['task_budget_steps']} steps)", f"{r['transfer_delta_task_budget']:+.3f}"]
        if abl:
            row += [_with_ci(r["ablated"], r["ablated_ci"]),
                    f"{r['ablation_delta']:+.3f}" + (" (not trained on it)" if r["ablated_task"] else "")]
        table.append(row)
    runs = [[r.role, r.name, ", ".join(r.trained_on), r.steps, ", ".join(f"{t} {n}" for t, n in sorted(r.examples.items())),
             f"{r.train_seconds:.0f}" + (" (reused)" if r.reused else ""), f"{r.eval_seconds:.0f}"] for r in result.runs]
    total = result.steps * result.global_batch_size
    text = "\n".join([
        "# Generalist vs specialist per task (matched compute)", "",
        f"The generalist trained {result.steps} steps x {result.global_batch_size} examples ({total} examples) "
        f"over every task. Each task has two specialists: one with the same total budget ({total} examples "
        f"of the task alone), one with the task's budget (as many examples of the task as the generalist "
        f"saw, at the same batch size). Evaluated on the {result.split} split; [lo, hi] is the {level} "
        f"bootstrap interval over the evaluated examples. Δ > 0: the generalist beats that specialist.", "",
        markdown_table(headers, table), "",
        "## Runs", "", markdown_table(["role", "run", "trained on", "steps", "examples seen", "train s", "eval s"],
                                      runs), ""])
    (out / "transfer.md").write_text(text)
    with open(out / "transfer.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["role", "run", "trained_on", "steps", "task", "metric", "value"])
        for r in result.runs:
            for task, metrics in r.per_task.items():
                for k, v in metrics.items():
                    w.writerow([r.role, r.name, "+".join(r.trained_on), r.steps, task, k, v])
    _chart(result, out / "transfer.png")
    return text


def _chart(result: TransferResult, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = [("specialist", "specialist, same total"), ("specialist_task_budget", "specialist, task's budget"),
              ("generalist", "generalist")]
    if result.ablate:
        series.append(("ablated", f"without {result.ablate}"))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(result.rows) + 1.5), 3.8))
    width = 0.8 / len(series)
    for j, (key, label) in enumerate(series):
        values = [0 if math.isnan(r[key]) else r[key] for r in result.rows]
        lo = [max(v - r[f"{key}_ci"][0], 0) if not math.isnan(r[f"{key}_ci"][0]) else 0
              for v, r in zip(values, result.rows)]
        hi = [max(r[f"{key}_ci"][1] - v, 0) if not math.isnan(r[f"{key}_ci"][1]) else 0
              for v, r in zip(values, result.rows)]
        ax.bar([i - 0.4 + width * (j + 0.5) for i in range(len(result.rows))], values, width, label=label,
               yerr=[lo, hi], capsize=2)
    ax.set_xticks(range(len(result.rows)), [f"{r['task']}\n{r['metric']}" for r in result.rows], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"generalist vs specialists (matched compute, {100 * CI_LEVEL:.0f}% intervals)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_transfer(cfg: MedmixConfig, result: TransferResult) -> str | None:
    tracker = build_tracker(cfg.lineage)
    with tracker.start_run(f"{cfg.name}-transfer", tags={"medmix.kind": "transfer",
                                                         "medmix.tasks": ",".join(result.tasks),
                                                         "medmix.ablate": result.ablate or ""}) as run:
        tracker.log_params({"tasks": result.tasks, "ablate": result.ablate, "train.steps": result.steps,
                            "mixture.global_batch_size": result.global_batch_size, "eval.split": result.split})
        metrics = {}
        for r in result.runs:
            prefix = r.role if r.role in ("generalist", "ablated") else f"{r.role}/{r.trained_on[0]}"
            metrics.update({f"{prefix}/{t}/{k}": v for t, m in r.per_task.items() for k, v in m.items()})
        for row in result.rows:
            metrics[f"transfer_delta/{row['task']}"] = row["transfer_delta"]
            metrics[f"transfer_delta_task_budget/{row['task']}"] = row["transfer_delta_task_budget"]
            if "ablation_delta" in row:
                metrics[f"ablation_delta/{row['task']}"] = row["ablation_delta"]
        tracker.log_metrics(metrics, step=result.steps)
        for name in ("transfer.md", "transfer.csv", "transfer.png"):
            tracker.log_artifact(Path(result.out_dir) / name)
        return run.run_id
