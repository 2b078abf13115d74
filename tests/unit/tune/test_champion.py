"""The champion alias moves only to a version that wins on the same evaluation set (real MLflow):
by its value for the loss objective, beyond both confidence intervals for a scored one."""

from __future__ import annotations

import pytest

from medmix.config import load_config
from medmix.lineage.registry import get_version, register_export
from medmix.lineage.tracker import build_tracker
from medmix.tune import champion
from medmix.tune.champion import decide_and_promote, objective_tags
from medmix.tune.report import champion_markdown


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(champion, "_evaluator", lambda: None)   # compare the recorded objectives
    return load_config("debug", [f'lineage.root="{tmp_path}/runs"', 'sweep.objective="loss"'])


@pytest.fixture
def scored(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_config("debug", [f'lineage.root="{tmp_path}/runs"'])      # objective = mean_normalised


def register(cfg, tmp_path, value: float, fingerprint: str, ci=None) -> str:
    tracker = build_tracker(cfg.lineage)
    tracker.start_run("trial")
    export = tmp_path / f"export-{value}-{fingerprint}-{ci}"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"weights")
    version = register_export(cfg.lineage, export, tracker.run_id, tags=objective_tags(cfg, value, fingerprint, ci))
    tracker.end_run()
    return version, export


def test_alias_moves_only_to_a_better_version_on_the_same_evaluation_set(cfg, tmp_path):
    v1, e1 = register(cfg, tmp_path, 5.0, "set-a")
    first = decide_and_promote(cfg, v1, 5.0, "set-a", e1)
    assert first.promoted and first.reason == "no medmix@champion yet"
    assert get_version(cfg.lineage, "medmix", "champion").version == v1

    v2, e2 = register(cfg, tmp_path, 5.5, "set-a")
    worse = decide_and_promote(cfg, v2, 5.5, "set-a", e2)
    assert not worse.promoted and worse.incumbent == 5.0 and "does not beat" in worse.reason
    assert get_version(cfg.lineage, "medmix", "champion").version == v1

    v3, e3 = register(cfg, tmp_path, 1.0, "set-b")
    other_set = decide_and_promote(cfg, v3, 1.0, "set-b", e3)
    assert not other_set.promoted and "another evaluation set" in other_set.reason
    assert get_version(cfg.lineage, "medmix", "champion").version == v1

    v4, e4 = register(cfg, tmp_path, 4.0, "set-a")
    better = decide_and_promote(cfg, v4, 4.0, "set-a", e4)
    assert better.promoted and better.incumbent_version == v1 and "beats" in better.reason
    assert get_version(cfg.lineage, "medmix", "champion").version == v4

    again = decide_and_promote(cfg, v4, 4.0, "set-a", e4)
    assert not again.promoted and "already is" in again.reason


def test_an_evaluator_decides_when_there_is_one(cfg, tmp_path, monkeypatch):
    v1, e1 = register(cfg, tmp_path, 5.0, "set-a")
    decide_and_promote(cfg, v1, 5.0, "set-a", e1)
    v2, e2 = register(cfg, tmp_path, 9.0, "set-z")      # worse recorded loss, other eval set
    scores = {str(e2): {"val_loss": 1.0}}                 # ... but the evaluator prefers it

    def evaluate_export(export_dir, cfg, split):
        assert split == "val"
        return scores.get(str(export_dir), {"val_loss": 2.0})

    monkeypatch.setattr(champion, "_evaluator", lambda: evaluate_export)
    decision = decide_and_promote(cfg, v2, 9.0, "set-z", e2)
    assert decision.basis == "evaluate_export" and decision.promoted
    assert (decision.candidate, decision.incumbent) == (1.0, 2.0)
    assert get_version(cfg.lineage, "medmix", "champion").version == v2


def test_a_scored_champion_moves_only_beyond_both_intervals(scored, tmp_path):
    v1, e1 = register(scored, tmp_path, 0.40, "set-a", (0.30, 0.50))
    assert decide_and_promote(scored, v1, 0.40, "set-a", e1, candidate_ci=(0.30, 0.50)).promoted

    # better on its face, but the intervals overlap: no significant winner, the alias stays
    v2, e2 = register(scored, tmp_path, 0.48, "set-a", (0.41, 0.56))
    tie = decide_and_promote(scored, v2, 0.48, "set-a", e2, candidate_ci=(0.41, 0.56))
    assert not tie.promoted and tie.reason.startswith("no significant winner")
    assert tie.incumbent == 0.40 and tie.incumbent_ci == (0.30, 0.50) and tie.candidate_ci == (0.41, 0.56)
    assert get_version(scored.lineage, "medmix", "champion").version == v1
    text = champion_markdown(tie.to_dict())                       # what the sweep's report says
    assert "The alias did not move" in text and "no significant winner" in text and f"medmix/{v1}" in text

    # a worse one is no winner either
    v3, e3 = register(scored, tmp_path, 0.20, "set-a", (0.10, 0.25))
    worse = decide_and_promote(scored, v3, 0.20, "set-a", e3, candidate_ci=(0.10, 0.25))
    assert not worse.promoted and "no significant winner" in worse.reason

    # beyond both intervals on the same evaluation set: it moves
    v4, e4 = register(scored, tmp_path, 0.70, "set-a", (0.60, 0.80))
    win = decide_and_promote(scored, v4, 0.70, "set-a", e4, candidate_ci=(0.60, 0.80))
    assert win.promoted and "beyond both 95% intervals" in win.reason and win.incumbent_version == v1
    assert get_version(scored.lineage, "medmix", "champion").version == v4

    # far better, but measured on another evaluation set: not comparable
    v5, e5 = register(scored, tmp_path, 0.95, "set-b", (0.90, 0.99))
    other = decide_and_promote(scored, v5, 0.95, "set-b", e5, candidate_ci=(0.90, 0.99))
    assert not other.promoted and "another evaluation set" in other.reason
    # and a candidate without an interval cannot be shown to win
    blind = decide_and_promote(scored, v3, 0.99, "set-a", e3)
    assert not blind.promoted and blind.reason.startswith("no significant winner")
    assert get_version(scored.lineage, "medmix", "champion").version == v4
