"""A tiny multi-scale sweep end to end, in process: the `sweep_multiscale` preset cut down to two
language scales (debug, tiny) and three shared mixtures trained at both, a few steps each, on
the session's Ray and the tiny suite. Its report holds the leave-one-scale-out backtest, the
Spearman of the shared mixtures' real runs across the two scales, and a confirmation run of
the law's pick beside the prediction; every trial's per-task scores and intervals are on its
MLflow run.

medqa and pubmedqa are scored by their normalised validation loss: after two steps every
mixture's accuracy on them sits at chance, and scores that tie leave no ranking for the
Spearman to compare (the report would say so rather than print a rho). Batches are drawn in
`random` mode, so that even a small global batch follows each mixture's shares (stratified
batches of 4 hold one slot per task: every mixture would train on the same batches).
"""

from __future__ import annotations

import json
import math

import pytest

from medmix.config import load_config

pytestmark = pytest.mark.slow(minutes=2)

SHARED = 3
OVERRIDES = ['sweep.vision_scales=["debug"]', 'sweep.language_scales=["debug", "tiny"]',
             f"sweep.shared_mixtures={SHARED}", f"sweep.num_samples={2 * SHARED}", "sweep.law_min_trials=3",
             'sweep.scheduler="fifo"', "sweep.max_concurrent=3", "sweep.law_samples=200", "sweep.champion=false",
             "sweep.eval_rows=8", "sweep.bootstrap=200", "sweep.confirm=true",
             'sweep.score_by={medqa="loss", pubmedqa="loss"}',
             "train.steps=2", "train.eval_every=0", "train.log_every=2", "train.checkpoint_every=2",
             "train.warmup_steps=0", "train.eval_batches=1", "mixture.global_batch_size=8",
             'mixture.mode="random"', "stream.max_seq_len=192"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_suite, ray_local):
    from medmix.tune.sweep import run_sweep
    tmp = tmp_path_factory.mktemp("multiscale")
    cfg = load_config("sweep_multiscale", [f'data.root="{tiny_suite}"', f'train.storage_path="{tmp}/runs/checkpoints"',
                                           f'lineage.root="{tmp}/runs"', *OVERRIDES])
    return cfg, run_sweep(cfg)


def test_every_shared_mixture_trains_at_both_scales(sweep):
    cfg, result = sweep
    assert [t.status for t in result.trials] == ["complete"] * 2 * SHARED, [t.error for t in result.trials]
    by_scale: dict[str, set] = {}
    for t in result.trials:
        by_scale.setdefault(t.scale, set()).add(tuple(round(v, 6) for _, v in sorted(t.shares.items())))
    assert set(by_scale) == {"debug/debug", "debug/tiny"}
    assert by_scale["debug/debug"] == by_scale["debug/tiny"] and len(by_scale["debug/tiny"]) == SHARED
    for t in result.trials:                       # judged on per-task scores, with an interval
        lo, hi = t.objective_ci
        assert lo <= t.objective <= hi
        assert {"val_score/medqa", "val_score/cxr_classify", "val_score/mimic3_summary"} <= set(t.metrics)


def test_report_has_the_backtest_the_real_run_spearman_and_a_confirmation(sweep):
    cfg, result = sweep
    report = result.analysis
    assert report is not None, result.notes
    # leave one scale out: each scale predicted from the other
    assert {b["held_out"] for b in report.backtest} == {"debug/debug", "debug/tiny"}
    assert all(b["n"] == SHARED and b["trained_on"] == [s for s in ("debug/debug", "debug/tiny") if s != b["held_out"]]
               for b in report.backtest)
    # rank invariance measured on the shared mixtures' real runs, not on fitted laws
    (rho,) = report.spearman
    assert rho["basis"] == "observed" and rho["n"] == SHARED and -1.0 <= rho["spearman"] <= 1.0, rho
    # the law's pick trained at the largest swept scale, observed beside predicted
    c = report.confirmation
    assert c is not None and c["error"] is None and c["scale"] == "debug/tiny" == report.target_scale
    assert math.isfinite(c["predicted"]) and math.isfinite(c["observed"])
    assert c["observed_ci"][0] <= c["observed"] <= c["observed_ci"][1]
    text = report.summary_path.read_text()
    for heading in ("## Backtest: each scale predicted from the others", "## Rank invariance across scales",
                    "## Confirmation run", "## Baselines at debug/tiny"):
        assert heading in text
    assert "| debug/debug vs debug/tiny |" in text and "| observed |" in text
    saved = json.loads((report.out_dir / "analysis.json").read_text())
    assert saved["confirmation"]["observed"] == pytest.approx(c["observed"])
    # the report's baselines: stratified always, size-proportional from the store's rows
    assert [b["name"].split(" ")[0] for b in report.baselines] == ["stratified", "size-proportional"]


def test_trial_runs_carry_per_task_scores_and_intervals(sweep):
    from medmix.lineage.backend import client
    cfg, result = sweep
    mlflow = client(cfg.lineage)
    run = mlflow.get_run(result.trials[0].run_id)
    keys = set(run.data.metrics)
    for task, metric in (("medqa", "loss"), ("cxr_classify", "accuracy"), ("mimic3_summary", "loss")):
        assert {f"val_metric/{task}/{metric}", f"val_metric/{task}/{metric}/lo", f"val_metric/{task}/{metric}/hi",
                f"val_score/{task}", f"val_score/{task}/lo", f"val_score/{task}/hi"} <= keys
    assert {"val_objective", "val_objective/lo", "val_objective/hi"} <= keys
