"""The mixture law on synthetic trial results with a known optimum and a known size law."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medmix.cli import main
from medmix.tune.law import (TrialTable, backtest, fit_law, load_trials, normalise_records, rank_invariance,
                             scale_params, scale_size, write_trials)
from medmix.tune.report import analyze
from medmix.tune.space import SearchSpace

TASKS = ["a", "b", "c"]
OPTIMUM = np.array([0.5, 0.3, 0.2])
# A planted size law: every task's loss falls 0.4 per decade of parameters, the same at every mixture
SCALES_SWEPT = ("debug/debug", "debug/tiny")
OFFSETS = {s: 3.0 - 0.4 * scale_size(s) for s in SCALES_SWEPT}


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
    assert best["predicted"] == pytest.approx(OFFSETS["debug/tiny"] + 1 + 0.1, abs=0.01)
    assert not best["extrapolated"]


def test_model_size_counts_the_tower_and_the_decoder_without_embeddings():
    sizes = [scale_params(f"{s}/{s}") for s in ("debug", "tiny", "small", "base", "large")]
    assert sizes == sorted(sizes) and sizes[0] < 1e6 and 1e9 < sizes[3] < 1.2e9 and 7e9 < sizes[4] < 7.5e9
    assert scale_params("tiny/debug") > scale_params("debug/debug")   # the tower counts (ViT-Ti ~5.5M)
    assert scale_params("tiny/debug") - scale_params("debug/debug") == pytest.approx(5.5e6, rel=0.05)


def test_law_recovers_a_planted_size_dependence_at_an_unswept_scale():
    law = fit_law(TrialTable(normalise_records(synthetic_records())))
    (pair,) = rank_invariance(law)
    assert pair["basis"] == "fitted" and pair["spearman"] > 0.99
    candidates = np.random.default_rng(2).dirichlet(np.ones(3), size=20000)
    best = law.predict_best(candidates, "debug/small")   # a decoder ~10x larger than any swept
    assert best["extrapolated"]
    assert np.abs(np.array([best["mixture"][t] for t in TASKS]) - OPTIMUM).max() < 0.03
    # the planted law in log10(parameters), extrapolated a decade beyond the swept sizes
    assert best["predicted"] == pytest.approx(3.0 - 0.4 * scale_size("debug/small") + 1 + 0.1, abs=0.02)


def flipped_records(n: int = 16, seed: int = 0) -> list[dict]:
    """Three scales; the two small ones share an optimum, the largest prefers the opposite corner."""
    rng = np.random.default_rng(seed)
    other = np.array([0.1, 0.2, 0.7])
    records = []
    for scale, optimum in (("debug/debug", OPTIMUM), ("debug/tiny", OPTIMUM), ("tiny/tiny", other)):
        for i, w in enumerate(rng.dirichlet(np.ones(3), size=n)):
            r = {"trial": f"{scale}-{i}", "step": 10, "scale": scale,
                 **{f"share.{t}": float(v) for t, v in zip(TASKS, w)}}
            r["val_loss"] = 3.0 - 0.4 * scale_size(scale) + 2 * float(np.sum((w - optimum) ** 2))
            records.append(r)
    return records


def test_backtest_flags_mixtures_that_rank_differently_across_scales(tmp_path):
    law = fit_law(TrialTable(normalise_records(flipped_records())))
    tested = {b["held_out"]: b for b in backtest(law)}
    assert set(tested) == {"debug/debug", "debug/tiny", "tiny/tiny"}
    assert tested["tiny/tiny"]["spearman"] < 0.3 and not tested["tiny/tiny"]["picks_best"]
    assert tested["tiny/tiny"]["trained_on"] == ["debug/debug", "debug/tiny"]
    report = analyze(TrialTable(normalise_records(flipped_records())), tmp_path / "a", target_scale="base/base",
                     samples=2000)
    assert not report.verdict["confident"]
    assert any("do not rank alike" in r and "tiny/tiny" in r for r in report.verdict["reasons"])
    assert "**The fit cannot pick a mixture**" in report.summary_path.read_text()


def test_backtest_of_an_invariant_sweep_ranks_every_held_out_scale_right():
    records = synthetic_records(n=16) + [
        {**r, "trial": "t" + r["trial"], "scale": "tiny/tiny",
         "val_loss/a": r["val_loss/a"] - OFFSETS["debug/tiny"] + 3.0 - 0.4 * scale_size("tiny/tiny")}
        for r in synthetic_records(n=16, seed=5) if r["scale"] == "debug/tiny"]
    law = fit_law(TrialTable(normalise_records(records)), metrics=["val_loss/a"])
    for b in backtest(law, metric="val_loss/a"):
        assert b["spearman"] > 0.95 and b["picks_best"], b
    held = {b["held_out"]: b for b in backtest(law, metric="val_loss/a")}
    assert held["debug/tiny"]["rmse"] < 0.05   # between two swept sizes: the planted size law interpolates


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
    assert report.verdict["confident"], report.verdict
    assert "At scale **debug/tiny**: predicted objective" in text and "beyond the best observed trial" in text
    assert "| stratified (equal shares) |" in text and "size-proportional" not in text
    saved = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert saved["spearman"][0]["spearman"] == pytest.approx(1.0)
    assert saved["verdict"]["confident"] and len(saved["backtest"]) == 2


def test_report_on_few_noisy_trials_shows_the_best_observed_instead_of_a_pick(tmp_path):
    table = TrialTable(normalise_records(synthetic_records(n=5, noise=0.5, seed=3)))
    report = analyze(table, tmp_path / "analysis", space=SearchSpace(tasks=TASKS), samples=2000,
                     sizes={"a": 100, "b": 300, "c": 600})
    text = report.summary_path.read_text()
    assert not report.verdict["confident"]
    assert "**The fit cannot pick a mixture**" in text and "Best *observed* trials instead" in text
    assert any("R² at debug/tiny" in r or "95% interval" in r for r in report.verdict["reasons"])
    assert [b["trial"] for b in report.top_observed][0] == report.best_observed["debug/tiny"]["trial"]
    proportional = next(b for b in report.baselines if b["name"].startswith("size-proportional"))
    assert proportional["mixture"] == pytest.approx({"a": 0.1, "b": 0.3, "c": 0.6})
    assert "| size-proportional (training rows) |" in text


def test_cli_analyze_on_a_results_file(tmp_path, capsys):
    path = write_trials(TrialTable(normalise_records(synthetic_records(same_mixtures=True))),
                        tmp_path / "trials.csv")
    rc = main(["sweep", "analyze", str(path), "--target-scale", "debug/small", "--out", str(tmp_path / "out"),
               "--set", f'lineage.root="{tmp_path}/runs"'])
    assert rc == 0
    out = capsys.readouterr().out
    assert "At scale **debug/small** (extrapolated" in out
    assert (tmp_path / "out" / "loss_vs_scale.png").is_file()


def test_rank_invariance_says_why_there_is_no_rho_when_a_scale_ties(tmp_path):
    """Short trials can score every shared mixture the same (coarse metrics): Spearman is then
    undefined, and the report says so and why instead of printing nan."""
    records = synthetic_records(n=6, same_mixtures=True)
    for r in records:
        if r["scale"] == "debug/tiny":
            for t in TASKS:
                r[f"val_loss/{t}"] = 2.0
    table = TrialTable(normalise_records(records))
    (pair,) = rank_invariance(fit_law(table))
    assert pair["basis"] == "observed" and pair["n"] == 6 and pair["spearman"] != pair["spearman"]
    assert "same objective at debug/tiny" in pair["note"]
    report = analyze(table, tmp_path / "out", min_trials=3)
    text = report.summary_path.read_text()
    assert "| debug/debug vs debug/tiny | undefined | 6 | observed |" in text
    assert "no ranking to compare" in text and " nan " not in text and "| nan" not in text
