"""Training on real Ray (2 CPU workers, FSDP2 over gloo), real DCP checkpoints, real MLflow.

Proves: the debug run learns and records its lineage; a run resumes onto a different number of
workers; `medmix export` + `medmix lineage` give the whole chain back to the shards; a
checkpoint without its commit is one export never picks. (A worker's node killed mid-run,
the run resumed to *exactly* the weights and example sequence of an uninterrupted run:
tests/integration/cluster/test_cluster_object_storage.py.)
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import suite_config

pytestmark = pytest.mark.slow(minutes=2.5)

STEPS = ["train.steps=8", "train.checkpoint_every=3", "train.eval_every=0", "train.log_every=2",
         "mixture.global_batch_size=8", "train.keep_last=5"]


def effective_ledger(run_dir: str) -> dict[int, dict[int, list[str]]]:
    """rank -> step -> ids, the later attempt winning where a step was trained twice."""
    out: dict[int, dict[int, list[str]]] = defaultdict(dict)
    files = sorted(Path(run_dir, "ledger").glob("rank*-attempt*.jsonl"),
                   key=lambda p: int(p.stem.split("attempt")[1]))
    for f in files:
        rank = int(f.stem[4:].split("-")[0])
        for line in f.read_text().splitlines():
            row = json.loads(line)
            out[rank][row["step"]] = row["ids"]
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_suite, ray_local):
    from medmix.train.launcher import train
    tmp = tmp_path_factory.mktemp("train-a")
    cfg = suite_config(tmp, tiny_suite, "name=clean", *STEPS)
    result = train(cfg)
    return cfg, result


def test_debug_run_learns_and_records_lineage(uninterrupted):
    from medmix.lineage.backend import client
    cfg, result = uninterrupted
    assert result.error is None and result.checkpoint.endswith("step-000008")
    run_dir = Path(result.run_dir)
    assert sorted(p.name for p in run_dir.glob("step-*")) == ["step-000003", "step-000006", "step-000008"]
    meta = json.loads((Path(result.checkpoint) / "medmix.json").read_text())
    assert meta["step"] == 8 and meta["world_size"] == 2 and meta["data_state"]
    assert list(Path(result.checkpoint).glob("*.distcp")), "DCP shards missing"

    mlflow = client(cfg.lineage)
    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "8" and run.data.params["model.scale"] == "debug"
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert {"medqa", "cxr_report", "derm_pad"} <= inputs
    losses = [m.value for m in mlflow.get_metric_history(result.run_id, "loss")]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert mlflow.get_metric_history(result.run_id, "loss/cxr_report")
    records = [a.path for a in mlflow.list_artifacts(result.run_id, "checkpoints")]
    assert records == ["checkpoints/step-000003.json", "checkpoints/step-000006.json",
                       "checkpoints/step-000008.json"]


def test_resume_onto_fewer_workers_and_export_lineage(uninterrupted, tmp_path, tiny_suite, capsys):
    import shutil

    from medmix.cli import main
    from medmix.train.launcher import train
    clean_cfg, clean = uninterrupted
    # continue the clean run (same name + storage) for 4 more steps on 1 worker
    storage = Path(clean.run_dir).parent
    copy = tmp_path / "ckpts"
    shutil.copytree(storage, copy)
    cfg = suite_config(tmp_path, tiny_suite, "name=clean", *STEPS, "train.steps=12", "train.num_workers=1",
                       f'train.storage_path="{copy}"', f'lineage.root="{clean_cfg.lineage.root}"')
    result = train(cfg)
    assert result.error is None and result.checkpoint.endswith("step-000012")
    ledger = effective_ledger(result.run_dir)
    assert sorted(ledger[0]) == list(range(1, 13)), "resumed run did not continue at step 9"
    meta = json.loads((Path(result.checkpoint) / "medmix.json").read_text())
    assert meta["world_size"] == 1 and meta["parent_checkpoint"].endswith("step-000009")
    first = json.loads((Path(result.run_dir) / "step-000009" / "medmix.json").read_text())
    assert first["parent_checkpoint"].endswith("step-000008")  # resumed from the clean run's last
    assert result.run_id == clean.run_id  # the same MLflow run continues

    out = tmp_path / "export"
    assert main(["export", result.checkpoint, "--out", str(out)]) == 0
    assert {"model.safetensors", "config.json", "tokenizer.json", "medmix.json"} <= {p.name for p in out.iterdir()}
    printed = capsys.readouterr().out
    version = printed.split("registered medmix/")[1].split()[0]
    assert main(["lineage", f"medmix/{version}", "--set", f'lineage.root="{clean_cfg.lineage.root}"']) == 0
    chain = capsys.readouterr().out
    for needle in ("step-000012", result.run_id, "cxr_report", "synth"):
        assert needle in chain, f"lineage output lacks {needle}:\n{chain}"


def test_a_checkpoint_without_its_commit_is_one_export_never_picks(uninterrupted, tmp_path, capsys):
    """The clean run's step-8 checkpoint with its COMMITTED removed — every rank's shards and
    medmix.json present, as a rank killed between storing its part and the commit leaves it
    (that kill, and the resume that skips the torn checkpoint:
    tests/integration/train/test_byo_model.py) — is never taken: a run-directory lookup and
    `medmix export` of the run fall back to step 6, and exporting step 8 itself is refused."""
    import shutil

    from medmix.cli import main
    from medmix.train.checkpoint import COMMIT_FILE, META_FILE, find_latest_checkpoint
    _, clean = uninterrupted
    run_dir = tmp_path / "clean"
    shutil.copytree(clean.run_dir, run_dir)
    torn = run_dir / "step-000008"
    (torn / COMMIT_FILE).unlink()
    assert (torn / META_FILE).is_file() and len(list(torn.glob("*.distcp"))) == 2
    assert find_latest_checkpoint(run_dir) == run_dir / "step-000006"
    capsys.readouterr()
    assert main(["export", str(run_dir), "--out", str(tmp_path / "export"), "--no-register"]) == 0
    assert json.loads((tmp_path / "export" / "medmix.json").read_text())["step"] == 6
    assert main(["export", str(torn), "--out", str(tmp_path / "torn-export"), "--no-register"]) == 1
    assert "step-000008 is a torn checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "torn-export").exists()
