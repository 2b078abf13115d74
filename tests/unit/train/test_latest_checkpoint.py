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


def test_a_torn_checkpoint_is_never_picked_and_named_when_asked_for(tmp_path):
    """A checkpoint whose medmix.json asks for a commit counts only with its COMMITTED file: a
    worker killed mid-upload leaves medmix.json (rank 0's) without the others' shards."""
    from medmix.train.checkpoint import COMMIT_FILE, is_committed
    run = tmp_path / "run"
    for step in (3, 6):
        (run / f"step-{step:06d}").mkdir(parents=True)
        (run / f"step-{step:06d}" / META_FILE).write_text('{"commit": true}')
    (run / "step-000003" / COMMIT_FILE).write_text("")
    assert is_committed(run / "step-000003") and not is_committed(run / "step-000006")
    assert latest_checkpoint(run) == run / "step-000003"
    with pytest.raises(FileNotFoundError, match=r"step-000006 is a torn checkpoint: its COMMITTED is missing"):
        latest_checkpoint(run / "step-000006")
    (run / "step-000006" / COMMIT_FILE).write_text("")
    assert latest_checkpoint(run) == run / "step-000006"
