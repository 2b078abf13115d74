"""The champion alias moves only to a version that wins on the same evaluation set (real MLflow)."""

from __future__ import annotations

import pytest

from medmix.config import load_config
from medmix.lineage.registry import get_version, register_export
from medmix.lineage.tracker import build_tracker
from medmix.tune import champion
from medmix.tune.champion import decide_and_promote, objective_tags


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(champion, "_evaluator", lambda: None)   # compare the recorded objectives
    return load_config("debug", [f'lineage.root="{tmp_path}/runs"'])


def register(cfg, tmp_path, value: float, fingerprint: str) -> str:
    tracker = build_tracker(cfg.lineage)
    tracker.start_run("trial")
    export = tmp_path / f"export-{value}-{fingerprint}"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"weights")
    version = register_export(cfg.lineage, export, tracker.run_id, tags=objective_tags(cfg, value, fingerprint))
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
