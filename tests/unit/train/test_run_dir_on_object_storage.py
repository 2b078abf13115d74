"""A run directory on S3 (moto): the example ledger as write-once parts, the latest checkpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

from medmix.storage import location
from medmix.train.callbacks import ExampleLedger, read_ledger
from medmix.train.checkpoint import META_FILE, find_latest_checkpoint


def _train(ledger: ExampleLedger, steps: range, checkpoint_at: set[int]) -> None:
    ledger.pre_fit(None)
    for step in steps:
        trainer = SimpleNamespace(step=step)  # the ledger reads only the step
        ledger.post_train_batch(trainer, {"example_ids": [f"ex-{step}"]}, {})
        if step in checkpoint_at:
            ledger.post_checkpoint(trainer, "", {}, {})


def test_ledger_on_s3_is_written_at_checkpoints_and_each_attempt_is_kept(s3_env):
    run_dir = location(f"s3://{s3_env.bucket()}/runs/r1")
    first = ExampleLedger(run_dir, rank=0)
    _train(first, range(1, 6), checkpoint_at={3})  # killed after step 5: steps 4-5 never written
    assert [p.name for p in run_dir.join("ledger").files()] == ["rank0-attempt0-part00000.jsonl"]
    second = ExampleLedger(run_dir, rank=0)      # the restarted worker resumes from step 3
    assert second.attempt == 1
    _train(second, range(4, 9), checkpoint_at={6})
    second.post_fit(None)
    ledger = read_ledger(run_dir, rank=0)
    assert {k: [r["step"] for r in v] for k, v in ledger.items()} == {
        "rank0-attempt0": [1, 2, 3], "rank0-attempt1": [4, 5, 6, 7, 8]}
    assert ledger["rank0-attempt1"][0]["ids"] == ["ex-4"]


def test_latest_checkpoint_of_an_s3_run_directory_is_its_highest_step(s3_env):
    run_dir = location(f"s3://{s3_env.bucket()}/runs/r2")
    for step in (3, 10, 6):
        run_dir.join(f"step-{step:06d}", META_FILE).write_text(json.dumps({"step": step}))
    run_dir.join("step-000012", "model.distcp").write_bytes(b"x")  # no medmix.json: not a checkpoint
    # torn: medmix.json asks for a commit that never came (a worker died mid-upload)
    run_dir.join("step-000014", META_FILE).write_text(json.dumps({"step": 14, "commit": True}))
    assert find_latest_checkpoint(run_dir.uri) == f"{run_dir.uri}/step-000010"
    assert find_latest_checkpoint(f"{run_dir.uri}/step-000014") is None
    assert find_latest_checkpoint(f"{run_dir.uri}/step-000003") == f"{run_dir.uri}/step-000003"
    assert find_latest_checkpoint(f"{run_dir.uri}/nothing") is None
