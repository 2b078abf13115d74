"""The sweep driver's pure parts: objective, concurrency, best trial, config and presets."""

from __future__ import annotations

import pytest

from medmix.config import ConfigError, load_config
from medmix.tune.layout import objective_value
from medmix.tune.sweep import TrialSummary, best_trial, trial_concurrency


def test_objective_is_val_loss_or_a_weighted_mean():
    report = {"val_loss": 2.0, "val_loss/medqa": 1.0, "val_loss/cxr_classify": 4.0, "loss": 9.0}
    assert objective_value(report, {}) == 2.0
    assert objective_value(report, {"val_loss/medqa": 3, "val_loss/cxr_classify": 1}) == pytest.approx(1.75)
    assert objective_value({"loss": 1.0, "step": 4}, {}) is None          # a training-only report
    assert objective_value(report, {"val_loss/derm_pad": 1}) is None


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
    with pytest.raises(ConfigError, match="objective.val_loss"):
        load_config("debug", ["sweep.objective={val_loss=0}"])


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
