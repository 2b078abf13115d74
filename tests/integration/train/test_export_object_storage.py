"""`medmix export` reads checkpoints from and writes exports to object storage (a local S3
server), and `resolve` — what serve and evaluate call — loads an export from a bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmix.cli import main
from medmix.model.export_meta import CONFIG_FILE, WEIGHTS_FILE
from medmix.model.resolve import resolve
from medmix.storage import location, upload

pytestmark = pytest.mark.slow(minutes=0.7)


def test_export_from_and_to_a_bucket_and_resolve_it(trained_debug, s3_env, tmp_path):
    cfg, result, _ = trained_debug
    bucket = s3_env.bucket("export")
    ckpt = Path(result.checkpoint)
    remote_ckpt = f"s3://{bucket}/checkpoints/{cfg.name}/{ckpt.name}"
    upload(ckpt, location(remote_ckpt))

    assert main(["export", remote_ckpt, "--out", f"s3://{bucket}/exports/m", "--no-register"]) == 0
    assert main(["export", str(ckpt), "--out", str(tmp_path / "local"), "--no-register"]) == 0
    remote = location(f"s3://{bucket}/exports/m")
    assert {f.name for f in remote.files()} >= {CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json", "medmix.json"}
    # the same weights whether the checkpoint was read from the bucket or from disk
    assert remote.join(WEIGHTS_FILE).read_bytes() == (tmp_path / "local" / WEIGHTS_FILE).read_bytes()

    export = resolve(remote.uri, cfg.lineage, workdir=tmp_path / "cache")
    assert export.path.is_relative_to(tmp_path / "cache")
    assert (export.path / WEIGHTS_FILE).read_bytes() == remote.join(WEIGHTS_FILE).read_bytes()
    assert export.meta.max_seq_len == cfg.stream.max_seq_len and export.step == result_step(ckpt)
    again = resolve(remote.uri, cfg.lineage, workdir=tmp_path / "cache")   # downloaded once
    assert again.path == export.path

    # an upload that stopped before config.json is not an export anybody loads
    half = location(f"s3://{bucket}/exports/half")
    half.join(WEIGHTS_FILE).write_bytes(b"partial")
    with pytest.raises(FileNotFoundError, match="exports/half"):
        resolve(half.uri, cfg.lineage, workdir=tmp_path / "cache")


def result_step(ckpt: Path) -> int:
    return int(ckpt.name.split("-")[1])
