"""`medmix sweep`: sweep mixture ratios and model scales; `medmix sweep analyze`: the mixture law."""

from __future__ import annotations

import argparse
from pathlib import Path

from medmix.cli import add_config_args, resolve_config


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep", help="sweep task-mixture ratios and model scales (Ray Tune + Optuna + ASHA)",
        description="Run one Ray Train run per trial over task-mixture shares on the simplex, vision and "
                    "language scales and the learning rate ([sweep] config), with Optuna proposing and ASHA "
                    "stopping weak trials on the validation objective. MLflow gets one parent run per "
                    "sweep and a child run per trial; the best trial is exported, registered, and becomes "
                    "the champion only if it beats the current one. Re-running the same --set name=... "
                    "resumes the sweep. `medmix sweep analyze NAME` fits the mixture law.")
    add_config_args(p)
    p.set_defaults(func=run)
    verbs = p.add_subparsers(dest="sweep_verb", metavar="[analyze]")
    a = verbs.add_parser(
        "analyze", help="fit mixture -> loss per scale, rank invariance, predicted best mixture, plots",
        description="Fit a regression from mixture shares to validation loss at each scale (RegMix-style), "
                    "report the Spearman rank correlation of mixtures across scales, predict the best "
                    "mixture at a target scale, and write PNG plots and summary.md. SWEEP is a sweep name "
                    "(read from its MLflow child runs, else its trials.csv), a sweep directory, or a "
                    ".csv/.json/.jsonl file of trial results (columns trial, step, scale, share.<task>, "
                    "objective or val_loss[/<task>]).")
    a.add_argument("sweep", metavar="SWEEP", help="sweep name, sweep directory, or trial-results file")
    a.add_argument("--target-scale", default=None, metavar="VISION/LANGUAGE",
                   help="scale to predict the best mixture at (default: sweep.target_scale, else the largest swept)")
    a.add_argument("--step", type=int, default=None,
                   help="compare trials at this step (default: the latest step sweep.law_min_trials trials reached)")
    a.add_argument("--out", default=None, metavar="DIR", help="output directory (default: <sweep dir>/analysis)")
    a.add_argument("--no-log", action="store_true", help="do not attach the report to the sweep's parent run")
    add_config_args(a)
    a.set_defaults(func=run_analyze)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    from medmix.tune.sweep import run_sweep
    result = run_sweep(cfg)
    print(summary(cfg, result))
    return 0 if result.best is not None else 1


def summary(cfg, result) -> str:
    lines = [f"sweep {result.name}: {len(result.trials)} trials "
             f"({', '.join(f'{n} {s}' for s, n in _counts(result).items() if n)})"
             f"{' — resumed' if result.resumed else ''}, {result.trial_steps} trial-steps, "
             f"{result.seconds:.0f} s, {result.concurrency} at a time",
             f"  {'trial':<14} {'status':<9} {'step':>5} {'objective':>10}  scale         mixture"]
    for t in sorted(result.trials, key=lambda t: (t.objective is None, t.objective or 0)):
        mix = " ".join(f"{k}={v:.2f}" for k, v in sorted(t.shares.items(), key=lambda kv: -kv[1]))
        obj = f"{t.objective:.4f}" if t.objective is not None else "-"
        lines.append(f"  {t.trial_id:<14} {t.status:<9} {t.step:>5} {obj:>10}  {t.scale:<13} {mix}")
    if result.best is not None:
        lines.append(f"  best: {result.best.trial_id} (MLflow run {result.best.run_id}), "
                     f"checkpoint {result.best.checkpoint}")
    c = result.champion
    if c is not None:
        lines.append(f"  champion: {c.model_uri or 'not registered'} — "
                     f"{'now ' + cfg.lineage.registered_model + '@' + cfg.sweep.champion_alias if c.promoted else 'alias unchanged'}"
                     f" ({c.reason})")
    if result.analysis is not None:
        p, verdict = result.analysis.prediction, result.analysis.verdict
        if verdict.get("confident", True):
            lines.append(f"  law: best mixture at {p['scale']}: "
                         + " ".join(f"{k}={v:.2f}" for k, v in sorted(p["mixture"].items(), key=lambda kv: -kv[1]))
                         + f" (predicted {p['predicted']:.4f}); report {result.analysis.summary_path}")
        else:
            lines.append(f"  law: cannot pick a mixture ({verdict['reasons'][0]}); the best observed trials are "
                         f"in {result.analysis.summary_path}")
        c = result.analysis.confirmation
        if c:
            seen = f"{c['observed']:.4f}" if c.get("observed") is not None else f"failed ({c.get('error')})"
            lines.append(f"  confirmation at {c['scale']}, {c['step']} steps: predicted {c['predicted']:.4f}, "
                         f"observed {seen}")
    lines += [f"  note: {n}" for n in result.notes]
    lines.append(f"  MLflow parent run: {result.parent_run_id}  (browse: mlflow ui --backend-store-uri "
                 f"sqlite:///{cfg.lineage.root}/mlflow.db)")
    return "\n".join(lines)


def _counts(result) -> dict[str, int]:
    out = {"complete": 0, "stopped": 0, "error": 0}
    for t in result.trials:
        out[t.status] = out.get(t.status, 0) + 1
    return out


def run_analyze(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    from medmix.tune.report import analyze_sweep
    report = analyze_sweep(cfg, args.sweep, target_scale=args.target_scale, step=args.step,
                           out=Path(args.out) if args.out else None, log=not args.no_log)
    print(report.summary_path.read_text())
    print(f"report: {report.summary_path}")
    return 0
