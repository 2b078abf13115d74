"""The mixture law on synthetic trial results with a known optimum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medmix.cli import main
from medmix.tune.law import (TrialTable, fit_law, load_trials, normalise_records, rank_invariance,
                             write_trials)
from medmix.tune.report import analyze
from medmix.tune.space import SearchSpace

TASKS = ["a", "b", "c"]
OPTIMUM = np.array([0.5, 0.3, 0.2])
OFFSETS = {"debug/debug": 1.0, "debug/tiny": 0.5}   # the larger scale is uniformly better


def synthetic_records(n: int = 24, seed: int = 0, same_mixtures: bool = False, noise: float = 0.0,
                      steps=(10,)) -> list[dict]:
    """Per-task loss = offset(scale) + 1 + 2 |w - w*|^2 + 0.1 j: quadratic, minimised at w*."""
    rng = np.random.default_rng(seed)
    shared = rng.dirichlet(np.ones(3), size=n)
    records = []
    for scale, offset in OFFSETS.items():
        mixtures = shared if same_mixtures else rng.dirichlet(np.ones(3), size=n)
        for i, w in enumerate(mixtures):
            for step in steps:
                r = {"trial": f"{scale}-{i}", "step": step, "scale": scale}
                r.update({f"share.{t}": float(v) for t, v in zip(TASKS, w)})
                for j, t in enumerate(TASKS):
                    later = 0.0 if step == max(steps) else 1.0
                    r[f"val_loss/{t}"] = (offset + 1 + later + 2 * float(np.sum((w - OPTIMUM) ** 2)) + 0.1 * j
                                          + noise * rng.normal())
                records.append(r)
    return records


def test_law_recovers_the_known_optimum_and_rank_invariance():
    table = TrialTable(normalise_records(synthetic_records(same_mixtures=True)))
    law = fit_law(table)
    for fit in law.fits.values():
        assert fit.r2_loo["objective"] > 0.99
    (pair,) = rank_invariance(law)
    assert pair["basis"] == "observed" and pair["n"] == 24
    assert pair["spearman"] == pytest.approx(1.0)
    candidates = np.random.default_rng(1).dirichlet(np.ones(3), size=20000)
    best = law.predict_best(candidates, "debug/tiny")
    assert np.abs(np.array([best["mixture"][t] for t in TASKS]) - OPTIMUM).max() < 0.03
    assert best["predicted"] == pytest.approx(0.5 + 1 + 0.1, abs=0.01)
    assert not best["extrapolated"]


def test_law_extrapolates_to_an_unswept_scale():
    law = fit_law(TrialTable(normalise_records(synthetic_records())))
    (pair,) = rank_invariance(law)
    assert pair["basis"] == "fitted" and pair["spearman"] > 0.99
    candidates = np.random.default_rng(2).dirichlet(np.ones(3), size=20000)
    best = law.predict_best(candidates, "debug/small")   # one rung above debug/tiny
    assert best["extrapolated"]
    assert np.abs(np.array([best["mixture"][t] for t in TASKS]) - OPTIMUM).max() < 0.03
    assert best["predicted"] == pytest.approx(0.0 + 1 + 0.1, abs=0.05)   # offsets fall 0.5 per rung


def test_gbm_law_finds_the_optimum_region_with_noise():
    law = fit_law(TrialTable(normalise_records(synthetic_records(n=80, noise=0.01))), model="gbm")
    candidates = np.random.default_rng(3).dirichlet(np.ones(3), size=5000)
    best = law.predict_best(candidates, "debug/debug")
    assert np.abs(np.array([best["mixture"][t] for t in TASKS]) - OPTIMUM).max() < 0.15


def test_trials_are_compared_at_the_latest_step_enough_trials_reached():
    records = synthetic_records(n=6, steps=(4, 8))
    records = [r for r in records if not (r["step"] == 8 and r["trial"].endswith(("-3", "-4", "-5")))]
    table = TrialTable(normalise_records(records))
    rows, step = table.at_step(min_trials=8)
    assert step == 4 and len(rows.records) == 12
    rows, step = table.at_step(min_trials=6)
    assert step == 8 and len(rows.records) == 6


def test_records_need_shares_and_a_metric(tmp_path):
    with pytest.raises(ValueError, match="share"):
        normalise_records([{"trial": "t", "step": 1, "scale": "debug/debug", "val_loss": 1.0}])
    with pytest.raises(ValueError, match="objective"):
        normalise_records([{"trial": "t", "step": 1, "scale": "debug/debug", "share.a": 1.0}])
    with pytest.raises(ValueError, match="vision/language"):
        normalise_records([{"trial": "t", "step": 1, "scale": "huge", "share.a": 1.0, "val_loss": 1}])
    rec = normalise_records([{"trial": 1, "step": "3", "scale": "debug/debug", "share.a": 1.0,
                              "val_loss/a": 1.0, "val_loss/b": 3.0}])[0]
    assert rec["objective"] == 2.0 and rec["trial"] == "1" and rec["step"] == 3


def test_csv_json_and_jsonl_round_trip(tmp_path):
    table = TrialTable(normalise_records(synthetic_records(n=3)))
    back = load_trials(write_trials(table, tmp_path / "t.csv"))
    assert len(back.records) == len(table.records)
    assert back.records[0]["val_loss/a"] == pytest.approx(table.records[0]["val_loss/a"])
    (tmp_path / "t.json").write_text(json.dumps({"trials": table.records}))
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in table.records))
    assert load_trials(tmp_path / "t.json").tasks == load_trials(tmp_path / "t.jsonl").tasks == TASKS


def test_analyze_writes_plots_summary_and_prediction(tmp_path):
    table = TrialTable(normalise_records(synthetic_records(same_mixtures=True)))
    space = SearchSpace(tasks=TASKS)
    report = analyze(table, tmp_path / "analysis", space=space, samples=20000)
    for name in ("metric_vs_weight.png", "loss_vs_scale.png", "predicted_vs_observed.png"):
        png = tmp_path / "analysis" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert report.target_scale == "debug/tiny"
    mixture = np.array([report.prediction["mixture"][t] for t in TASKS])
    assert np.abs(mixture - OPTIMUM).max() < 0.03
    text = report.summary_path.read_text()
    assert "Predicted best mixture" in text and "| debug/debug vs debug/tiny | 1.000 |" in text
    saved = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert saved["spearman"][0]["spearman"] == pytest.approx(1.0)


def test_cli_analyze_on_a_results_file(tmp_path, capsys):
    path = write_trials(TrialTable(normalise_records(synthetic_records(same_mixtures=True))),
                        tmp_path / "trials.csv")
    rc = main(["sweep", "analyze", str(path), "--target-scale", "debug/small", "--out", str(tmp_path / "out"),
               "--set", f'lineage.root="{tmp_path}/runs"'])
    assert rc == 0
    out = capsys.readouterr().out
    assert "At scale **debug/small** (extrapolated" in out
    assert (tmp_path / "out" / "loss_vs_scale.png").is_file()
