"""A task defined in a TOML file reaches every process that works on it, with no file at hand:
Ray Data's preprocessing workers on the session's real Ray (the store's rows of the new task
become batches built on a Ray node), and a process that loads an export trained on it (the
export's medmix.json carries the definition)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.unit.tasks.test_task_files import ingest_fundus, registry  # noqa: F401 - registry: autouse fixture
from tests.unit.train.test_trainer import torch_globals  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[3]
OVERRIDES = ['mixture.tasks=["fundus_dr"]', "mixture.global_batch_size=4", "model.image_size=32",
             "train.steps=2", "train.checkpoint_every=2", "train.eval_every=0", "train.log_every=1",
             "train.warmup_steps=0", "train.num_workers=1"]


def config(root: Path, tmp_path: Path, *extra: str):
    from medmix.config import load_config
    from medmix.data.tokenizer import ensure_tokenizer
    cfg = load_config("debug", [f'data.root="{root}"', f'train.storage_path="{tmp_path}/checkpoints"',
                                f'lineage.root="{tmp_path}/runs"', *OVERRIDES, *extra])
    ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    return cfg


def test_ray_data_workers_build_batches_of_a_task_defined_in_toml(tmp_path, ray_local):
    from medmix.data.stream import IN_PROCESS, build_rank_stream
    from medmix.data.tokenizer import load_tokenizer
    root = ingest_fundus(tmp_path)
    (tmp_path / "fundus.toml").unlink()
    cfg = config(root, tmp_path)
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    stream = build_rank_stream(cfg, tok, use_ray=True)
    try:
        batches = list(stream.batches(end_step=3))
        built_on = stream.stats()["built_on"]
    finally:
        stream.close()
    assert len(batches) == 3 and all(b["input_ids"].shape[0] == 4 for b in batches)
    assert IN_PROCESS not in built_on and sum(built_on.values()) == 3, built_on
    assert all(int(t) == 0 for b in batches for t in b["task_ids"])     # fundus_dr, the plan's only task


EXPORT_READER = """
import json, sys
import medmix
from medmix.model.export_meta import ExportMeta
from medmix.tasks import get_task, render_prompt
meta = ExportMeta.read(sys.argv[1])
spec = get_task("fundus_dr")
print("RESULT " + json.dumps({"kind": spec.kind, "options": list(spec.options),
                              "prompt": render_prompt(spec, {"age": "70"}, 1)}))
"""


def test_an_export_carries_the_definition_to_a_process_that_loads_it(tmp_path, torch_globals):
    import shutil

    from medmix.train.export import export_checkpoint
    from medmix.train.loop import build_trainer
    from medmix.train.trainer import Callback
    root = ingest_fundus(tmp_path)
    cfg = config(root, tmp_path)
    kept = {}

    class Keep(Callback):
        def post_checkpoint(self, t, path, meta, metrics):   # the checkpoint dir is temporary
            kept[t.step] = shutil.copytree(path, tmp_path / f"step-{t.step}")

    trainer = build_trainer(cfg, rank=0, world_size=1, device=torch.device("cpu"), callbacks=[Keep()],
                            use_ray_data=False)
    trainer.fit()
    meta = json.loads((Path(kept[2]) / "medmix.json").read_text())
    assert list(meta["tasks"]) == ["fundus_dr"]
    export = export_checkpoint(kept[2], tmp_path / "export")
    done = subprocess.run([sys.executable, "-c", EXPORT_READER, str(export)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    got = json.loads(lines[-1][7:])
    assert got["kind"] == "classify" and got["options"][2] == "moderate"
    assert "Grade the diabetic retinopathy" in got["prompt"] and "Age: 70." in got["prompt"]

