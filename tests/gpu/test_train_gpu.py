"""Training on CUDA: bf16 FSDP2 steps through Ray Train, a DCP checkpoint, and resume.

    make test-gpu   # on a machine with an NVIDIA GPU (and ray, mlflow installed)
Skipped where no CUDA GPU is present (tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import suite_config

pytestmark = [pytest.mark.gpu, pytest.mark.slow(minutes=1)]


def test_bf16_fsdp2_steps_checkpoint_and_resume_on_cuda(tmp_path, tiny_suite, ray_local):
    from medmix.train.launcher import train
    common = ["train.num_workers=1", "train.use_gpu=true", "train.checkpoint_every=3",
              "train.eval_every=0", "train.log_every=1", "mixture.global_batch_size=8"]
    first = train(suite_config(tmp_path, tiny_suite, "name=gpu", "train.steps=3", *common))
    assert first.error is None
    assert first.metrics["mfu"] > 0 and first.metrics["gpu_mem_gib"] > 0
    meta = json.loads((Path(first.checkpoint) / "medmix.json").read_text())
    assert meta["step"] == 3
    # re-submitting the same run with more steps continues from the step-3 checkpoint
    second = train(suite_config(tmp_path, tiny_suite, "name=gpu", "train.steps=6", *common))
    assert second.error is None and second.checkpoint.endswith("step-000006")
    ledger = Path(second.run_dir, "ledger", "rank0-attempt1.jsonl").read_text().splitlines()
    assert json.loads(ledger[0])["step"] == 4
