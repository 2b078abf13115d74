"""train.trainable and LoRA: what trains, what stays bitwise frozen, optimizer state, checkpoints,
merging for export, and the errors that name a target or glob matching nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_helpers import BOS, build_tiny, img, pixels, right_pad

from medmix.config import ConfigError, load_config
from medmix.model.config import LoraConfig, parse_trainable
from medmix.model.trainable import apply_lora_structure, apply_trainable, has_lora, merge_lora
from medmix.train.checkpoint import load_checkpoint, save_checkpoint
from medmix.train.config import TrainConfig
from medmix.train.optim import build_optimizer

LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "v_proj"])


def batch():
    ids, mask, labels = right_pad([[BOS, 5] + img(1) + [6, 7, 8], [BOS] + img(1) + [9, 10, 11, 12]],
                                  targets=[3, 4])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels(2)}


def train_steps(model, optimizer, n=3):
    for _ in range(n):
        model(**batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_parse_trainable_terms_and_config_errors():
    assert parse_trainable("projector+lora") == ["projector", "lora"]
    assert parse_trainable("projector, decoder.model.layers.1*") == ["projector", "decoder.model.layers.1*"]
    with pytest.raises(ConfigError, match="empty term"):
        parse_trainable("projector+")
    with pytest.raises(ConfigError, match="`all` already"):
        load_config("debug", ["train.trainable=all+lora"])
    with pytest.raises(ConfigError, match="train.trainable = 'projector\\+lora' asks for LoRA"):
        load_config("debug", ["train.trainable=projector+lora", "train.lora.target_modules=[]"])
    cfg = load_config("debug", ["train.trainable=projector+lora", "train.lora.rank=4",
                                'train.lora.vision_target_modules=["qkv"]'])
    assert cfg.train.lora.rank == 4 and cfg.train.lora.vision_target_modules == ["qkv"]


@pytest.mark.parametrize("spec", ["projector", "projector+lora"])
def test_frozen_tensors_stay_bitwise_equal_and_only_trainables_have_optimizer_state(spec):
    model = build_tiny()
    report = apply_trainable(model, spec, LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") or ".lora_" in n for n in trainable)
    assert any(n.startswith("projector.") for n in trainable)
    assert any(".lora_" in n for n in trainable) == (spec == "projector+lora")
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, warmup_steps=0), fused=False)
    before = snapshot(model)
    train_steps(model, optimizer)
    for name, p in model.named_parameters():
        if name in trainable:
            assert not torch.equal(p, before[name]), f"{name} did not train"
        else:
            assert torch.equal(p, before[name]), f"frozen {name} changed"
    with_state = {id(p) for p in optimizer.state}
    assert with_state == {id(p) for p in model.parameters() if p.requires_grad}


def test_globs_select_modules_and_vision_lora():
    model = build_tiny()
    lora = dataclasses.replace(LORA, vision_target_modules=["qkv"])
    apply_trainable(model, "decoder.model.layers.1*,lora", lora)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("vision.vit.blocks.0.attn.qkv.lora_A") for n in names)
    assert any(n.startswith("decoder.model.layers.1.mlp") for n in names)
    assert not any(n.startswith(("decoder.model.layers.0.mlp", "projector.")) for n in names)


def test_a_target_or_glob_that_matches_nothing_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="train.lora.target_modules: 'qq_proj' matches no module of the decoder"):
        apply_trainable(build_tiny(), "projector+lora", dataclasses.replace(LORA, target_modules=["q_proj", "qq_proj"]))
    with pytest.raises(ConfigError, match="vision_target_modules: 'q_proj' matches no module of the vision"):
        apply_trainable(build_tiny(), "lora", dataclasses.replace(LORA, vision_target_modules=["q_proj"]))
    with pytest.raises(ConfigError, match="'decoder.nothing\\*' matches no parameter or module"):
        apply_trainable(build_tiny(), "projector,decoder.nothing*", LORA)


def test_checkpoint_resumes_adapters_and_optimizer_exactly(tmp_path):
    cfg = TrainConfig(lr=1e-2, warmup_steps=0)
    model = build_tiny()
    apply_trainable(model, "projector+lora", LORA)
    optimizer = build_optimizer(model, cfg, fused=False)
    train_steps(model, optimizer, 2)
    save_checkpoint(tmp_path, model, optimizer, {"step": 2}, rank=0)

    resumed = build_tiny(seed=1)  # different init: every tensor must come from the checkpoint
    apply_trainable(resumed, "projector+lora", LORA)
    resumed_opt = build_optimizer(resumed, cfg, fused=False)
    load_checkpoint(tmp_path, resumed, resumed_opt)
    for (n, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n
    train_steps(model, optimizer, 2)
    train_steps(resumed, resumed_opt, 2)
    for (n, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), f"{n} diverged after resume"


def test_merge_lora_keeps_outputs_and_restores_the_plain_architecture():
    model = build_tiny()
    apply_lora_structure(model, "projector+lora", LORA)
    with torch.no_grad():  # LoRA B starts at zero: give the adapters something to merge
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_()
    model.eval()
    b = batch()
    with torch.no_grad():
        before = model(**b).logits
        assert merge_lora(model) == 4  # q_proj and v_proj of 2 layers
        after = model(**b).logits
    assert not has_lora(model)
    assert set(model.state_dict()) == set(build_tiny().state_dict())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_model_info_counts_and_optimizer_state_per_gpu():
    from medmix.commands.model import model_info
    cfg = load_config("debug", ["train.trainable=projector+lora", "train.lora.rank=4"])
    info = model_info(cfg, world_size=4)
    t = info["trainable"]
    assert t["trainable"] + t["frozen"] == t["total"] > info["config"]["params"]["total"]  # adapters add
    assert t["per_part"]["vision"]["trainable"] == 0 and t["per_part"]["projector"]["frozen"] == 0
    assert t["lora_modules"] == 8  # q, k, v, o of 2 layers
    assert t["optimizer_bytes_per_gpu"] == 8 * t["trainable"] / 4
    everything = model_info(load_config("debug"), world_size=1)["trainable"]
    assert everything["frozen"] == 0 and everything["trainable"] == everything["total"]


def test_training_checks_the_trainable_set_before_any_worker_starts():
    from medmix.train.launcher import check_model
    check_model(load_config("debug", ["train.trainable=projector+lora"]))
    with pytest.raises(ConfigError, match="'decoder.nope' matches no parameter"):
        check_model(load_config("debug", ["train.trainable=projector+decoder.nope"]))
