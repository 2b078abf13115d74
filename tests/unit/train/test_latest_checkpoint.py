"""One answer to "which checkpoint": the directory itself, else a run's latest step, else a clear error."""

from __future__ import annotations

import pytest

from medmix.train.checkpoint import META_FILE, find_latest_checkpoint, latest_checkpoint


def test_a_run_directory_resolves_to_its_latest_checkpoint(tmp_path):
    run = tmp_path / "run"
    for step in (3, 12, 6):
        (run / f"step-{step:06d}").mkdir(parents=True)
        (run / f"step-{step:06d}" / META_FILE).write_text("{}")
    (run / "step-000020").mkdir()   # an upload that never finished: no medmix.json
    assert latest_checkpoint(run) == run / "step-000012"
    assert latest_checkpoint(run / "step-000003") == run / "step-000003"
    assert find_latest_checkpoint(run) == run / "step-000012"


def test_no_checkpoint_is_none_or_a_clear_error(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"holds no medmix checkpoint \(no step-\*/medmix.json\)"):
        latest_checkpoint(tmp_path)
