"""The sweep objective: per-task scores with bootstrap confidence intervals, and their aggregate.

Users sweep mixtures for one set of weights that is good at *every* task, so the objective is
built per task and then aggregated (`sweep.objective`):

  mean_normalised  (default) the mean over tasks of each task's score scaled between its chance
                   level (0) and its reference (1: `sweep.reference.<task>`, e.g. a specialist's
                   score, else the metric's best value);
  worst_task       the lowest normalised task score (no task may be sacrificed);
  weighted         the `sweep.task_weights`-weighted mean of the normalised scores;
  loss             the mean per-task validation loss (or `sweep.objective_metrics`' weighted
                   mean of report metrics) — the objective before per-task scores existed.

A task's score comes from the task registry's metric (`sweep.task_metric.<task>`, else the
first metric the task lists) on a fixed validation subset (the first `sweep.eval_rows` rows of
its val split), answered the way `medmix evaluate` answers it (option scoring). Where such a
metric cannot be computed cheaply inside every trial (free-text tasks, whose metrics need
generation) or is too coarse (`sweep.score_by.<task> = "loss"`), the score is the validation
loss normalised by the unigram loss of the same targets: 1 - loss / unigram, 0 at the unigram
baseline, 1 at zero loss.

Every score carries a percentile bootstrap interval (resampled examples, seeded per task, so
the same model on the same rows gets the same interval). The aggregate's interval is the
aggregate taken replicate by replicate: each task's examples are resampled independently, so
replicate i of every task together is one bootstrap draw of the whole evaluation set.

Only numpy here: the trainer's evaluation, the sweep driver, the champion gate and the report
all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from medmix.evaluate.metrics import interval, macro_auc, macro_f1, resample, task_seed  # noqa: F401 (re-exported)
from medmix.tune.config import OBJECTIVES, OPTION_METRICS, natural_mode  # noqa: F401 (re-exported)
from medmix.tune.layout import VAL_OBJECTIVE

SCORE_KINDS = ("mean_normalised", "worst_task", "weighted")
SCORE_PREFIX = "val_score/"
METRIC_PREFIX = "val_metric/"


@dataclass
class TaskScore:
    """One task's score on the fixed validation subset, raw and normalised, with intervals."""

    task: str
    source: str
    """metric (the registry's metric) or loss (validation loss normalised by the unigram loss)."""
    metric: str
    """The metric's name, or `loss` (the raw value is then the loss, lower is better)."""
    value: float
    lo: float
    hi: float
    n: int
    chance: float
    """The raw value a guess gets: 1/K for accuracy, 0.5 for AUC, the unigram loss for a loss."""
    reference: float
    """The raw value that scores 1."""
    score: float
    score_lo: float
    score_hi: float
    replicates: np.ndarray = field(repr=False)
    """The normalised score of every bootstrap replicate (for the aggregate's interval)."""

    def to_metrics(self) -> dict[str, float]:
        """Flat report keys: `val_score/<task>[/lo|/hi]`, `val_metric/<task>/<metric>[/lo|/hi]`."""
        raw = f"{METRIC_PREFIX}{self.task}/{self.metric}"
        return {f"{SCORE_PREFIX}{self.task}": self.score, f"{SCORE_PREFIX}{self.task}/lo": self.score_lo,
                f"{SCORE_PREFIX}{self.task}/hi": self.score_hi, raw: self.value, f"{raw}/lo": self.lo,
                f"{raw}/hi": self.hi, f"{raw}/n": float(self.n)}


def chance_level(metric: str, num_options: Sequence[int]) -> float:
    """What guessing scores on `metric`, given each example's number of options."""
    if metric in ("macro_auc", "auc"):
        return 0.5
    if metric in ("accuracy", "macro_f1"):
        k = np.asarray(num_options, dtype=np.float64)
        if not len(k) or (k < 1).any():
            raise ValueError(f"{metric}: every example needs at least one option")
        return float(np.mean(1.0 / k))
    raise ValueError(f"no chance level for metric {metric!r}: in-trial scores use one of {', '.join(OPTION_METRICS)}")


def _normalise(raw: np.ndarray | float, chance: float, reference: float) -> Any:
    return (np.asarray(raw, dtype=np.float64) - chance) / (reference - chance)


def metric_score(task: str, metric: str, labels: Sequence[int], option_probs: Sequence[Sequence[float]], *,
                 reference: float = 1.0, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> TaskScore:
    """Score an option task with `metric` on its answers, with a bootstrap interval.

    Args:
        labels: the true option index per example.
        option_probs: per example, the probability of each of its options (rows may differ in
            length for multiple choice).
        reference: the metric value that scores 1 (a specialist's score, or the metric's best).
    """
    if metric not in OPTION_METRICS:
        raise ValueError(f"{task}: metric {metric!r} needs generated text; score the task by its "
                         f"validation loss instead (sweep.score_by.{task} = \"loss\")")
    y = np.asarray(labels, dtype=np.int64)
    if len(y) != len(option_probs) or not len(y):
        raise ValueError(f"{task}: {len(y)} labels for {len(option_probs)} answered examples")
    widths = [len(p) for p in option_probs]
    chance = chance_level(metric, widths)
    if not reference > chance:
        raise ValueError(f"{task}: reference {reference:g} for {metric} is not above chance ({chance:.3g}); "
                         f"set sweep.reference.{task} to a score better than guessing")
    pred = np.array([int(np.argmax(p)) for p in option_probs])
    idx = resample(len(y), n_boot, task_seed(seed, task))
    if metric == "accuracy":
        correct = (pred == y).astype(np.float64)
        value = float(correct.mean())
        reps = correct[idx].mean(axis=1)
    elif metric == "macro_f1":
        value = macro_f1(y.tolist(), pred.tolist())
        reps = _macro_f1_replicates(y, pred, _counts(idx, len(y)))
    else:
        if len(set(widths)) != 1:
            raise ValueError(f"{task}: {metric} needs the same options for every example")
        probs = np.asarray(option_probs, dtype=np.float64)
        value = macro_auc(y, probs, num_classes=probs.shape[1])
        reps = _macro_auc_replicates(y, probs, _counts(idx, len(y)))
    lo, hi = interval(reps, level)
    norm = _normalise(reps, chance, reference)
    s_lo, s_hi = interval(norm, level)
    return TaskScore(task, "metric", metric, value, lo, hi, len(y), chance, reference,
                     float(_normalise(value, chance, reference)), s_lo, s_hi, norm)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(replicates, n): how many times each example was drawn into each replicate."""
    w = np.zeros((idx.shape[0], n))
    np.add.at(w, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), 1.0)
    return w


def _macro_f1_replicates(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`metrics.macro_f1` of every replicate (weights `w`), vectorised: F1 per class over the
    classes present in the replicate's references or predictions, averaged; -1 is no class."""
    classes = sorted((set(y.tolist()) | set(pred.tolist())) - {-1})
    f1 = np.full((w.shape[0], len(classes)), np.nan)
    for j, c in enumerate(classes):
        tp = w @ ((pred == c) & (y == c))
        fp = w @ ((pred == c) & (y != c))
        fn = w @ ((pred != c) & (y == c))
        present = (tp + fp + fn) > 0
        f1[present, j] = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    with np.errstate(all="ignore"):
        return np.nanmean(f1, axis=1) if classes else np.full(w.shape[0], np.nan)


def _macro_auc_replicates(y: np.ndarray, probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`metrics.macro_auc` of every replicate, vectorised: a class's AUC is the weighted
    Mann-Whitney statistic (ties count half) over its positives and negatives, averaged over
    the classes the replicate has both for."""
    probs = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-300, None)
    aucs = np.full((w.shape[0], probs.shape[1]), np.nan)
    for c in range(probs.shape[1]):
        s = probs[:, c]
        beats = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
        pos, neg = w * (y == c), w * (y != c)
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        ok = (n_pos > 0) & (n_neg > 0)
        aucs[ok, c] = np.einsum("bi,ij,bj->b", pos[ok], beats, neg[ok]) / (n_pos[ok] * n_neg[ok])
    with np.errstate(all="ignore"):
        return np.nanmean(aucs, axis=1)


def unigram_loss(label_ids: Sequence[int], vocab_size: int) -> float:
    """Mean cross-entropy (nats) of the tokens under their own add-one-smoothed unigram
    distribution over the vocabulary: the loss of a model that ignores the prompt entirely."""
    ids = np.asarray(label_ids, dtype=np.int64)
    if not len(ids):
        raise ValueError("no target tokens")
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[ids].mean())


def loss_score(task: str, example_loss: Sequence[float], example_tokens: Sequence[float], baseline: float, *,
               n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> TaskScore:
    """Score a task by its token-weighted validation loss against `baseline` (the unigram loss):
    normalised 1 - loss / baseline. `example_loss` holds each example's summed token loss."""
    loss = np.asarray(example_loss, dtype=np.float64)
    tokens = np.asarray(example_tokens, dtype=np.float64)
    if len(loss) != len(tokens) or not len(loss) or tokens.sum() <= 0:
        raise ValueError(f"{task}: no target tokens to score")
    if not baseline > 0:
        raise ValueError(f"{task}: the baseline loss must be > 0, got {baseline}")
    idx = resample(len(loss), n_boot, task_seed(seed, task))
    reps = loss[idx].sum(axis=1) / np.maximum(tokens[idx].sum(axis=1), 1.0)
    value = float(loss.sum() / tokens.sum())
    lo, hi = interval(reps, level)
    norm = _normalise(reps, baseline, 0.0)
    s_lo, s_hi = interval(norm, level)
    return TaskScore(task, "loss", "loss", value, lo, hi, len(loss), baseline, 0.0,
                     float(_normalise(value, baseline, 0.0)), s_lo, s_hi, norm)


def aggregate(scores: Sequence[TaskScore], kind: str, weights: Mapping[str, float] | None = None,
              level: float = 0.95) -> tuple[float, float, float]:
    """(value, lo, hi) of the `kind` aggregate of normalised task scores."""
    if kind not in SCORE_KINDS:
        raise ValueError(f"aggregate kind {kind!r} is not one of {', '.join(SCORE_KINDS)}")
    if not scores:
        raise ValueError("no task scores to aggregate")
    point = np.array([s.score for s in scores])
    reps = np.stack([s.replicates for s in scores], axis=1)   # (n_boot, tasks)
    if kind == "worst_task":
        value, agg = float(point.min()), reps.min(axis=1)
    else:
        if kind == "weighted":
            weights = weights or {}
            missing = [s.task for s in scores if s.task not in weights]
            if missing:
                raise ValueError(f"sweep.objective = \"weighted\" needs sweep.task_weights for {', '.join(missing)}")
            w = np.array([float(weights[s.task]) for s in scores])
        else:
            w = np.ones(len(scores))
        w = w / w.sum()
        value, agg = float(point @ w), reps @ w
    lo, hi = interval(agg, level)
    return value, lo, hi


def objective_metrics(scores: Sequence[TaskScore], kind: str, weights: Mapping[str, float] | None = None,
                      level: float = 0.95) -> dict[str, float]:
    """Every task's report keys plus the aggregate's (`val_objective`, `/lo`, `/hi`)."""
    out: dict[str, float] = {}
    for s in scores:
        out.update(s.to_metrics())
    if kind in SCORE_KINDS and scores:
        value, lo, hi = aggregate(scores, kind, weights, level)
        out.update({VAL_OBJECTIVE: value, f"{VAL_OBJECTIVE}/lo": lo, f"{VAL_OBJECTIVE}/hi": hi})
    return out


def significantly_better(candidate: tuple[float, float, float], incumbent: tuple[float, float, float],
                         mode: str) -> bool:
    """Whether `candidate` (value, lo, hi) beats `incumbent` beyond both intervals: the whole of
    the candidate's interval lies past the whole of the incumbent's."""
    _, c_lo, c_hi = candidate
    _, i_lo, i_hi = incumbent
    if any(v != v for v in (c_lo, c_hi, i_lo, i_hi)):
        return False
    return c_lo > i_hi if mode == "max" else c_hi < i_lo
