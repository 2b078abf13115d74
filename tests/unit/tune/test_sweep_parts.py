"""The sweep driver's pure parts: objective, concurrency, best trial, config and presets."""

from __future__ import annotations

import pytest

from medmix.config import ConfigError, load_config
from medmix.tune.layout import objective_interval, objective_spec, objective_value
from medmix.tune.sweep import TrialSummary, best_trial, trial_concurrency


def test_loss_objective_is_val_loss_or_a_weighted_mean():
    report = {"val_loss": 2.0, "val_loss/medqa": 1.0, "val_loss/cxr_classify": 4.0, "loss": 9.0}
    loss = {"kind": "loss", "metrics": {}}
    assert objective_value(report, loss) == 2.0
    weighted = {"kind": "loss", "metrics": {"val_loss/medqa": 3, "val_loss/cxr_classify": 1}}
    assert objective_value(report, weighted) == pytest.approx(1.75)
    assert objective_value({"loss": 1.0, "step": 4}, loss) is None          # a training-only report
    assert objective_value(report, {"kind": "loss", "metrics": {"val_loss/derm_pad": 1}}) is None
    # what sweeps recorded before scored objectives: the metric weights themselves
    assert objective_value(report, {"val_loss/medqa": 3, "val_loss/cxr_classify": 1}) == pytest.approx(1.75)
    assert objective_value(report, {}) == 2.0


def test_scored_objective_is_the_trials_aggregate_with_its_interval():
    spec = objective_spec(load_config("debug").sweep)
    assert spec == {"kind": "mean_normalised", "metrics": {}}
    report = {"val_loss": 2.0, "val_objective": 0.4, "val_objective/lo": 0.3, "val_objective/hi": 0.5}
    assert objective_value(report, spec) == 0.4
    assert objective_interval(report, spec) == (0.3, 0.5)
    assert objective_value({"val_loss": 2.0}, spec) is None                 # no scores in this report
    assert objective_interval(report, {"kind": "loss", "metrics": {}}) is None


def test_objective_direction_follows_the_objective():
    assert load_config("debug").sweep.direction == "max"
    assert load_config("debug", ['sweep.objective="loss"']).sweep.direction == "min"
    assert load_config("debug", ['sweep.objective="worst_task"', 'sweep.mode="max"']).sweep.direction == "max"
    with pytest.raises(ConfigError, match="sweep.*mode = 'min' with objective = 'mean_normalised'"):
        load_config("debug", ['sweep.mode="min"'])
    with pytest.raises(ConfigError, match="sweep.*weighted.*task_weights"):
        load_config("debug", ['sweep.objective="weighted"'])
    with pytest.raises(ConfigError, match="task_metric.mimic3_summary = 'rougeL'"):
        load_config("debug", ['sweep.task_metric={mimic3_summary="rougeL"}'])
    with pytest.raises(ConfigError, match="sweep.objective = 'median' is not one of"):
        load_config("debug", ['sweep.objective="median"'])
    with pytest.raises(ConfigError, match="sweep.objective now names the aggregate.*objective_metrics"):
        load_config("debug", ["sweep.objective={val_loss=1}"])


def test_concurrency_follows_the_cluster():
    kw = dict(cpus_per_trial=2.0, gpus_per_trial=0, num_samples=8)
    assert trial_concurrency({"CPU": 4}, **kw) == 2
    assert trial_concurrency({"CPU": 64}, **kw) == 8                 # never more than the trials
    assert trial_concurrency({"CPU": 64}, **kw, cap=3) == 3
    assert trial_concurrency({"CPU": 1}, **kw) == 1                  # at least one
    assert trial_concurrency({"CPU": 64, "GPU": 8}, cpus_per_trial=3, gpus_per_trial=2, num_samples=8) == 4


def _trial(tid, status, objective, step=12):
    return TrialSummary(trial_id=tid, params={}, shares={}, scale="debug/debug", lr=1e-3, status=status,
                        step=step, objective=objective, metrics={}, checkpoint=f"/ckpt/{tid}", run_id=tid,
                        run_dir="", trial_steps=step)


def test_best_trial_is_the_best_complete_one():
    trials = [_trial("a", "complete", 2.0), _trial("b", "stopped", 1.0, step=4), _trial("c", "complete", 1.5),
              _trial("d", "error", 0.5)]
    assert best_trial(trials, "min").trial_id == "c"
    assert best_trial(trials, "max").trial_id == "a"
    assert best_trial([_trial("b", "stopped", 1.0, step=4)], "min") is None


def test_sweep_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="sweep.*fixed shares sum"):
        load_config("debug", ["sweep.fixed={medqa=0.6, pubmedqa=0.5}"])
    with pytest.raises(ConfigError, match="sweep.vision_scales"):
        load_config("debug", ['sweep.vision_scales=["enormous"]'])
    with pytest.raises(ConfigError, match="target_scale"):
        load_config("debug", ['sweep.target_scale="tiny"'])
    with pytest.raises(ConfigError, match="objective_metrics.val_loss"):
        load_config("debug", ["sweep.objective_metrics={val_loss=0}"])


def test_asha_needs_validation_results_at_known_steps():
    from medmix.tune.sweep import check_train_config
    check_train_config(load_config("sweep_debug"))
    with pytest.raises(ConfigError, match="eval_every = 0"):
        check_train_config(load_config("sweep_debug", ["train.eval_every=0"]))
    # every report carries its step, so validation need not fall on a logging step
    check_train_config(load_config("sweep_debug", ["train.eval_every=6"]))
    check_train_config(load_config("sweep_debug", ["train.eval_every=0", 'sweep.scheduler="fifo"']))


def test_sweep_debug_preset_resolves():
    cfg = load_config("sweep_debug")
    assert cfg.name == "sweep_debug" and cfg.sweep.num_samples == 4
    assert cfg.model.scale == "debug"                                  # inherited from debug
    assert cfg.train.num_workers == 1 and cfg.train.eval_every % cfg.train.log_every == 0
    assert set(cfg.sweep.tasks).isdisjoint(cfg.sweep.fixed)


def test_job_entry_point_is_the_sweep_verb():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, str(root / "jobs" / "sweep.py"), "--preset", "sweep_debug", "--dry-run"],
                         capture_output=True, text=True, check=True, cwd=root).stdout
    assert 'name = "sweep_debug"' in out and "[sweep]" in out and "num_samples = 4" in out


def test_sweep_multiscale_preset_shares_mixtures_across_four_scales_and_confirms():
    from medmix.tune.space import build_space, shared_points
    from medmix.tune.sweep import check_shared
    cfg = load_config("sweep_multiscale")
    space = build_space(cfg.sweep, ["medqa", "pubmedqa", "cxr_classify", "mimic3_summary"])
    check_shared(cfg, space)
    assert len(shared_points(space, cfg.sweep.shared_mixtures)) == 12 <= cfg.sweep.num_samples
    assert cfg.sweep.confirm and cfg.sweep.vision_scales == cfg.sweep.language_scales == ["debug", "tiny"]


def test_a_confirmation_lands_beside_the_prediction_in_the_report(tmp_path):
    import json

    import numpy as np

    from medmix.tune.law import TrialTable, normalise_records
    from medmix.tune.report import analyze
    rng = np.random.default_rng(0)
    records = []
    for i, w in enumerate(rng.dirichlet(np.ones(2), size=8)):
        records.append({"trial": f"t{i}", "step": 4, "scale": "debug/debug", "share.a": w[0], "share.b": w[1],
                        "val_loss": 1 + (w[0] - 0.7) ** 2})
    report = analyze(TrialTable(normalise_records(records)), tmp_path / "analysis", samples=500)
    report.add_confirmation({"scale": "debug/debug", "step": 4, "mixture": report.prediction["mixture"],
                             "predicted": report.prediction["predicted"], "observed": 1.0123, "run_id": "r1",
                             "checkpoint": "x", "error": None})
    report.add_confirmation({**report.confirmation, "observed": 1.0042})   # rewritten, not appended twice
    text = report.summary_path.read_text()
    assert text.count("## Confirmation run") == 1 and "| 1.0042 |" in text and "## Plots" in text
    saved = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert saved["confirmation"]["observed"] == 1.0042 and saved["confirmation"]["run_id"] == "r1"
