"""One resolver for every model reference: a real DCP checkpoint of the debug model, resolved as a
checkpoint, a run directory, the export it becomes and a registry version; bad references and
malformed exports are clear errors naming the file and what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medmix.model.export_meta import ExportMeta
from medmix.model.resolve import Export, resolve
from tests.conftest import suite_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_suite):
    """(config, run directory with checkpoints step-000001 and step-000002, the step-2 model)."""
    from medmix.config import to_dict
    from medmix.data.tokenizer import load_tokenizer
    from medmix.model import build_model
    from medmix.train.checkpoint import save_checkpoint
    tmp = tmp_path_factory.mktemp("resolve")
    cfg = suite_config(tmp, tiny_suite, "name=resolvetest")
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    run_dir = tmp / "runs" / "checkpoints" / "resolvetest"
    for step in (1, 2):
        torch.manual_seed(step)
        model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id,
                            pad_token_id=tok.pad_id)
        optimizer = torch.optim.AdamW(model.parameters())
        save_checkpoint(run_dir / f"step-{step:06d}", model, optimizer, rank=0,
                        meta={"step": step, "config": to_dict(cfg), "run_id": None, "store_digest": "s1",
                              "tokenizer_digest": tok.digest})
    return cfg, run_dir, model, tok


def _mark(export: Export) -> Path:
    """A file of ours in the export directory: it survives a reuse, not a new export."""
    marker = export.path / "marker"
    marker.write_text("resolved before")
    return marker


def test_a_checkpoint_is_exported_once_and_then_reused(run, tmp_path):
    from medmix.model import load_exported
    cfg, run_dir, model, tok = run
    ckpt = run_dir / "step-000002"
    export = resolve(ckpt, cfg.lineage, tmp_path / "work")
    assert export.path == (tmp_path / "work" / "resolvetest-step2").resolve()
    assert (export.ref, export.label, export.version, export.aliases) == (str(ckpt), "resolvetest-step2", None, ())
    assert export.step == 2 and export.checkpoint == str(ckpt.resolve()) and export.run_id is None
    assert export.train_config is not None and export.train_config["name"] == "resolvetest"
    meta = export.meta
    assert meta.lineage is not None and meta.lineage.store_digest == "s1" and meta.lineage.tokenizer_digest == tok.digest
    assert (meta.eos_id, meta.bos_id, meta.pad_id) == (tok.eos_id, tok.bos_id, tok.pad_id)
    assert (meta.max_seq_len, meta.image_size, meta.exemplar) == (cfg.stream.max_seq_len, cfg.model.image_size,
                                                                   cfg.stream.exemplar)
    assert meta.num_image_tokens == cfg.model.num_image_tokens and meta.vocab_size == len(tok)
    assert meta.params == model.num_params() and meta.model["scale"] == cfg.model.scale
    loaded, config = load_exported(export.path, meta=meta)
    assert config is meta.config
    want = model.state_dict()
    assert all(torch.equal(t, want[name]) for name, t in loaded.state_dict().items())

    marker = _mark(export)
    again = resolve(ckpt, cfg.lineage, tmp_path / "work")
    assert again.path == export.path and marker.is_file()  # reused, not exported again
    assert again.meta == export.meta

    # another checkpoint with the same run name and step lands in the same directory: exported anew
    other = tmp_path / "copy" / "resolvetest" / "step-000002"
    shutil.copytree(ckpt, other)
    moved = resolve(other, cfg.lineage, tmp_path / "work")
    assert moved.path == export.path and moved.checkpoint == str(other.resolve())
    assert not marker.exists()


def test_a_run_directory_resolves_to_its_latest_checkpoint(run, tmp_path):
    cfg, run_dir, _, _ = run
    export = resolve(run_dir, cfg.lineage, tmp_path)
    assert export.step == 2 and export.checkpoint == str((run_dir / "step-000002").resolve())
    assert export.label == "resolvetest-step2" and export.path == (tmp_path / "resolvetest-step2").resolve()


def test_an_export_directory_is_used_as_is(run, tmp_path):
    cfg, run_dir, _, _ = run
    exported = resolve(run_dir / "step-000001", cfg.lineage, tmp_path)
    export = resolve(str(exported.path), cfg.lineage, tmp_path / "unused")
    assert export.path == exported.path and export.label == "resolvetest-step1" and export.version is None
    assert export.meta == ExportMeta.read(exported.path) and export.step == 1
    assert not (tmp_path / "unused").exists()


def test_checkpoints_export_under_the_lineage_root_by_default(run):
    cfg, run_dir, _, _ = run
    export = resolve(run_dir, cfg.lineage)
    assert export.path == (Path(cfg.lineage.root) / "exports" / "resolvetest-step2").resolve()


def test_a_registry_reference_resolves_to_its_version(run, tmp_path):
    from medmix.lineage.backend import LineageError
    from medmix.lineage.registry import register_export, set_alias
    from medmix.lineage.tracker import build_tracker
    cfg, run_dir, _, _ = run
    exported = resolve(run_dir, cfg.lineage, tmp_path)
    with build_tracker(cfg.lineage).start_run("resolvetest") as mlrun:
        version = register_export(cfg.lineage, exported.path, mlrun.run_id)
    set_alias(cfg.lineage, "medmix", "champion", version)
    for ref in ("medmix@champion", f"medmix/{version}", f"models:/medmix/{version}"):
        export = resolve(ref, cfg.lineage, tmp_path / "unused")
        assert (export.ref, export.label, export.version) == (ref, f"medmix/{version}", f"medmix/{version}")
        assert export.aliases == ("champion",)
        assert export.path == (Path(cfg.lineage.root) / "models" / "medmix" / version).resolve()
        assert export.meta == exported.meta  # the same files, fetched from the registry
    with pytest.raises(LineageError, match="no model version medmix/99"):
        resolve("medmix/99", cfg.lineage)


def test_what_is_not_a_model_is_a_clear_error(run, tmp_path):
    cfg = run[0]
    with pytest.raises(FileNotFoundError, match="no such directory, and not a registry reference"):
        resolve(tmp_path / "nope", cfg.lineage, tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="a file; give an export directory"):
        resolve(tmp_path / "weights.bin", cfg.lineage, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"neither an export \(config.json \+ model.safetensors\) "
                                                r"nor a training checkpoint"):
        resolve(tmp_path / "empty", cfg.lineage, tmp_path)


def test_malformed_export_files_name_the_file_and_the_problem(run, tmp_path):
    cfg, run_dir, _, _ = run
    good = resolve(run_dir / "step-000001", cfg.lineage, tmp_path).path
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    config_file, lineage_file = bad / "config.json", bad / "medmix.json"
    data = json.loads(config_file.read_text())

    config_file.unlink()
    with pytest.raises(FileNotFoundError, match=r"bad/config.json: not a medmix model export \(no config.json\)"):
        ExportMeta.read(bad)
    config_file.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad/config.json: not valid JSON"):
        ExportMeta.read(bad)
    config_file.write_text(json.dumps({**data, "format": "other"}))
    with pytest.raises(ValueError, match=r"bad/config.json: format is 'other', expected 'medmix-model'"):
        ExportMeta.read(bad)
    config_file.write_text(json.dumps({k: v for k, v in data.items() if k != "decoder_config"}))
    with pytest.raises(ValueError, match=r"bad/config.json: lacks decoder_config"):
        ExportMeta.read(bad)
    config_file.write_text(json.dumps({**data, "vocab_size": "many"}))
    with pytest.raises(ValueError, match=r"bad/config.json: vocab_size is 'many', expected an integer"):
        ExportMeta.read(bad)
    config_file.write_text(json.dumps({**data, "meta": {**data["meta"], "eos_id": None, "max_seq_len": None}}))
    meta = ExportMeta.read(bad)
    with pytest.raises(ValueError, match=r"bad/config.json: meta lacks eos_id, max_seq_len; export the model"):
        meta.require(bad, "eos_id", "max_seq_len", "image_size")
    assert meta.require(bad, "image_size") == (cfg.model.image_size,)

    config_file.write_text(json.dumps(data))
    lineage_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad/medmix.json: holds a JSON list, expected an object"):
        ExportMeta.read(bad)
    lineage_file.unlink()  # an export that never was a checkpoint: no lineage, still an export
    plain = resolve(bad, cfg.lineage, tmp_path)
    assert plain.meta.lineage is None and plain.step is None and plain.train_config is None
