"""`medmix sweep analyze`: fit the mixture law on a sweep's trials, write plots and a summary.

    report = analyze(table, space, out_dir, target_scale="", model="ridge")
    print(report.summary_path.read_text())

Outputs under `out_dir` (a sweep's `<sweep_dir>/analysis/` by default; for a sweep on object
storage, written to a local cache folder and copied to `<sweep_dir>/analysis/`):
  - `metric_vs_weight.png`   the objective against each task's share, one panel per task,
                             coloured by scale (what the law has to explain);
  - `loss_vs_scale.png`      per-task validation loss against scale (best and median trial);
  - `predicted_vs_observed.png`  held-out (cross-validated) predictions of the law against the truth;
  - `trials.csv`             the rows the law was fitted on;
  - `analysis.json`          fit quality, Spearman across scales, the leave-one-scale-out
                             backtest, the baselines, the predicted best mixture and the verdict;
  - `summary.md`             all of it in words.

The report is honest about what a small sweep can tell: when the law's held-out R² is below
`sweep.law_min_r2` (at the target scale, or in the backtest when it extrapolates), when the
predicted gain over the best observed trial is inside the fit's 95% interval, or when the
backtest finds mixtures ranking differently across scales, the summary says the fit cannot
pick a mixture and shows the best observed trials instead. The stratified (equal shares) and
size-proportional (shares by training rows) mixtures are always in the table: the baselines
most mixture searches fail to beat.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from medmix.tune.law import (OBJECTIVE, MixtureLaw, TrialTable, backtest, choose_target_scale, fit_law,
                             load_trials, rank_invariance, scale_ordinal, write_trials)
from medmix.storage import Location, is_uri, local_copy, local_dir, location, normalize, upload
from medmix.tune.layout import SWEEP_INFO, TRIALS_CSV, read_json
from medmix.tune.runs import find_parent_run, log_artifacts, trials_from_mlflow
from medmix.tune.space import SearchSpace, sample_mixtures

if TYPE_CHECKING:
    from medmix.config import MedmixConfig


@dataclass
class AnalysisReport:
    out_dir: Path
    step: int
    target_scale: str
    prediction: dict[str, Any]
    spearman: list[dict[str, Any]]
    fit_quality: dict[str, dict[str, float]]
    best_observed: dict[str, dict[str, Any]]
    plots: list[Path] = field(default_factory=list)
    backtest: list[dict[str, Any]] = field(default_factory=list)
    """Leave-one-scale-out: each scale predicted from the others (see `law.backtest`)."""
    baselines: list[dict[str, Any]] = field(default_factory=list)
    """Stratified and size-proportional mixtures, predicted at the target scale."""
    verdict: dict[str, Any] = field(default_factory=dict)
    """`confident`: whether the fit can pick a mixture; `reasons` when it cannot."""
    top_observed: list[dict[str, Any]] = field(default_factory=list)
    """The best observed trials at the target scale (else the largest swept one)."""
    confirmation: dict[str, Any] | None = None
    """The law's pick trained at its scale (`sweep.confirm`): predicted next to observed."""
    champion: dict[str, Any] | None = None
    """The champion decision of the sweep (`champion.ChampionDecision.to_dict()`)."""

    def add_confirmation(self, record: Mapping[str, Any]) -> None:
        """Put a confirmation run's outcome in analysis.json and at the end of summary.md."""
        self.confirmation = dict(record)
        self._rewrite_tail()

    def add_champion(self, decision: Mapping[str, Any]) -> None:
        """Put the champion decision (promoted, or "no significant winner") in the report."""
        self.champion = dict(decision)
        self._rewrite_tail()

    def _rewrite_tail(self) -> None:
        (self.out_dir / "analysis.json").write_text(json.dumps(self.to_dict(), indent=1, default=_num))
        text = self.summary_path.read_text()
        for head in TAIL_SECTIONS:
            text = text.split(f"\n{head}\n")[0]
        parts = [text.rstrip("\n")]
        if self.confirmation:
            parts.append(confirmation_markdown(self.confirmation))
        if self.champion:
            parts.append(champion_markdown(self.champion))
        self.summary_path.write_text("\n\n".join(parts))

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.md"

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "target_scale": self.target_scale, "prediction": self.prediction,
                "spearman": self.spearman, "fit_quality": self.fit_quality,
                "best_observed": self.best_observed, "plots": [p.name for p in self.plots],
                "backtest": self.backtest, "baselines": self.baselines, "verdict": self.verdict,
                "top_observed": self.top_observed, "confirmation": self.confirmation, "champion": self.champion}


def space_from_table(table: TrialTable) -> SearchSpace:
    """A search space for trial results that come without one (a CSV): every task searched."""
    return SearchSpace(tasks=table.tasks)


def analyze(table: TrialTable, out_dir: str | Path, *, space: SearchSpace | None = None,
            target_scale: str = "", model: str = "ridge", mode: str = "min", step: int | None = None,
            min_trials: int = 4, samples: int = 20000, seed: int = 0, title: str = "sweep",
            sizes: Mapping[str, int] | None = None, min_r2: float = 0.5) -> AnalysisReport:
    """Fit the law at one step, predict the best mixture at `target_scale`, write the report.

    Args:
        table: every evaluated (trial, step) of the sweep.
        space: the sweep's search space (candidates for the best mixture respect its floors and
            fixed tasks); None = the plain simplex over the table's tasks.
        step: the step to compare trials at; None = the latest step `min_trials` trials reached.
        sizes: training rows per task, for the size-proportional baseline (left out without).
        min_r2: below this held-out R² the fit is not trusted to pick a mixture.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, step = table.at_step(step, min_trials=min_trials)
    law = fit_law(rows, model=model, mode=mode, seed=seed)
    space = space or space_from_table(rows)
    target = choose_target_scale(law, target_scale)
    candidates = _candidates(space, law.tasks, samples, seed)
    prediction = law.predict_best(candidates, target)
    spearman = rank_invariance(law)
    quality = {s: {**{f"r2_loo/{m}": v for m, v in f.r2_loo.items()}, "trials": f.n} for s, f in law.fits.items()}
    observed = {s: law.best_observed(s) for s in law.fits}
    tested = backtest(law, seed=seed)
    write_trials(rows, out_dir / "trials.csv")
    plots = write_plots(law, table, out_dir)
    report = AnalysisReport(out_dir=out_dir, step=step, target_scale=target, prediction=prediction,
                            spearman=spearman, fit_quality=quality, best_observed=observed, plots=plots,
                            backtest=tested, baselines=baselines(law, space, target, sizes),
                            verdict=verdict(law, prediction, tested, min_r2),
                            top_observed=top_observed(law, target))
    (out_dir / "analysis.json").write_text(json.dumps(report.to_dict(), indent=1, default=_num))
    report.summary_path.write_text(summary_markdown(report, law, title=title, model=model, mode=mode))
    return report


INTERVAL_Z = 1.96        # a 95% interval from the held-out residuals
MIN_BACKTEST_SPEARMAN = 0.5


def verdict(law: MixtureLaw, prediction: Mapping[str, Any], tested: list[dict[str, Any]],
            min_r2: float) -> dict[str, Any]:
    """Whether the fit can pick a mixture at the prediction's scale, and if not, why.

    The law must predict held-out trials (R² >= `min_r2`) at the target scale, or at the
    largest swept one when the target is extrapolated. In range, the predicted value must
    beat the best observed trial by more than the 95% interval of the held-out residuals
    (else the "better" mixture is noise). Extrapolated, the pick rests on mixtures ranking
    alike across sizes: the leave-one-scale-out backtest must exist and show Spearman >= 0.5
    for every held-out scale (its absolute error is reported, not judged: choosing a mixture
    needs the ranking, not the level).
    """
    scale, reasons = prediction["scale"], []
    ref = scale if scale in law.fits else max(law.fits, key=scale_ordinal)
    fit = law.fits[ref]
    r2 = fit.r2_loo.get(OBJECTIVE)
    interval = gain = None
    if r2 is None or r2 != r2:
        reasons.append(f"too few trials at {ref} to measure how well the fit predicts (held-out R² needs "
                       f"at least 3)")
    elif r2 < min_r2:
        reasons.append(f"the held-out R² at {ref} is {r2:.2f}, below sweep.law_min_r2 = {min_r2:g}")
    if scale in law.fits and OBJECTIVE in fit.loo:
        y = law.table.where(scale=scale).column(OBJECTIVE)
        interval = INTERVAL_Z * float(np.sqrt(np.mean((fit.loo[OBJECTIVE] - y) ** 2)))
        best = law.best_observed(scale)["value"]
        gain = best - prediction["predicted"] if law.mode == "min" else prediction["predicted"] - best
        if gain <= interval:
            reasons.append(f"the predicted gain over the best observed trial ({gain:+.4f}) is inside the fit's "
                           f"95% interval (±{interval:.4f})")
    if scale not in law.fits and not tested:
        reasons.append(f"{scale} was not swept and no backtest across swept scales shows that mixtures rank "
                       f"alike across sizes (sweep at least two scales with 3 trials each)")
    for b in tested:
        if b["spearman"] == b["spearman"] and b["spearman"] < MIN_BACKTEST_SPEARMAN:
            reasons.append(f"mixtures do not rank alike across scales: {b['held_out']} predicted from "
                           f"{', '.join(b['trained_on'])} has Spearman {b['spearman']:.2f}")
    return {"confident": not reasons, "reasons": reasons, "r2": r2, "r2_scale": ref, "interval": interval,
            "gain": gain, "min_r2": min_r2}


def top_observed(law: MixtureLaw, scale: str, k: int = 3) -> list[dict[str, Any]]:
    """The `k` best observed trials at `scale` (the largest swept scale if none ran it)."""
    if scale not in law.fits:
        scale = max(law.fits, key=scale_ordinal)
    rows = law.table.where(scale=scale)
    y = rows.column(OBJECTIVE)
    order = [int(i) for i in np.argsort(y if law.mode == "min" else -y) if np.isfinite(y[i])][:k]
    return [{"scale": scale, "trial": rows.records[i]["trial"], "value": float(y[i]),
             "mixture": {t: float(rows.records[i].get(f"share.{t}", 0.0)) for t in law.tasks}} for i in order]


def baseline_mixture(space: SearchSpace, weights: Mapping[str, float]) -> dict[str, float]:
    """Fixed tasks keep their shares; searched tasks get their floors plus the free share split
    in proportion to `weights`."""
    total = sum(max(float(weights.get(t, 0.0)), 0.0) for t in space.tasks)
    if total <= 0:
        raise ValueError("baseline weights are all zero")
    free = max(space.free, 0.0)
    shares = {t: space.floors.get(t, 0.0) + free * max(float(weights.get(t, 0.0)), 0.0) / total
              for t in space.tasks}
    shares.update(space.fixed)
    return shares


def baselines(law: MixtureLaw, space: SearchSpace, scale: str,
              sizes: Mapping[str, int] | None) -> list[dict[str, Any]]:
    """The stratified and (given `sizes`) size-proportional mixtures, predicted by the law at
    `scale`, with the observed value of a trial that ran the same mixture there, if any."""
    named = {"stratified (equal shares)": {t: 1.0 for t in space.tasks}}
    if sizes:
        named["size-proportional (training rows)"] = {t: float(sizes.get(t, 0)) for t in space.tasks}
    out = []
    for name, weights in named.items():
        try:
            mix = baseline_mixture(space, weights)
        except ValueError:
            continue
        x = np.array([[mix.get(t, 0.0) for t in law.tasks]])
        observed = None
        if scale in law.fits:
            rows = law.table.where(scale=scale)
            near = np.abs(rows.matrix(law.tasks) - x).max(axis=1) < 1e-3
            if near.any():
                observed = float(np.nanmean(rows.column(OBJECTIVE)[near]))
        out.append({"name": name, "mixture": mix, "predicted": float(law.predict(scale, x)[0]),
                    "observed": observed})
    return out


def _candidates(space: SearchSpace, tasks: list[str], n: int, seed: int) -> np.ndarray:
    """Mixtures drawn like the sweep draws them, with columns in the law's task order."""
    drawn = sample_mixtures(space, n, seed=seed)
    cols = space.all_tasks
    return np.column_stack([drawn[:, cols.index(t)] if t in cols else np.zeros(n) for t in tasks])


def _num(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- plots ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # files only; no display on a cluster node
    import matplotlib.pyplot as plt
    return plt


def write_plots(law: MixtureLaw, table: TrialTable, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    paths = []
    rows = law.table
    scales = list(law.fits)
    colours = {s: plt.cm.viridis(i / max(len(scales) - 1, 1)) for i, s in enumerate(scales)}

    # 1. the objective against each searched task's share (a task held fixed has one share)
    x_all = rows.matrix(law.tasks)
    varied = [t for j, t in enumerate(law.tasks) if np.ptp(x_all[:, j]) > 1e-9] or law.tasks
    k = len(varied)
    cols = min(k, 4)
    nrows = (k + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False)
    for i, task in enumerate(varied):
        ax = axes[i // cols][i % cols]
        for s in scales:
            sub = rows.where(scale=s)
            ax.scatter(sub.matrix([task])[:, 0], sub.column(OBJECTIVE), s=18, color=colours[s], label=s)
        ax.set_xlabel(f"share of {task}")
        ax.set_ylabel(OBJECTIVE if i % cols == 0 else "")
    for j in range(k, nrows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7, title="scale", title_fontsize=7)
    fig.suptitle("objective vs task share")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "metric_vs_weight.png", plt))

    # 2. validation loss against scale (best and median trial per scale)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ordered = sorted(scales, key=scale_ordinal)
    xs = np.arange(len(ordered))
    for metric in [m for m in law.metrics if m.startswith("val_loss/")] or [OBJECTIVE]:
        best, median = [], []
        for s in ordered:
            y = rows.where(scale=s).column(metric)
            y = y[np.isfinite(y)]
            lower = law.mode == "min" or metric.startswith("val_loss")
            best.append(np.nan if not len(y) else (y.min() if lower else y.max()))
            median.append(np.nan if not len(y) else float(np.median(y)))
        line, = ax.plot(xs, best, marker="o", label=metric.split("/", 1)[-1])
        ax.plot(xs, median, linestyle=":", color=line.get_color())
    ax.set_xticks(xs, ordered, rotation=20)
    ax.set_xlabel("scale (vision/language)")
    ax.set_ylabel("validation loss")
    ax.set_title("per-task validation loss (solid: best trial, dotted: median)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "loss_vs_scale.png", plt))

    # 3. held-out predictions against observations
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    lo, hi = np.inf, -np.inf
    for s, fit in law.fits.items():
        if OBJECTIVE not in fit.loo:
            continue
        y = rows.where(scale=s).column(OBJECTIVE)
        p = fit.loo[OBJECTIVE]
        ax.scatter(y, p, s=18, color=colours[s],
                   label=f"{s} (R²={fit.r2_loo.get(OBJECTIVE, float('nan')):.2f})")
        lo, hi = min(lo, y.min(), p.min()), max(hi, y.max(), p.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "fewer than 3 trials per scale:\nno held-out predictions", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(f"observed {OBJECTIVE}")
    ax.set_ylabel(f"predicted {OBJECTIVE} (held out)")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "predicted_vs_observed.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the summary ---------------------------------------------------------------------------

TAIL_SECTIONS = ("## Confirmation run", "## Champion")


def champion_markdown(d: Mapping[str, Any]) -> str:
    """The champion decision in words; "no significant winner" when the alias stayed for that."""
    lines = ["## Champion", ""]
    if d.get("promoted"):
        lines.append(f"**{d.get('model_uri')}** is the new champion: {d.get('reason')}.")
    else:
        lines.append(f"The alias did not move ({d.get('model_uri') or 'nothing registered'}): {d.get('reason')}.")
    return "\n".join(lines) + "\n"


def _fmt(value: float, spec: str) -> str:
    """A number for a report table; a statistic that is not defined (nan: tied values, too few
    points) reads `undefined`."""
    return "undefined" if value != value else format(value, spec)


def confirmation_markdown(c: Mapping[str, Any]) -> str:
    mix = ", ".join(f"{t} {w:.2f}" for t, w in sorted(c["mixture"].items(), key=lambda kv: -kv[1]))
    lines = ["## Confirmation run", "",
             f"The law's pick ({mix}) trained at **{c['scale']}** for {c['step']} steps "
             f"(MLflow run {c.get('run_id') or '-'}):", "", f"| predicted {OBJECTIVE} | observed | difference |",
             "|---|---|---|"]
    if c.get("observed") is None:
        lines.append(f"| {c['predicted']:.4f} | - | the run failed: {c.get('error')} |")
    else:
        ci = c.get("observed_ci")
        seen = f"{c['observed']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
        lines.append(f"| {c['predicted']:.4f} | {seen} | {c['observed'] - c['predicted']:+.4f} |")
    return "\n".join(lines) + "\n"


def summary_markdown(report: AnalysisReport, law: MixtureLaw, *, title: str, model: str, mode: str) -> str:
    p = report.prediction
    lines = [f"# Mixture law: {title}", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} · {len(law.table.records)} trials compared at step "
             f"{report.step} · law `{model}` · objective {mode}imised", "",
             "## Predicted best mixture", ""]
    v = report.verdict
    if v and not v.get("confident", True):
        lines += ["**The fit cannot pick a mixture** at this sweep's size:", ""]
        lines += [f"- {r}" for r in v["reasons"]]
        lines += ["", "Best *observed* trials instead:", "", f"| scale | trial | {OBJECTIVE} | mixture |",
                  "|---|---|---|---|"]
        for b in report.top_observed:
            mix = ", ".join(f"{t} {w:.2f}" for t, w in sorted(b["mixture"].items(), key=lambda kv: -kv[1]))
            lines.append(f"| {b['scale']} | {b['trial']} | {b['value']:.4f} | {mix} |")
        lines += ["", f"For reference only, the law's own pick at **{p['scale']}** "
                  f"(predicted {OBJECTIVE} {p['predicted']:.4f}):", ""]
    else:
        lines += [f"At scale **{p['scale']}**{' (extrapolated: no trial ran it)' if p['extrapolated'] else ''}: "
                  f"predicted {OBJECTIVE} **{p['predicted']:.4f}** (best of {p['candidates']} sampled mixtures)"
                  + (f", {v['gain']:+.4f} beyond the best observed trial (95% interval ±{v['interval']:.4f})"
                     if v and v.get("gain") is not None and v.get("interval") is not None else "") + ".", ""]
    lines += ["| task | share |", "|---|---|"]
    lines += [f"| {t} | {v:.3f} |" for t, v in sorted(p["mixture"].items(), key=lambda kv: -kv[1])]
    if report.baselines:
        lines += ["", f"## Baselines at {p['scale']}", "", f"| mixture | predicted {OBJECTIVE} | observed | shares |",
                  "|---|---|---|---|"]
        lines.append(f"| law's pick | {p['predicted']:.4f} | - | "
                     + ", ".join(f"{t} {w:.2f}" for t, w in sorted(p["mixture"].items(), key=lambda kv: -kv[1])) + " |")
        for b in report.baselines:
            obs = "-" if b["observed"] is None else f"{b['observed']:.4f}"
            mix = ", ".join(f"{t} {w:.2f}" for t, w in sorted(b["mixture"].items(), key=lambda kv: -kv[1]))
            lines.append(f"| {b['name']} | {b['predicted']:.4f} | {obs} | {mix} |")
    lines += ["", "## Best observed trial per scale", "", f"| scale | trial | {OBJECTIVE} | mixture |", "|---|---|---|---|"]
    for s, b in report.best_observed.items():
        mix = ", ".join(f"{t} {v:.2f}" for t, v in sorted(b["mixture"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {s} | {b['trial']} | {b['value']:.4f} | {mix} |")
    lines += ["", "## Rank invariance across scales (Spearman)", ""]
    if report.spearman:
        lines += ["| scales | rho | mixtures | basis |", "|---|---|---|---|"]
        lines += [f"| {a} vs {b} | {_fmt(r['spearman'], '.3f')} | {r['n']} | {r['basis']} |"
                  for r in report.spearman for a, b in [r["scales"]]]
        notes = [f"- {' vs '.join(r['scales'])}: {r['note']}" for r in report.spearman if r.get("note")]
        lines += ["", *notes] if notes else []
        lines += ["", "`observed`: the same mixtures ran at both scales; `fitted`: both scales' laws "
                  "evaluated at every mixture the sweep ran."]
    else:
        lines.append("Only one scale was swept: nothing to correlate.")
    lines += ["", "## Backtest: each scale predicted from the others (model size as log10 parameters)", ""]
    if report.backtest:
        lines += ["| held out | fitted on | trials | RMSE | R² | Spearman | picks its best |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {b['held_out']} | {', '.join(b['trained_on'])} | {b['n']} | {b['rmse']:.4f} | {_fmt(b['r2'], '.3f')} | "
                  f"{_fmt(b['spearman'], '.3f')} | {'yes' if b['picks_best'] else 'no'} |" for b in report.backtest]
    else:
        lines.append("Needs at least two swept scales with 3 trials each: nothing to backtest.")
    lines += ["", "## Fit quality (held-out R²: leave-one-out up to 20 trials, 10-fold beyond)", "", "| scale | trials | R² objective |", "|---|---|---|"]
    for s, q in report.fit_quality.items():
        r2 = q.get(f"r2_loo/{OBJECTIVE}")
        lines.append(f"| {s} | {q['trials']} | {'n/a (< 3 trials)' if r2 is None else _fmt(r2, '.3f')} |")
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in report.plots]
    return "\n".join(lines) + "\n"


# --- a sweep read back ---------------------------------------------------------------------

def analysis_dir(sweep_dir: Location) -> Path:
    """Where the report of the sweep at `sweep_dir` is written: `<sweep_dir>/analysis` for a
    local sweep; for one on object storage a local folder in medmix's cache, which
    `publish_analysis` then copies to `<sweep_dir>/analysis` (plots and tables are written by
    libraries that want local files)."""
    return sweep_dir.local_path() / "analysis" if sweep_dir.is_local else local_dir(sweep_dir.uri, "analysis")


def publish_analysis(report: AnalysisReport, sweep_dir: Location) -> None:
    """Copy a report written under `analysis_dir` to the sweep's folder on object storage,
    summary.md last (a reader that finds it finds the whole report); nothing to do locally."""
    if not sweep_dir.is_local and report.out_dir == analysis_dir(sweep_dir):
        upload(report.out_dir, sweep_dir.join("analysis"), last=(report.summary_path.name,))


def train_rows(cfg: MedmixConfig) -> dict[str, int] | None:
    """Training rows per task in the config's shard store (the size-proportional baseline);
    None when there is no store to read."""
    from medmix.data.store import ShardStore
    try:
        counts = ShardStore(normalize(cfg.data.root)).counts()
    except Exception:  # noqa: BLE001 - a results file analysed without its data: no baseline
        return None
    return {t: int(splits.get("train", 0)) for t, splits in counts.items()}


def find_sweep_dir(cfg: MedmixConfig, sweep: str) -> Location:
    """A sweep directory (local path or URI) holding sweep.json, else the sweep named `sweep`
    under `train.storage_path`."""
    given = location(sweep)
    if given.join(SWEEP_INFO).is_file():
        return given
    return location(normalize(cfg.train.storage_path)).join(sweep)


def analyze_sweep(cfg: MedmixConfig, sweep: str, *, target_scale: str | None = None, step: int | None = None,
                  out: Path | None = None, log: bool = True):
    """`medmix sweep analyze SWEEP`: the mixture-law report of a finished (or running) sweep.

    Args:
        sweep: a sweep name (under `train.storage_path`), a sweep directory, or a trial-results
            file (.csv/.json/.jsonl). A named sweep is read from its MLflow child runs, else
            from its `trials.csv`.
        log: attach the report to the sweep's parent run (when there is one).
    """

    path = Path(sweep).expanduser()
    space, parent, mode, table, sweep_dir = None, None, cfg.sweep.direction, None, None
    if not is_uri(sweep) and path.is_file():
        table = load_trials(path)
        out = out or path.parent / "analysis"
        name = path.stem
    else:
        sweep_dir = find_sweep_dir(cfg, sweep)
        info = read_json(sweep_dir.join(SWEEP_INFO))
        name = info.get("name", sweep)
        space = SearchSpace.from_dict(info["space"]) if info.get("space") else None
        mode = info.get("mode", mode)
        parent = info.get("parent_run_id")
        if cfg.lineage.enabled:
            parent = parent or find_parent_run(cfg.lineage, name)
            if parent:
                table = trials_from_mlflow(cfg.lineage, parent)
        csv_file = sweep_dir.join(TRIALS_CSV)
        if (table is None or not table.records) and csv_file.is_file():
            with local_copy(csv_file) as local:
                table = load_trials(local)
        if table is None or not table.records:
            raise ValueError(f"no trial results for sweep {sweep!r}: no MLflow child runs with validation "
                             f"losses and no {csv_file.uri}")
        out = out or analysis_dir(sweep_dir)
    report = analyze(table, out, space=space, target_scale=cfg.sweep.target_scale if target_scale is None
                     else target_scale, model=cfg.sweep.law_model, mode=mode, step=step,
                     min_trials=cfg.sweep.law_min_trials, samples=cfg.sweep.law_samples, seed=cfg.seed,
                     title=name, sizes=train_rows(cfg), min_r2=cfg.sweep.law_min_r2)
    if sweep_dir is not None:
        publish_analysis(report, sweep_dir)
    if log and parent and cfg.lineage.enabled:
        log_artifacts(cfg.lineage, parent, report.out_dir, "analysis")
    return report
