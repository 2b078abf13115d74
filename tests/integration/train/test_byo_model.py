"""Bring your own model, stage 2: a tiny SigLIP directory + a tiny Llama directory (its tokenizer
with a chat template beside it), warm-started from a registered version, trained 10 steps with
train.trainable = projector + LoRA under Ray Train FSDP2 on 2 CPU workers.

Proves: step 0 holds exactly the registered version's weights; every frozen tensor is bitwise
unchanged after training, every trained one changed, and only trained ones carry optimizer
state; a worker killed inside the step-8 checkpoint resumes from step 4 to bit-identical final
weights; `medmix lineage` names the parent version; the model paths are given relative to the
directory the run was started from (the workers' working directory is another) and the prompts
went through the decoder's chat template.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.conftest import suite_config
from tests.integration.train.test_train_recovery import effective_ledger
from tests.unit.data.chat_helpers import LLAMA3_SPECIALS, LLAMA3_STYLE_TEMPLATE

pytestmark = pytest.mark.slow(minutes=1.5)

STAGE2 = ["train.steps=10", "train.checkpoint_every=4", "train.eval_every=0", "train.log_every=5",
          "train.keep_last=5", "mixture.global_batch_size=8", 'mixture.tasks=["medqa", "derm_pad"]',
          'train.trainable="projector+lora"', "train.lora.rank=4", "train.lora.dropout=0.0",
          'model.vision_path="siglip"', 'model.decoder_path="llama"', "model.image_size=32",
          "model.num_image_tokens=4", 'model.projector="llava"', "model.vision_feature_layer=-2"]


@contextmanager
def cwd(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def save_byo_dirs(root: Path, store_tokenizer: Path) -> None:
    """root/siglip: SiglipVisionModel + its preprocessor_config.json; root/llama: LlamaForCausalLM
    with the store's BPE as its tokenizer, Llama 3's control tokens and chat template."""
    from transformers import (LlamaForCausalLM, PreTrainedTokenizerFast, SiglipImageProcessor, SiglipVisionConfig,
                              SiglipVisionModel)

    from medmix.model.scales import LANGUAGE_SCALES
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=2, image_size=32, patch_size=8)
                      ).save_pretrained(root / "siglip")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "siglip")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(store_tokenizer), bos_token="<bos>", eos_token="<eos>",
                                  pad_token="<pad>", unk_token="<unk>",
                                  extra_special_tokens=[t for t in LLAMA3_SPECIALS if "header" in t or "eot" in t])
    tok.chat_template = LLAMA3_STYLE_TEMPLATE
    tok.save_pretrained(root / "llama")
    LlamaForCausalLM(LANGUAGE_SCALES["debug"].llama_config(len(tok))).save_pretrained(root / "llama")


def unwrapped(name: str) -> str:
    """A parameter's name in the plain architecture (peft wraps an adapted Linear as base_layer)."""
    return name.replace(".base_layer.", ".")


def checkpoint_state(checkpoint: str) -> dict[str, torch.Tensor]:
    """A checkpoint's model tensors as trained (adapters not merged)."""
    from medmix.config import config_from_dict
    from medmix.data.tokenizer import load_tokenizer
    from medmix.model import build_model
    from medmix.model.trainable import apply_lora_structure
    from medmix.train.checkpoint import dcp_load, read_meta
    cfg = config_from_dict(read_meta(checkpoint)["config"])
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id, pad_token_id=tok.pad_id)
    apply_lora_structure(model, cfg.train.trainable, cfg.train.lora)
    state = {"model": model.state_dict()}
    dcp_load(state, checkpoint)
    return state["model"]


@pytest.fixture(scope="module")
def stage2(tmp_path_factory, tiny_suite, ray_local):
    """(clean config, clean result, killed result, parent version, parent export dir, root)."""
    from medmix.data.tokenizer import load_tokenizer
    from medmix.lineage.registry import register_export
    from medmix.lineage.tracker import build_tracker
    from medmix.model import build_model, save_exported
    from medmix.train.launcher import train
    root = tmp_path_factory.mktemp("byo")
    save_byo_dirs(root, Path(tiny_suite) / "tokenizer" / "tokenizer.json")
    with cwd(root):
        # stage 1's result, registered: the weights stage 2 starts from (no fresh build has them)
        cfg = suite_config(root, tiny_suite, *STAGE2)
        tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
        torch.manual_seed(1)
        parent = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id,
                             pad_token_id=tok.pad_id)
        with torch.no_grad():
            for p in parent.parameters():
                p.add_(0.01)
        save_exported(parent, root / "stage1")
        with build_tracker(cfg.lineage).start_run("stage1") as run:
            version = f"medmix/{register_export(cfg.lineage, root / 'stage1', run.run_id)}"
        clean_cfg = suite_config(root, tiny_suite, "name=clean", *STAGE2, f'train.init_from="{version}"')
        clean = train(clean_cfg)
        killed = train(suite_config(root, tiny_suite, "name=killed", *STAGE2, f'train.init_from="{version}"',
                                    "debug.fail_in_checkpoint_at_step=8", "debug.fail_rank=1",
                                    "train.max_failures=1"))
    return clean_cfg, clean, killed, version, root


@pytest.fixture(scope="module")
def step0(stage2):
    """The warm-started run's model at step 0, as a worker builds it: (tensors, trained names, buffer names)."""
    from medmix.train.loop import build_trainer
    cfg = stage2[0]
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        trainer = build_trainer(cfg, rank=0, world_size=1, device=torch.device("cpu"), use_ray_data=False)
        assert trainer.step == 0 and not trainer.optimizer.state
        model = trainer.model
        return ({n: t.detach().clone() for n, t in model.state_dict().items()},
                {n for n, p in model.named_parameters() if p.requires_grad}, {n for n, _ in model.named_buffers()})
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def test_step_0_is_the_registered_version_and_the_prompts_use_the_chat_template(stage2, step0):
    from safetensors.torch import load_file

    from medmix.data.tokenizer import MedmixTokenizer
    from medmix.train.checkpoint import read_meta
    cfg, clean, _, version, root = stage2
    assert clean.error is None, clean.error
    # the driver made the relative model paths absolute and resolved the version to its files
    assert cfg.model.decoder_path == str(root / "llama") and cfg.model.vision_path == str(root / "siglip")
    assert Path(cfg.train.init_from).is_dir() and cfg.train.init_from != version
    state, _, buffers = step0
    parent = load_file(str(root / "stage1" / "model.safetensors"))
    compared = set()
    for name, tensor in state.items():
        if "lora_" in name:
            assert "lora_A" in name or not tensor.any(), name  # B starts at zero: the parent's outputs
            continue
        assert torch.equal(tensor, parent[unwrapped(name)]), name
        compared.add(unwrapped(name))
    # the export also holds the non-persistent buffers (position ids, rotary frequencies)
    assert set(parent) - compared <= buffers
    assert any(n.startswith("projector.") for n in compared) and any(n.startswith("vision.") for n in compared)
    tok = MedmixTokenizer.from_file(root / "llama")
    assert tok.chat_template == LLAMA3_STYLE_TEMPLATE
    assert read_meta(clean.checkpoint)["tokenizer_digest"] == tok.digest  # trained on the templated prompts


def test_frozen_tensors_unchanged_trained_ones_changed(stage2, step0):
    from torch.distributed.checkpoint import FileSystemReader
    _, clean, _, _, _ = stage2
    state, trainable, buffers = step0
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert any(n.startswith("projector.") for n in trainable) and any("lora_" in n for n in trainable)
    final = checkpoint_state(clean.checkpoint)
    for name, before in state.items():
        if name in buffers:
            continue
        if name in trainable:
            assert not torch.equal(final[name], before), f"{name} was trained but did not change"
        else:
            assert torch.equal(final[name], before), f"{name} is frozen but changed"
    # the optimizer state in the checkpoint covers the trained parameters only
    keys = FileSystemReader(clean.checkpoint).read_metadata().state_dict_metadata
    with_state = {m.group(1) for k in keys if (m := re.match(r"optim\.(.+)\.exp_avg$", k))}
    assert with_state == trainable


def test_a_killed_worker_resumes_to_identical_weights_and_lineage_names_the_parent(stage2, capsys):
    from medmix.cli import main
    cfg, clean, killed, version, _ = stage2
    assert killed.error is None and killed.checkpoint.endswith("step-000010")
    assert sorted(effective_ledger(killed.run_dir)[1]) == list(range(1, 11))
    # the second attempt went on from the step-4 checkpoint (step 8's was torn by the kill)
    resumed = Path(killed.run_dir, "ledger", "rank1-attempt1.jsonl").read_text().splitlines()
    assert json.loads(resumed[0])["step"] == 5
    a, b = checkpoint_state(clean.checkpoint), checkpoint_state(killed.checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after the resume"
    capsys.readouterr()
    assert main(["lineage", clean.checkpoint, "--set", f'lineage.root="{cfg.lineage.root}"']) == 0
    assert f"started from: {version}" in capsys.readouterr().out
