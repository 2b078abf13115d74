"""The GPU presets for real scales (small, base, large): valid, sized from the scale ladder,
printable with --dry-run on a CPU machine, and the ones the README's commands name."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from medmix.config import list_presets, load_config
from medmix.model.summary import describe

REPO = Path(__file__).resolve().parents[2]
# parameters of the whole model with the presets' 32k BPE vocabulary (`medmix model info`)
SIZE_BANDS = {"small": (0.1e9, 0.3e9), "base": (0.9e9, 1.5e9), "large": (6e9, 9e9)}


@pytest.mark.parametrize("preset", sorted(SIZE_BANDS))
def test_scale_preset_is_a_gpu_run_on_its_ladder_rung(preset):
    cfg = load_config(preset)
    assert cfg.name == preset and cfg.model.scale == preset
    assert cfg.train.use_gpu == "true" and not cfg.train.deterministic
    assert cfg.mixture.global_batch_size % cfg.train.num_workers == 0
    assert cfg.data.image_size == cfg.model.image_size  # stored images are what the ViT sees
    assert cfg.train.steps % cfg.train.checkpoint_every == 0
    assert cfg.train.eval_every % cfg.train.log_every == 0
    assert 0 < cfg.train.warmup_steps < cfg.train.steps // 10
    info = describe(cfg.model, vocab_size=cfg.tokenizer.vocab_size, seq_len=cfg.stream.max_seq_len)
    low, high = SIZE_BANDS[preset]
    assert low <= info["params"]["total"] <= high, info["params"]


def test_scale_presets_grow_monotonically():
    cfgs = [load_config(p) for p in ("small", "base", "large")]
    assert [c.train.num_workers for c in cfgs] == sorted(c.train.num_workers for c in cfgs)
    assert [c.train.lr for c in cfgs] == sorted((c.train.lr for c in cfgs), reverse=True)
    assert [c.stream.max_seq_len for c in cfgs] == sorted(c.stream.max_seq_len for c in cfgs)


@pytest.mark.parametrize("preset", ["base", "large"])
def test_train_dry_run_of_a_gpu_preset_prints_it_on_a_cpu_machine(preset):
    out = subprocess.run([sys.executable, "-m", "medmix.cli", "train", "--preset", preset, "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f'name = "{preset}"' in out.stdout and 'use_gpu = "true"' in out.stdout
    assert f'scale = "{preset}"' in out.stdout


def test_every_preset_the_docs_name_is_shipped():
    shipped = set(list_presets())
    named = set()
    for doc in ["README.md", "cluster.yaml", *map(str, (REPO / "jobs").glob("*.py")),
                "platform/medmix/commands/submit.py"]:
        named |= set(re.findall(r"--preset[ =]([A-Za-z0-9_-]+)", (REPO / doc).read_text()))
    assert named and named <= shipped, f"documented but not shipped: {sorted(named - shipped)}"
