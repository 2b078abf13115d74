"""`medmix evaluate`: per-task metrics of a checkpoint or registered model, by batch inference on Ray Data.

    from medmix.config import load_config
    from medmix.evaluate.runner import evaluate, evaluate_export
    result = evaluate(load_config("debug", ["eval.split=test"]), "medmix@champion")
    result.metrics["derm_pad/accuracy"], result.report_dir, result.run_id
    metrics = evaluate_export("exports/step-20", cfg, split="val")   # the sweep's champion check

The model is whatever `medmix.model.resolve.resolve` takes: a checkpoint or run directory
(exported on the fly to a temporary directory), an export directory, or a registry reference
(`medmix/3`, `medmix@champion`). Tasks default to those its training mixture gave weight (read
from the export's lineage), restricted to tasks with rows in `eval.split`.

Work is cut into items — one task's chunk of `eval.batch_size` rows inside one shard — in a
fixed order (tasks, shards, rows). With `eval.use_ray` a Ray Data pipeline (`from_items` ->
`map_batches` over a pool of `BatchPredictor` actors, one model each, one GPU each when the
cluster has GPUs, fractional CPUs otherwise) answers them; without, the same items run in
this process. Batches never depend on the number of actors and answers are greedy, so
evaluating a model twice gives identical numbers.

Metrics come from `compute_metrics` per task (`<task>/<metric>`, plus `mean/<metric>` over
tasks), the polygenic task is compared with the linear PRS baseline when its rows carry the
scores, and the evaluation is recorded as an MLflow run (tag `medmix.kind=evaluate`, nested
under the training run, model version tagged) with `report.md` and `metrics.png`, also
written to `eval.report_dir/<name>/`.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from medmix.config import ConfigError, config_from_dict
from medmix.data.mixture import resolve_weights
from medmix.evaluate.metrics import compute_metrics, macro_auc, metric_interval
from medmix.evaluate.predict import BatchPredictor, Prediction, Predictor, predict_rows, read_item_rows
from medmix.evaluate.report import store_eval_report
from medmix.lineage.registry import TAG_CHECKPOINT, find_versions
from medmix.lineage.tracker import build_tracker
from medmix.model.resolve import Export, resolve, slug
from medmix.runtime import ensure_ray
from medmix.tasks import get_task

if TYPE_CHECKING:
    from medmix.config import MedmixConfig
    from medmix.evaluate.config import EvalConfig


@dataclass
class ModelSource:
    """What is being evaluated, and where it came from."""

    ref: str
    """As given: a path or a registry reference."""
    export_dir: str
    label: str
    """Short human name: `medmix/3`, `<run>-step20`, or the directory name."""
    run_id: str | None = None
    checkpoint: str | None = None
    step: int | None = None
    version: str | None = None
    """Registered model version (`medmix/3`) when known."""
    train_config: dict | None = None

    @classmethod
    def from_export(cls, export: Export, version: str | None) -> "ModelSource":
        """`export` with its lineage; `version` is its registry version when known."""
        return cls(export.ref, str(export.path), export.label, run_id=export.run_id,
                   checkpoint=export.checkpoint, step=export.step, version=version,
                   train_config=export.train_config)


@dataclass
class EvalResult:
    """Everything one evaluation produced."""

    model: ModelSource
    split: str
    tasks: list[str]
    metrics: dict[str, float]
    """Flat: `<task>/<metric>` (and `<task>/n`), `mean/<metric>`."""
    per_task: dict[str, dict[str, float]]
    predictions: dict[str, list[dict]] = field(default_factory=dict)
    """Per task, one record per example: id, prediction, reference, option_probs."""
    baselines: dict[str, Any] = field(default_factory=dict)
    """Reference methods per task (polygenic_risk: the linear PRS AUC per outcome)."""
    notes: list[str] = field(default_factory=list)
    blank_images: bool = False
    report_dir: str | None = None
    run_id: str | None = None
    seconds: float = 0.0


# -- what model -----------------------------------------------------------------------------

def model_source(ref: str | Path, cfg: MedmixConfig, workdir: str | Path) -> ModelSource:
    """What `ref` names, exporting a checkpoint into `workdir`, with its lineage and registry version."""
    export = resolve(ref, cfg.lineage, workdir)
    version = export.version
    if version is None and export.checkpoint and cfg.lineage.enabled:
        version = _registered_version(cfg, export.checkpoint)
    return ModelSource.from_export(export, version)


def _registered_version(cfg: MedmixConfig, checkpoint: str) -> str | None:
    """The registry version exported from `checkpoint`, if the registry has one."""
    try:
        found = find_versions(cfg.lineage, TAG_CHECKPOINT, [checkpoint])
    except Exception:  # noqa: BLE001 - no registry yet / another store: the version is unknown
        return None
    return str(found[0]) if found else None


# -- which rows -------------------------------------------------------------------------------

def trained_tasks(train_config: dict | None, store) -> list[str]:
    """Tasks with weight > 0 in the model's training mixture, against this store's train rows."""
    if not train_config:
        return []
    try:
        mixture = config_from_dict({"mixture": train_config.get("mixture", {})}).mixture
        rows = {t: c.get("train", 0) for t, c in store.counts().items()}
        return sorted(t for t, w in resolve_weights(mixture, rows).items() if w > 0)
    except (ConfigError, ValueError):
        return []


def select_tasks(cfg: MedmixConfig, store, source: ModelSource, split: str, tasks: Sequence[str] | None,
                 notes: list[str]) -> list[str]:
    counts = store.counts()
    have = sorted(t for t, c in counts.items() if c.get(split, 0) > 0)
    asked = list(tasks or cfg.eval.tasks)
    if asked:
        for t in asked:
            get_task(t)  # UnknownTaskError names the registered tasks
            if t not in have:
                raise ValueError(f"task {t!r} has no rows in split {split!r} of the store at {store.root} "
                                 f"(tasks with {split} rows: {', '.join(have) or 'none'})")
        return asked
    trained = trained_tasks(source.train_config, store)
    if trained:
        chosen = [t for t in trained if t in have]
        missing = [t for t in trained if t not in have]
        if missing:
            notes.append(f"trained on {', '.join(missing)} too, which have no {split} rows here")
        if chosen:
            return chosen
    notes.append("training mixture unknown for this store: every task with rows in the split is evaluated")
    return have


def work_items(store, tasks: Sequence[str], split: str, batch_size: int, limit: int) -> list[dict]:
    """Fixed-order chunks: (task, shard, rows) with at most `batch_size` rows, `limit` per task."""
    items: list[dict] = []
    for task in tasks:
        left = limit or math.inf
        for shard in store.shards(task=task, split=split):
            for lo in range(0, shard.rows, batch_size):
                if left <= 0:
                    break
                rows = list(range(lo, min(lo + batch_size, shard.rows)))[:int(min(batch_size, left))]
                left -= len(rows)
                items.append({"item": len(items), "task": task, "shard": shard.path, "rows": json.dumps(rows)})
    return items


# -- running the model ----------------------------------------------------------------------

def predict_items(export_dir: str, store_root: str, items: list[dict], ecfg: EvalConfig,
                  progress: bool = True) -> list[list[Prediction]]:
    """Predictions per item, in item order: on Ray Data actors or in this process."""
    if not items:
        return []
    if ecfg.use_ray:
        return _predict_ray(export_dir, store_root, items, ecfg, progress)
    from tqdm import tqdm
    predictor = Predictor.from_export(export_dir, max_new_tokens=ecfg.max_new_tokens,
                                      blank_images=ecfg.blank_images)
    return [predict_rows(predictor, read_item_rows(store_root, it))
            for it in tqdm(items, desc="evaluate", unit="batch", disable=not progress)]


def _predict_ray(export_dir: str, store_root: str, items: list[dict], ecfg: EvalConfig,
                 progress: bool) -> list[list[Prediction]]:

    import ray
    from ray.data import DataContext

    ensure_ray(ecfg.cpus_per_actor * max(ecfg.num_actors, 2))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = ecfg.use_gpu == "true" or (ecfg.use_gpu == "auto" and gpus > 0)
    actors = ecfg.num_actors or (max(gpus, 1) if use_gpu else 2)
    actors = max(1, min(actors, len(items)))
    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = progress
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds = ray.data.from_items([{k: it[k] for k in ("item", "shard", "rows")} for it in items],
                             override_num_blocks=len(items))
    with warnings.catch_warnings():
        # max_restarts goes as a plain remote arg, which Ray 2.6x marks deprecated; without it
        # Ray logs an error per actor about constructor args that a restart could not recover
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            BatchPredictor, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs={"export_dir": str(Path(export_dir).resolve()), "store_root": str(store_root),
                                   "max_new_tokens": ecfg.max_new_tokens, "blank_images": ecfg.blank_images,
                                   "device": "cuda" if use_gpu else "cpu",
                                   "num_threads": max(1, int(ecfg.cpus_per_actor))},
            num_cpus=ecfg.cpus_per_actor, num_gpus=1 if use_gpu else 0,
            max_restarts=0)  # a failed actor fails the evaluation; a rerun redoes it all
    out: dict[int, list[Prediction]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for item, payload in zip(batch["item"], batch["payload"]):
            out[int(item)] = [Prediction(**p) for p in json.loads(payload)]
    missing = [it["item"] for it in items if it["item"] not in out]
    if missing:
        raise RuntimeError(f"Ray Data returned no predictions for {len(missing)} of {len(items)} batches "
                           f"(first: task {items[missing[0]]['task']}, shard {items[missing[0]]['shard']})")
    return [out[it["item"]] for it in items]


# -- metrics ----------------------------------------------------------------------------------

def task_references(store, task: str, split: str, count: int) -> list[dict]:
    """id, target, label and context of the first `count` rows of a task's split — the rows
    `work_items` handed out, in the same shard order — read without their image bytes."""
    table = store.read_table(task, split, columns=["example_id", "target", "label", "context"])
    return [{**r, "context": json.loads(r["context"])} for r in table.slice(0, count).to_pylist()]


def task_truth(store, task: str, split: str, evaluated: int, notes: list[str]) -> list[tuple] | None:
    """The whole truth set of a variant task's split (`ingest.variants.variant_truth`), so a
    true variant that no candidate covered is a false negative; None (and a note saying the
    recall counts only candidates) when it cannot be rebuilt or only part of the split was
    evaluated."""
    from medmix.data.ingest.variants import variant_truth
    spec = get_task(task)
    if not {"snp_f1", "indel_f1"} & set(spec.metrics):
        return None
    rows = store.counts().get(task, {}).get(split, 0)
    if evaluated < rows:
        why = f"only {evaluated} of the split's {rows} rows were evaluated (eval.max_examples_per_task)"
        truth = None
    else:
        truth, why = variant_truth(store, task, split)
    if truth is None:
        notes.append(f"{task}: snp_f1/indel_f1 recall counts only the truth at the candidates: {why}")
    return truth


def score_task(task: str, refs: list[dict], preds: list[Prediction],
               truth: list[tuple] | None = None, intervals: Sequence[str] = (),
               n_boot: int = 200) -> tuple[dict[str, float], list[dict]]:
    """`compute_metrics` for one task, and the per-example records; for each metric named in
    `intervals`, its bootstrap interval as `<metric>/lo` and `<metric>/hi`."""
    spec = get_task(task)
    for r, p in zip(refs, preds):
        if r["example_id"] != p.example_id:
            raise RuntimeError(f"task {task}: prediction for {p.example_id} lined up with row {r['example_id']}")
    labels = [r["label"] for r in refs]
    probs = [p.option_probs for p in preds] if spec.has_options else None
    args = ([p.prediction for p in preds], [r["target"] for r in refs])
    kwargs = {"option_probs": probs, "labels": None if None in labels else labels,
              "contexts": [r["context"] for r in refs]}
    metrics = compute_metrics(spec, *args, **kwargs, truth=truth)
    for metric in intervals:
        metrics[f"{metric}/lo"], metrics[f"{metric}/hi"] = metric_interval(spec, metric, *args, **kwargs,
                                                                           n_boot=n_boot)
    records = [{"example_id": r["example_id"], "prediction": p.prediction, "reference": r["target"],
                **({"option_probs": [round(x, 6) for x in p.option_probs]} if p.option_probs else {})}
               for r, p in zip(refs, preds)]
    return metrics, records


def polygenic_baseline(store, split: str, refs: list[dict], preds: list[Prediction]) -> dict[str, Any]:
    """Model AUC (P(yes)) vs the linear PRS baseline per outcome, when the rows carry `prs`."""
    from medmix.data.genomics.polygenic import linear_prs_auc
    from medmix.data.schema import Example
    if not refs or any("prs" not in r["context"] or "outcome" not in r["context"] for r in refs):
        return {"available": False, "reason": "the rows' context lacks `prs`/`outcome` (the standardised "
                "polygenic scores the linear baseline needs); ingest with `medmix ingest genotypes`"}
    train = [ex for ex in store.iter_examples("polygenic_risk", "train")]
    test = [Example(r["example_id"], "polygenic_risk", split, r["context"], r["target"], "", label=r["label"])
            for r in refs]
    linear = linear_prs_auc(train, test)
    outcomes = {}
    for outcome, base in sorted(linear.items()):
        idx = [i for i, r in enumerate(refs) if r["context"]["outcome"] == outcome]
        model_auc = macro_auc([refs[i]["label"] for i in idx], [preds[i].option_probs for i in idx])
        outcomes[outcome] = {"n": len(idx), "model_auc": model_auc, "linear_prs_auc": base["auc"],
                             "threshold": base["threshold"]}
    return {"available": True, "outcomes": outcomes,
            "model_auc": _mean([o["model_auc"] for o in outcomes.values()]),
            "linear_prs_auc": _mean([o["linear_prs_auc"] for o in outcomes.values()])}


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def flat_metrics(per_task: dict[str, dict[str, float]]) -> dict[str, float]:
    out = {f"{t}/{k}": float(v) for t, m in per_task.items() for k, v in m.items()}
    names = sorted({k for m in per_task.values() for k in m if k != "n"})
    for name in names:
        out[f"mean/{name}"] = _mean([m[name] for m in per_task.values() if name in m])
    return out


# -- the job ----------------------------------------------------------------------------------

def evaluate(cfg: MedmixConfig, model_ref: str | Path, *, tasks: Sequence[str] | None = None, split: str | None = None,
             name: str | None = None, log: bool = True, write_report: bool = True,
             progress: bool = True, intervals: dict[str, list[str]] | None = None) -> EvalResult:
    """Evaluate `model_ref` (checkpoint, run dir, export dir, `medmix/3`, `medmix@champion`).

    Args:
        cfg: root config: `eval.*`, `data.root` (the store), `lineage.*` (registry, MLflow).
        tasks: tasks to evaluate (default `eval.tasks`, else the model's trained tasks).
        split: overrides `eval.split`.
        name: folder under `eval.report_dir` and MLflow run name (default from model + split).
        log: record an MLflow evaluation run. write_report: write report.md + metrics.png.
        intervals: task -> metrics to give a bootstrap interval (`<metric>/lo`, `/hi`;
            `eval.bootstrap` replicates), e.g. the transfer report's headline metrics.
    """
    from medmix.data.store import ShardStore
    t0 = time.time()
    split = split or cfg.eval.split
    store = ShardStore(cfg.data.root)
    store.manifest()  # a clear error when the store is missing
    with tempfile.TemporaryDirectory(prefix="medmix-eval-") as tmp:
        source = model_source(model_ref, cfg, tmp)
        notes: list[str] = []
        chosen = select_tasks(cfg, store, source, split, tasks, notes)
        items = work_items(store, chosen, split, cfg.eval.batch_size, cfg.eval.max_examples_per_task)
        preds = predict_items(source.export_dir, str(store.root), items, cfg.eval, progress)
    per_task, records, baselines = {}, {}, {}
    for task in chosen:
        task_preds = [p for it, ps in zip(items, preds) if it["task"] == task for p in ps]
        refs = task_references(store, task, split, len(task_preds))
        truth = task_truth(store, task, split, len(refs), notes)
        per_task[task], records[task] = score_task(task, refs, task_preds, truth,
                                                   intervals=(intervals or {}).get(task, ()),
                                                   n_boot=cfg.eval.bootstrap)
        if task == "polygenic_risk":
            baselines[task] = polygenic_baseline(store, split, refs, task_preds)
            if baselines[task]["available"]:
                per_task[task]["linear_prs_auc"] = baselines[task]["linear_prs_auc"]
    result = EvalResult(model=source, split=split, tasks=chosen, metrics=flat_metrics(per_task),
                        per_task=per_task, predictions=records, baselines=baselines, notes=notes,
                        blank_images=cfg.eval.blank_images)
    name = name or f"{slug(source.label)}-{split}{'-blank' if cfg.eval.blank_images else ''}"
    local_report = None
    if write_report:
        result.report_dir, local_report = store_eval_report(result, cfg.eval.report_dir, name)
    result.seconds = time.time() - t0
    if log and cfg.lineage.enabled:
        result.run_id = log_evaluation(cfg, result, name, local_report)
    return result


def log_evaluation(cfg: MedmixConfig, result: EvalResult, name: str, report: Path | None = None) -> str | None:
    """One MLflow run: params, `<task>/<metric>` metrics, the report files as artifacts."""
    src = result.model
    tags = {"medmix.kind": "evaluate", "medmix.model": src.ref, "medmix.model_label": src.label,
            "medmix.split": result.split, "medmix.blank_images": str(result.blank_images).lower()}
    for key, value in (("medmix.source_run_id", src.run_id), ("medmix.checkpoint", src.checkpoint),
                       ("medmix.step", src.step), ("medmix.model_version", src.version)):
        if value is not None:
            tags[key] = value
    tracker = build_tracker(cfg.lineage)
    with tracker.start_run(f"evaluate-{name}", tags=tags, parent_run_id=src.run_id) as run:
        tracker.log_params({"eval.split": result.split, "eval.tasks": result.tasks,
                            "eval.blank_images": result.blank_images,
                            "eval.max_examples_per_task": cfg.eval.max_examples_per_task,
                            "eval.max_new_tokens": cfg.eval.max_new_tokens, "model": src.ref,
                            "data.root": str(cfg.data.root)})
        tracker.log_metrics(result.metrics, step=int(src.step or 0))
        if report is not None:
            tracker.log_artifact(report)
        return run.run_id


def evaluate_export(export_dir: str | Path, cfg: MedmixConfig, split: str = "val",
                    tasks: Sequence[str] | None = None) -> dict[str, float]:
    """Flat metrics of an export on `split`, with nothing logged or written (sweep champion check)."""
    return evaluate(cfg, export_dir, tasks=tasks, split=split, log=False, write_report=False,
                    progress=False).metrics
