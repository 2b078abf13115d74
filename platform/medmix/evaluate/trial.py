"""Per-task scores inside a training run: what a sweep trial is judged on at every evaluation.

    scorer = TrialScorer.build(cfg, tokenizer, store, batch_spec, tasks)
    metrics = scorer(model)        # val_score/<task>[/lo|/hi], val_metric/..., val_objective[/lo|/hi]

Each task is scored on a fixed validation subset — the first `sweep.eval_rows` rows of its val
split, the same rows in every trial, at every step — so scores of different trials compare on
the same evaluation set:

- option tasks (mcq, qa, classify, variant, risk) by the registry's metric
  (`sweep.task_metric.<task>`, else the first of its metrics computable from option
  probabilities), answered the way `medmix evaluate` answers them (`predict_rows`: every
  option scored as a continuation of the prompt);
- free-text tasks, and any task with `sweep.score_by.<task> = "loss"`, by their teacher-forced
  validation loss on the same rows, normalised by the unigram loss of those rows' targets.

Scores, their bootstrap intervals and the aggregate are `medmix.tune.objective`'s. The rows
(and the loss batches) are read once, when the run starts; an evaluation is then a few
forwards. Every rank computes the same numbers on the same rows (so FSDP's collective forwards
stay in step).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medmix.data.store import read_rows
from medmix.data.collate import build_batch
from medmix.data.stream import split_refs, to_torch
from medmix.evaluate.metrics import _option_index
from medmix.evaluate.predict import Predictor, predict_rows
from medmix.model.preprocess import image_preprocess
from medmix.tasks import get_task
from medmix.tune.config import OPTION_METRICS
from medmix.tune.objective import TaskScore, loss_score, metric_score, objective_metrics, unigram_loss

if TYPE_CHECKING:
    from medmix.config import MedmixConfig
    from medmix.data.store import ShardStore

LOSS_BATCH = 8


def scoring_plan(cfg: MedmixConfig, tasks: list[str]) -> dict[str, tuple[str, str]]:
    """task -> (source, metric): ("metric", name) or ("loss", "loss"), from `[sweep]`."""
    out = {}
    for task in tasks:
        spec = get_task(task)
        how = cfg.sweep.score_by.get(task)
        metric = cfg.sweep.task_metric.get(task) or next((m for m in spec.metrics if m in OPTION_METRICS), None)
        if how is None:
            how = "metric" if spec.has_options and metric else "loss"
        if how == "metric":
            if not spec.has_options:
                raise ValueError(f"sweep.score_by.{task} = \"metric\": {task} is a free-text task ({spec.kind}) "
                                 f"whose metrics need generation; score it by \"loss\"")
            if metric is None:
                raise ValueError(f"{task}: none of its metrics ({', '.join(spec.metrics)}) is computable from "
                                 f"option probabilities; set sweep.task_metric.{task} or sweep.score_by.{task} = "
                                 f"\"loss\"")
            out[task] = ("metric", metric)
        else:
            out[task] = ("loss", "loss")
    return out


@dataclass
class _OptionTask:
    task: str
    metric: str
    rows: list[dict]
    labels: list[int]


@dataclass
class _LossTask:
    task: str
    batches: list[Any]
    baseline: float


class TrialScorer:
    """Scores a model on every task's fixed validation subset; call it with the model."""

    def __init__(self, cfg: MedmixConfig, tokenizer: Any, option_tasks: list[_OptionTask],
                 loss_tasks: list[_LossTask]):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.option_tasks = option_tasks
        self.loss_tasks = loss_tasks
        self.prep = image_preprocess(cfg.model)

    @classmethod
    def build(cls, cfg: MedmixConfig, tokenizer: Any, store: ShardStore, batch_spec: Any,
              tasks: list[str]) -> "TrialScorer":
        """Read every task's subset (`sweep.eval_rows` rows of its val split) once."""
        n = cfg.sweep.eval_rows
        spec = dataclasses.replace(batch_spec, augment=False)
        option_tasks, loss_tasks = [], []
        for task, (source, metric) in scoring_plan(cfg, tasks).items():
            refs = split_refs(store, task, "val")[:n]
            if not refs:
                continue
            if source == "metric":
                rows = _read(store, refs)
                tspec = get_task(task)
                labels = []
                for r in rows:
                    ctx = r["context"] if isinstance(r["context"], dict) else json.loads(r["context"] or "{}")
                    label = r.get("label")
                    labels.append(int(label) if label is not None and label >= 0
                                  else _option_index(tspec.options_for(ctx), r["target"]))
                if min(labels) < 0:
                    bad = rows[labels.index(min(labels))]
                    raise ValueError(f"{task}: example {bad['example_id']!r} has a target that is none of its "
                                     f"options ({bad['target']!r}); fix the shard or score {task} by loss")
                option_tasks.append(_OptionTask(task, metric, rows, labels))
            else:
                batches = [to_torch(build_batch(spec, refs[i:i + LOSS_BATCH])) for i in range(0, len(refs), LOSS_BATCH)]
                targets = np.concatenate([b["labels"][b["labels"] != -100].numpy() for b in batches])
                loss_tasks.append(_LossTask(task, batches, unigram_loss(targets, len(tokenizer))))
        return cls(cfg, tokenizer, option_tasks, loss_tasks)

    @property
    def tasks(self) -> list[str]:
        return [t.task for t in self.option_tasks] + [t.task for t in self.loss_tasks]

    @torch.no_grad()
    def scores(self, model: torch.nn.Module) -> list[TaskScore]:
        sw = self.cfg.sweep
        out: list[TaskScore] = []
        was_training = model.training
        model.eval()
        try:
            if self.option_tasks:
                predictor = Predictor(model=model, tokenizer=self.tokenizer, image_size=self.cfg.model.image_size,
                                      num_image_tokens=self.cfg.model.num_image_tokens,
                                      max_seq_len=self.cfg.stream.max_seq_len, exemplar=self.cfg.stream.exemplar,
                                      image_mean=self.prep.mean, image_std=self.prep.std)
                for t in self.option_tasks:
                    preds = predict_rows(predictor, t.rows)
                    out.append(metric_score(t.task, t.metric, t.labels, [p.option_probs or [] for p in preds],
                                            reference=sw.reference.get(t.task, 1.0), n_boot=sw.bootstrap,
                                            seed=self.cfg.seed, level=sw.ci_level))
            device = next(model.parameters()).device
            for lt in self.loss_tasks:
                sums: dict[str, list[float]] = defaultdict(list)
                for batch in lt.batches:
                    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels", "pixel_values")
                              if k in batch and batch[k] is not None}
                    res = model(**inputs)
                    sums["loss"] += res.example_loss.float().cpu().tolist()
                    sums["tokens"] += res.example_tokens.float().cpu().tolist()
                out.append(loss_score(lt.task, sums["loss"], sums["tokens"], lt.baseline, n_boot=sw.bootstrap,
                                      seed=self.cfg.seed, level=sw.ci_level))
        finally:
            model.train(was_training)
        return out

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        sw = self.cfg.sweep
        return objective_metrics(self.scores(model), sw.objective, sw.task_weights, sw.ci_level)


def _read(store: ShardStore, refs: list) -> list[dict]:
    """The rows `refs` name, in their order (one read per shard)."""
    by_shard: dict[str, list[int]] = defaultdict(list)
    for r in refs:
        by_shard[r.shard].append(r.row)
    got = {s: dict(zip(rows, read_rows(store.root, s, rows))) for s, rows in by_shard.items()}
    return [got[r.shard][r.row] for r in refs]
