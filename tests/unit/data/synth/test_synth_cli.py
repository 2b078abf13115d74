"""`medmix synth`: builds into --root (or data.root), prints rows per task and the store."""

from __future__ import annotations

import pytest

from medmix.cli import main
from medmix.config import load_config
from medmix.data.store import ShardStore

TASKS = '["medqa", "cxr_classify", "derm_pad"]'


def test_synth_verb_builds_and_reports(tmp_path, capsys):
    root = tmp_path / "store"
    rc = main(["synth", "--size", "tiny", "--seed", "3", "--root", str(root), "--no-progress",
               "--set", f"synth.tasks={TASKS}"])
    out = capsys.readouterr().out
    assert rc == 0
    assert ShardStore(root).counts() == {t: {"train": 6, "val": 3, "test": 3}
                                         for t in ("medqa", "cxr_classify", "derm_pad")}
    assert "derm_pad" in out and "total" in out and str(root) in out
    assert "synth tiny (seed 3): 36 rows" in out
    source = ShardStore(root).manifest()["sources"][0]
    assert source["seed"] == 3 and source["image_size"] == load_config("debug").data.image_size


def test_synth_uses_data_root_without_root_flag(tmp_path, capsys):
    root = tmp_path / "from-config"
    assert main(["synth", "--no-progress", "--set", f'data.root="{root}"', "--set", 'synth.size="tiny"',
                 "--set", 'synth.tasks=["pubmedqa"]', "--set", "data.image_size=64"]) == 0
    assert ShardStore(root).counts() == {"pubmedqa": {"train": 6, "val": 3, "test": 3}}


def test_synth_help_and_dry_run(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ("--root", "--size", "--seed", "--preset", "--set", "--dry-run", "byte-identical", "medium"):
        assert word in text
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--size", "medium", "--dry-run"])
    assert exc.value.code == 0
    assert 'size = "medium"' in capsys.readouterr().out


def test_synth_rejects_unknown_task_with_the_key(tmp_path, capsys):
    rc = main(["synth", "--root", str(tmp_path / "s"), "--set", 'synth.tasks=["derm"]'])
    assert rc == 2
    err = capsys.readouterr().err
    assert "synth.tasks" in err and "'derm'" in err and "derm_pad" in err
    assert not (tmp_path / "s").exists()
