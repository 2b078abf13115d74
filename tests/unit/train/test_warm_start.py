"""train.init_from: a new run (step 0, new optimizer) starts from an export's weights exactly; the
driver resolves the reference and checks names and shapes before any worker starts; a
mismatch names the tensor."""

from __future__ import annotations

import pytest
import torch

from medmix.config import ConfigError
from medmix.model import build_model, save_exported
from medmix.model.warm_start import load_init_weights
from tests.conftest import suite_config
from tests.unit.train.test_trainer import torch_globals  # noqa: F401 - fixture

OVERRIDES = ["train.steps=2", "train.eval_every=0", "mixture.global_batch_size=4",
             'mixture.tasks=["medqa", "derm_pad"]', "lineage.enabled=false"]


def parent_export(cfg, out, seed=123):
    """An export of the config's model with weights no fresh build would have."""
    from medmix.data.tokenizer import load_tokenizer
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    torch.manual_seed(seed)
    model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id, pad_token_id=tok.pad_id)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    save_exported(model, out)
    return model


def test_a_warm_started_trainer_begins_at_step_0_with_the_parents_weights(tmp_path, tiny_suite, torch_globals):
    from medmix.train.launcher import resolve_init_from
    from medmix.train.loop import build_trainer
    cfg = suite_config(tmp_path, tiny_suite, *OVERRIDES)
    parent = parent_export(cfg, tmp_path / "parent")
    cfg.train.init_from = str(tmp_path / "parent")
    tags = resolve_init_from(cfg)
    assert tags["medmix.init_from"] == str(tmp_path / "parent")
    assert cfg.train.init_from == str((tmp_path / "parent").resolve())
    trainer = build_trainer(cfg, rank=0, world_size=1, device=torch.device("cpu"), use_ray_data=False)
    assert trainer.step == 0 and not trainer.optimizer.state
    for (name, a), b in zip(trainer.model.state_dict().items(), parent.state_dict().values()):
        assert torch.equal(a, b), name


def test_mismatched_exports_name_the_tensor_before_any_worker(tmp_path, tiny_suite):
    from medmix.train.launcher import resolve_init_from
    cfg = suite_config(tmp_path, tiny_suite, *OVERRIDES, 'model.projector="linear"')
    parent_export(suite_config(tmp_path, tiny_suite, *OVERRIDES), tmp_path / "mlp")
    cfg.train.init_from = str(tmp_path / "mlp")
    with pytest.raises(ConfigError, match="has no tensor 'projector.proj.weight', which this model has"):
        resolve_init_from(cfg)
    cfg.train.init_from = str(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="train.init_from = .*nowhere"):
        resolve_init_from(cfg)


def test_a_shape_mismatch_names_the_tensor(tmp_path):
    import dataclasses
    from medmix.config import load_config
    cfg = dataclasses.replace(load_config("debug").model, image_size=32)
    save_exported(build_model(cfg, vocab_size=64, image_token_id=63, pad_token_id=0), tmp_path / "e")
    with pytest.raises(ValueError, match=r"decoder.model.embed_tokens.weight has shape \(64, 64\), this model "
                                         r"expects \(72, 64\)"):
        load_init_weights(build_model(cfg, vocab_size=72, image_token_id=63, pad_token_id=0), tmp_path / "e")


def test_lineage_shows_the_model_a_run_started_from():
    from medmix.lineage.query import LineageChain, format_chain
    chain = LineageChain(run={"run_id": "r2", "name": "stage2", "status": "FINISHED", "started": "today",
                              "init_from": {"ref": "medmix@champion", "version": "medmix/3", "run": "r1"}})
    assert "started from: medmix@champion  version medmix/3  run r1" in format_chain(chain)


def test_prepare_resolves_init_from_for_train_and_sweep_alike(tmp_path, tiny_suite, monkeypatch):
    """`medmix train` and `medmix sweep` both call prepare(): the workers (a sweep's trials too)
    get the parent as an absolute local export directory, and the lineage tags keep the reference."""
    from medmix.train.launcher import prepare
    cfg = suite_config(tmp_path, tiny_suite, *OVERRIDES)
    parent_export(cfg, tmp_path / "parent")
    monkeypatch.chdir(tmp_path)
    cfg.train.init_from = "parent"
    tags = prepare(cfg)
    assert tags["medmix.init_from"] == "parent"
    assert cfg.train.init_from == str((tmp_path / "parent").resolve())


def test_model_paths_given_relative_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    from medmix.config import load_config
    from medmix.train.launcher import absolutize
    monkeypatch.chdir(tmp_path)
    cfg = load_config("debug", ['model.decoder_path="llama"', 'model.vision_path="towers/siglip"',
                                'model.projector_path="stage1/model.safetensors"',
                                'model.vision_checkpoint="pkg:some_package/vit.safetensors"'])
    absolutize(cfg)
    assert cfg.model.decoder_path == str(tmp_path / "llama")
    assert cfg.model.vision_path == str(tmp_path / "towers" / "siglip")
    assert cfg.model.projector_path == str(tmp_path / "stage1" / "model.safetensors")
    assert cfg.model.vision_checkpoint == "pkg:some_package/vit.safetensors"  # resolved where it is installed
