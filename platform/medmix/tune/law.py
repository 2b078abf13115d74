"""Mixture laws: regress validation loss on the mixture, per scale, and predict the best mixture.

RegMix (Liu et al., 2024) trains many small proxy runs on Dirichlet-sampled mixtures, fits a
regression from mixture to validation loss and picks the mixture the regression likes best,
relying on the *rank invariance* of mixtures across scales: a mixture that is better at a
small scale stays better at a large one. This module does that on a sweep's trials:

  1. a table of trials, one row per (trial, evaluated step): shares `share.<task>`, scale
     `vision/language`, and metrics (`objective`, `val_loss`, `val_loss/<task>`);
  2. per scale and per metric, a regression mixture -> metric. `ridge`: ridge regression on
     [shares, log shares, pairwise share products] — exact for losses quadratic in the
     shares and for the log-linear laws of Data Mixing Laws, and smooth enough to be fitted
     from a handful of trials (the penalty is chosen by leave-one-out). `gbm`: sklearn's
     gradient boosting on the shares (RegMix used LightGBM), for large sweeps;
  3. Spearman's rank correlation of mixtures between every pair of scales — on the trials
     both scales ran when there are at least 3 common mixtures, else on both scales' fitted
     predictions at every observed mixture;
  4. the best mixture at a target scale: the fitted law minimised (or maximised) over many
     mixtures drawn like the sweep draws them. For a scale no trial ran, a pooled model with
     the model's size (log10 of its parameters: the vision tower's plus the decoder's without
     embeddings, `scale_params`) and its interactions with the mixture features extrapolates
     (RegMix's regression with log N as an input); with one swept scale this reduces to rank
     invariance;
  5. a leave-one-scale-out backtest (`backtest`): the pooled law fitted without one scale
     predicts that scale's trials, and the error and Spearman of predicted against observed
     say how far extrapolation across sizes can be trusted.

    table = load_trials("trials.csv")        # or trials_from_mlflow(cfg.lineage, parent_run_id)
    law = fit_law(table.at_step()[0], model="ridge")
    best = law.predict_best(sample_mixtures(space, 20000), "debug/tiny")   # columns = law.tasks
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from medmix.model.config import SCALES
from medmix.model.scales import LANGUAGE_SCALES, VISION_SCALES
from medmix.storage import Location, location

SHARE_PREFIX = "share."
OBJECTIVE = "objective"
EPS = 1e-4   # log(share + EPS): a task at share 0 stays finite


# --- the trial table -----------------------------------------------------------------------

@dataclass
class TrialTable:
    """Trials of a sweep in long format: one record per (trial, evaluated step)."""

    records: list[dict[str, Any]]

    @property
    def tasks(self) -> list[str]:
        keys = {k for r in self.records for k in r if k.startswith(SHARE_PREFIX)}
        return sorted(k[len(SHARE_PREFIX):] for k in keys)

    @property
    def metrics(self) -> list[str]:
        """Numeric columns a law can be fitted to: the objective and the validation losses."""
        keys = {k for r in self.records for k in r
                if k == OBJECTIVE or k == "val_loss" or k.startswith("val_loss/")}
        return sorted(keys, key=lambda k: (k != OBJECTIVE, k != "val_loss", k))

    @property
    def scales(self) -> list[str]:
        return sorted({r["scale"] for r in self.records}, key=scale_ordinal)

    def at_step(self, step: int | None = None, min_trials: int = 4) -> tuple["TrialTable", int]:
        """One record per trial: at `step`, or at the latest step that `min_trials` trials reached.

        ASHA stops weak trials early, so few trials reach the last step; comparing trials at
        one step keeps the law about the mixture, not about how long a run trained.
        """
        by_step: dict[int, dict[str, dict]] = {}
        for r in self.records:
            by_step.setdefault(int(r["step"]), {})[str(r["trial"])] = r
        if not by_step:
            raise ValueError("the trial table is empty")
        if step is None:
            n_trials = len({str(r["trial"]) for r in self.records})
            need = min(min_trials, n_trials)
            eligible = [s for s, rows in by_step.items() if len(rows) >= need]
            step = max(eligible) if eligible else max(by_step, key=lambda s: (len(by_step[s]), s))
        if step not in by_step:
            raise ValueError(f"no trial was evaluated at step {step}; steps: {sorted(by_step)}")
        return TrialTable(list(by_step[step].values())), step

    def matrix(self, tasks: Sequence[str] | None = None) -> np.ndarray:
        tasks = list(tasks or self.tasks)
        return np.array([[float(r.get(SHARE_PREFIX + t, 0.0)) for t in tasks] for r in self.records])

    def column(self, key: str) -> np.ndarray:
        return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in self.records])

    def where(self, **equals: Any) -> "TrialTable":
        return TrialTable([r for r in self.records if all(r.get(k) == v for k, v in equals.items())])


def load_trials(path: str | Path) -> TrialTable:
    """Read trial results from CSV (a header row), JSON (a list of objects) or JSON lines."""
    path = Path(path)
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            records = [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
    elif path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    elif path.suffix == ".json":
        data = json.loads(path.read_text())
        records = data["trials"] if isinstance(data, dict) else data
    else:
        raise ValueError(f"{path}: trial results must be .csv, .json or .jsonl")
    return TrialTable(normalise_records(records, where=str(path)))


def write_trials(table: TrialTable, path: str | Path | Location) -> Location:
    """Write the table as CSV (the format `medmix sweep analyze FILE.csv` reads back), to a
    local path or an object-storage URI, whole or not at all."""
    keys = ["trial", "step", "scale"]
    keys += sorted({k for r in table.records for k in r} - set(keys),
                   key=lambda k: (not k.startswith(SHARE_PREFIX), k))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in table.records:
        w.writerow({k: r.get(k, "") for k in keys})
    out = location(path)
    out.write_text(buf.getvalue())
    return out


def normalise_records(records: Iterable[Mapping[str, Any]], where: str = "trial results") -> list[dict]:
    """Check each record has trial, step, scale, shares and a metric; fill `objective`."""
    out = []
    for i, rec in enumerate(records):
        r = dict(rec)
        missing = [k for k in ("trial", "step", "scale") if r.get(k) in (None, "")]
        if missing:
            raise ValueError(f"{where}: record {i} lacks {', '.join(missing)}")
        if not any(k.startswith(SHARE_PREFIX) for k in r):
            raise ValueError(f"{where}: record {i} has no share.<task> column")
        if r.get(OBJECTIVE) in (None, ""):
            if r.get("val_loss") not in (None, ""):
                r[OBJECTIVE] = float(r["val_loss"])
            else:
                per_task = [float(v) for k, v in r.items() if k.startswith("val_loss/") and v not in (None, "")]
                if not per_task:
                    raise ValueError(f"{where}: record {i} has neither objective, val_loss nor val_loss/<task>")
                r[OBJECTIVE] = sum(per_task) / len(per_task)
        r["step"] = int(r["step"])
        r["trial"] = str(r["trial"])
        scale_ordinal(str(r["scale"]))   # a clear error for a malformed scale
        out.append(r)
    return out


def _parse(value: str) -> Any:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def scale_ordinal(key: str) -> float:
    """Position of a 'vision/language' scale on the ladder (index in SCALES, summed)."""
    parts = key.split("/")
    if len(parts) != 2 or any(p not in SCALES for p in parts):
        raise ValueError(f"scale {key!r} must look like 'vision/language' with scales from {', '.join(SCALES)}")
    return float(SCALES.index(parts[0]) + SCALES.index(parts[1]))


# The timm ViTs the vision scales start from: (embed_dim, depth); mlp_ratio 4, patch 16 at 224 px.
_TIMM_VIT = {"vit_tiny_patch16_224": (192, 12), "vit_small_patch16_224": (384, 12),
             "vit_base_patch16_224": (768, 12), "vit_large_patch16_224": (1024, 24)}


def scale_params(key: str) -> int:
    """Parameters of a 'vision/language' scale that grow with it: the ViT tower's and the
    decoder's without its embeddings (the vocabulary is the tokenizer's, not the scale's)."""
    scale_ordinal(key)
    vision, language = key.split("/")
    v = VISION_SCALES[vision]
    d, depth = _TIMM_VIT[v.timm_name]
    d, depth = int(v.timm_kwargs.get("embed_dim", d)), int(v.timm_kwargs.get("depth", depth))
    patch_embed = 3 * 16 * 16 * d + d
    positions = (196 + 1) * d + d                       # position table + class token
    block = 12 * d * d + 13 * d                         # qkv + proj + 4x MLP + 2 norms
    vit = patch_embed + positions + depth * block + 2 * d
    lang = LANGUAGE_SCALES[language]
    decoder = lang.num_params(vocab_size=0) - lang.hidden_size   # no embeddings; keep the final norm
    return int(vit + decoder + lang.hidden_size)


def scale_size(key: str) -> float:
    """log10 of `scale_params`: what the pooled law and the backtest take as model size."""
    return math.log10(scale_params(key))


# --- the regression ------------------------------------------------------------------------

def mixture_features(x: np.ndarray) -> np.ndarray:
    """[shares, log shares, pairwise products (i <= j)] — what the ridge law is linear in."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    k = x.shape[1]
    pairs = [x[:, i] * x[:, j] for i in range(k) for j in range(i, k)]
    return np.column_stack([x, np.log(x + EPS), *pairs]) if pairs else np.column_stack([x, np.log(x + EPS)])


def _ridge():
    """Standardised features -> ridge, its penalty chosen by (efficient) leave-one-out."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-6, 3, 40)))


def build_regressor(model: str, seed: int = 0):
    """A fresh sklearn regressor for one (scale, metric)."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    if model == "ridge":
        return Pipeline([("features", FunctionTransformer(mixture_features)), *_ridge().steps])
    if model == "gbm":
        return GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05,
                                         subsample=0.8, random_state=seed)
    raise ValueError(f"unknown law model {model!r}: ridge or gbm")


def _pooled_features(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    f = mixture_features(x)
    s = np.asarray(s, dtype=np.float64).reshape(-1, 1)
    return np.column_stack([f, s, f * s])


@dataclass
class ScaleFit:
    """The law at one scale: a regressor per metric, with held-out quality for the objective."""

    scale: str
    n: int
    models: dict[str, Any]
    loo: dict[str, np.ndarray] = field(default_factory=dict)
    """`objective` -> held-out predictions aligned with the scale's rows: leave-one-out up to 20
    trials, 10-fold beyond (n >= 3)."""
    r2_loo: dict[str, float] = field(default_factory=dict)


@dataclass
class MixtureLaw:
    """Fitted laws for every scale of a sweep, plus a pooled one across scales."""

    tasks: list[str]
    metrics: list[str]
    mode: str
    model: str
    fits: dict[str, ScaleFit]
    table: TrialTable
    pooled: dict[str, Any] = field(default_factory=dict)

    def predict(self, scale: str, x: np.ndarray, metric: str = OBJECTIVE) -> np.ndarray:
        """Predicted `metric` for mixtures `x` (columns = `tasks`) at `scale`."""
        x = np.atleast_2d(x)
        if scale in self.fits and metric in self.fits[scale].models:
            return self.fits[scale].models[metric].predict(x)
        if metric not in self.pooled:
            raise ValueError(f"no law for {metric!r} at scale {scale!r}")
        model = self.pooled[metric]
        s = np.full(len(x), scale_size(scale))
        if self.model == "ridge":
            return model.predict(_pooled_features(x, s))
        return model.predict(np.column_stack([x, s]))

    def predict_best(self, mixtures: np.ndarray, scale: str, metric: str = OBJECTIVE) -> dict[str, Any]:
        """The best of candidate `mixtures` (rows, columns = `tasks`) under the law at `scale`."""
        pred = self.predict(scale, mixtures, metric)
        i = int(np.argmin(pred) if self.mode == "min" else np.argmax(pred))
        per_task = {m: float(self.predict(scale, mixtures[i:i + 1], m)[0]) for m in self.metrics
                    if m != metric and (scale in self.fits or m in self.pooled)}
        return {"scale": scale, "mixture": {t: float(v) for t, v in zip(self.tasks, mixtures[i])},
                "predicted": float(pred[i]), "predicted_metrics": per_task,
                "extrapolated": scale not in self.fits, "candidates": int(len(mixtures))}

    def best_observed(self, scale: str, metric: str = OBJECTIVE) -> dict[str, Any]:
        rows = self.table.where(scale=scale)
        y = rows.column(metric)
        i = int(np.nanargmin(y) if self.mode == "min" else np.nanargmax(y))
        r = rows.records[i]
        return {"trial": r["trial"], "step": r["step"], "value": float(y[i]),
                "mixture": {t: float(r.get(SHARE_PREFIX + t, 0.0)) for t in self.tasks}}


def fit_law(table: TrialTable, *, model: str = "ridge", mode: str = "min",
            metrics: Sequence[str] | None = None, seed: int = 0) -> MixtureLaw:
    """Fit mixture -> metric at every scale with enough trials, and a pooled law over scales."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, LeaveOneOut, cross_val_predict
    tasks = table.tasks
    metrics = [m for m in (metrics or table.metrics) if np.isfinite(table.column(m)).any()]
    fits: dict[str, ScaleFit] = {}
    for scale in table.scales:
        rows = table.where(scale=scale)
        x = rows.matrix(tasks)
        models, loo, r2 = {}, {}, {}
        for metric in metrics:
            y = rows.column(metric)
            ok = np.isfinite(y)
            if ok.sum() < 2:
                continue
            reg = build_regressor(model, seed).fit(x[ok], y[ok])
            models[metric] = reg
            if metric == OBJECTIVE and ok.sum() >= 3 and ok.all():
                cv = LeaveOneOut() if len(y) <= 20 else KFold(10, shuffle=True, random_state=seed)
                pred = cross_val_predict(clone(build_regressor(model, seed)), x, y, cv=cv)
                loo[metric] = pred
                r2[metric] = _r2(y, pred)
        if models:
            fits[scale] = ScaleFit(scale=scale, n=len(rows.records), models=models, loo=loo, r2_loo=r2)
    if not fits:
        raise ValueError("no scale has at least 2 trials with finite metrics: nothing to fit")
    pooled = {metric: reg for metric in metrics
              if (reg := _fit_pooled(table, tasks, metric, model, seed)) is not None}
    return MixtureLaw(tasks=tasks, metrics=metrics, mode=mode, model=model, fits=fits, table=table,
                      pooled=pooled)


def _fit_pooled(table: TrialTable, tasks: Sequence[str], metric: str, model: str, seed: int):
    """mixture features x model size -> `metric`, over every scale's trials; None if < 2 rows."""
    x_all = table.matrix(tasks)
    s_all = np.array([scale_size(r["scale"]) for r in table.records])
    y = table.column(metric)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return None
    if model == "ridge":
        return _ridge().fit(_pooled_features(x_all[ok], s_all[ok]), y[ok])
    return build_regressor(model, seed).fit(np.column_stack([x_all, s_all])[ok], y[ok])


def backtest(law: MixtureLaw, metric: str = OBJECTIVE, seed: int = 0, min_trials: int = 3) -> list[dict[str, Any]]:
    """Leave one scale out: the pooled law fitted on the other scales predicts the held-out
    scale's trials. Per held-out scale (with >= `min_trials` trials): RMSE, R² and Spearman of
    predicted against observed, and whether the best observed trial is the one predicted best.

    A low or negative Spearman means mixtures do not rank the same across sizes: the rank
    invariance that extrapolation rests on fails for this sweep.
    """
    from scipy.stats import spearmanr
    out: list[dict[str, Any]] = []
    scales = list(law.fits)
    if len(scales) < 2:
        return out
    for held in scales:
        test = law.table.where(scale=held)
        train = TrialTable([r for r in law.table.records if r["scale"] != held])
        y = test.column(metric)
        ok = np.isfinite(y)
        if ok.sum() < min_trials:
            continue
        reg = _fit_pooled(train, law.tasks, metric, law.model, seed)
        if reg is None:
            continue
        x = test.matrix(law.tasks)[ok]
        s = np.full(len(x), scale_size(held))
        pred = reg.predict(_pooled_features(x, s) if law.model == "ridge" else np.column_stack([x, s]))
        obs = y[ok]
        rho = float("nan") if _all_tied(pred) or _all_tied(obs) else spearmanr(pred, obs).statistic
        pick = np.argmin if law.mode == "min" else np.argmax
        out.append({"held_out": held, "trained_on": sorted({r["scale"] for r in train.records}, key=scale_ordinal),
                    "n": int(ok.sum()), "rmse": float(np.sqrt(np.mean((pred - obs) ** 2))),
                    "r2": _r2(obs, pred), "spearman": float(rho) if rho == rho else float("nan"),
                    "picks_best": bool(pick(pred) == pick(obs)), "metric": metric})
    return out


def _all_tied(values: Sequence[float]) -> bool:
    """Every value the same: no ranking to correlate (Spearman is undefined)."""
    return len(set(np.round(np.asarray(values, dtype=float), 12))) == 1


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


# --- rank invariance -----------------------------------------------------------------------

def rank_invariance(law: MixtureLaw, metric: str = OBJECTIVE, decimals: int = 4) -> list[dict[str, Any]]:
    """Spearman correlation of mixtures' `metric` between every pair of fitted scales.

    `basis` says where the ranks come from: `observed` when both scales ran at least 3 of the
    same mixtures (rounded to `decimals`), else `fitted` — both scales' laws evaluated at every
    mixture any trial ran.
    """
    from scipy.stats import spearmanr
    out = []
    tasks = law.tasks
    every = law.table.matrix(tasks)
    for a, b in combinations(law.fits, 2):
        ra, rb = _by_mixture(law.table.where(scale=a), tasks, metric, decimals), \
            _by_mixture(law.table.where(scale=b), tasks, metric, decimals)
        common = sorted(set(ra) & set(rb))
        if len(common) >= 3:
            ya, yb, basis = [ra[k] for k in common], [rb[k] for k in common], "observed"
        else:
            ya, yb, basis = law.predict(a, every, metric), law.predict(b, every, metric), "fitted"
            common = list(range(len(every)))
        tied = [s for s, y in ((a, ya), (b, yb)) if _all_tied(y)]
        rho = spearmanr(ya, yb).statistic if len(common) >= 3 and not tied else float("nan")
        pair = {"scales": [a, b], "spearman": float(rho) if rho == rho else float("nan"),
                "n": len(common), "basis": basis, "metric": metric}
        if tied:   # a ranking needs values that differ: say why there is no rho, not just "nan"
            pair["note"] = (f"every one of the {len(common)} {'shared ' if basis == 'observed' else ''}"
                            f"mixtures has the same {metric} at {' and '.join(tied)}: no ranking to compare "
                            f"(train longer, or score tasks by loss: sweep.score_by)")
        out.append(pair)
    return out


def _by_mixture(rows: TrialTable, tasks: Sequence[str], metric: str, decimals: int) -> dict[tuple, float]:
    x = rows.matrix(tasks)
    y = rows.column(metric)
    out: dict[tuple, list[float]] = {}
    for xi, yi in zip(x, y):
        if math.isfinite(yi):
            out.setdefault(tuple(np.round(xi, decimals)), []).append(float(yi))
    return {k: float(np.mean(v)) for k, v in out.items()}


def choose_target_scale(law: MixtureLaw, target: str = "") -> str:
    """`target` if given, else the largest scale any trial ran."""
    if target:
        scale_ordinal(target)
        return target
    return max(law.fits, key=scale_ordinal)
