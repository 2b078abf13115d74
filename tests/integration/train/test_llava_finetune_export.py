"""Bring your own LLaVA, end to end: a tiny LLaVA directory (built from config, saved with its
processor; nothing downloads) -> a few steps of stage-2 fine-tuning (projector + LoRA) with the
debug preset -> `--format hf` and `--format hf-adapter` exports -> in a subprocess that never
imports medmix, transformers' LlavaForConditionalGeneration + AutoProcessor on the export, and
peft's PeftModel on the original LLaVA + the adapter, reproduce medmix's logits and greedy
generation on the same image + prompt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from medmix.cli import main
from medmix.data.images import to_model_input
from medmix.data.tokenizer import MedmixTokenizer
from medmix.model import generate
from medmix.model.export_meta import CONFIG_FILE
from medmix.model.hf_export import HFExportError
from medmix.model.preprocess import image_preprocess
from medmix.train.export import export_checkpoint, load_checkpoint_model
from tests.conftest import suite_config
from tests.unit.model.llava_helpers import NUM_IMAGE_TOKENS, sample_image, save_tiny_llava
from medmix.train.trainer import Callback
from tests.unit.train.test_trainer import _fit, torch_globals  # noqa: F401 - fixture

TEXT = "USER: <image>\nwhat does the image show? ASSISTANT:"

# Runs in a fresh interpreter: transformers and peft only. (This machine's torchvision wheel
# cannot load beside the CPU-only torch; hiding it makes transformers use its PIL processors.)
CHECK = r"""
import json, sys
sys.modules["torchvision"] = None
import numpy as np, torch
from transformers import AutoProcessor, GenerationConfig, LlavaForConditionalGeneration
from peft import PeftModel
hf_dir, adapter_dir, base_dir, image_file, text = sys.argv[1:6]
image = np.load(image_file)
out = {}
for name, load, where in (
        ("merged", lambda: LlavaForConditionalGeneration.from_pretrained(hf_dir), hf_dir),
        ("adapter", lambda: PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(base_dir),
                                                      adapter_dir), adapter_dir)):
    model = load().eval()
    processor = AutoProcessor.from_pretrained(where)
    inputs = processor(images=image, text=text, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
        new = model.generate(**inputs, generation_config=GenerationConfig.from_pretrained(where),
                             max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    out[name] = {"ids": inputs["input_ids"][0].tolist(), "pixels": inputs["pixel_values"][0].tolist(),
                 "logits": logits.tolist(), "generated": new.tolist()}
out["medmix_imported"] = any(m == "medmix" or m.startswith("medmix.") for m in sys.modules)
print(json.dumps(out))
"""


class KeepCheckpoints(Callback):
    """Copies each checkpoint out of the trainer's temporary directory: {step: path}."""

    def __init__(self, into):
        self.into, self.kept = into, {}

    def post_checkpoint(self, trainer, path, meta, metrics):
        self.kept[trainer.step] = shutil.copytree(path, self.into / f"step-{trainer.step:06d}")


@pytest.mark.slow(minutes=0.7)
def test_a_llava_fine_tuned_in_medmix_loads_in_plain_transformers_and_peft(tmp_path, tiny_suite, torch_globals):
    llava = save_tiny_llava(tmp_path / "llava", "clip")
    cfg = suite_config(tmp_path, tiny_suite, f'model.llava_path="{llava}"', 'train.trainable="projector+lora"',
                       'train.lora.target_modules=["q_proj", "v_proj"]', "train.lora.rank=4", "train.lr=3e-3",
                       "train.steps=3", "train.checkpoint_every=3", "train.eval_every=0", "train.warmup_steps=0",
                       "mixture.global_batch_size=4", 'mixture.tasks=["derm_pad", "vqa_rad"]',
                       "stream.max_seq_len=512", "lineage.enabled=false")
    kept = KeepCheckpoints(tmp_path / "kept")
    _fit(cfg, [kept])
    ckpt = kept.kept[3]

    model, _, tok = load_checkpoint_model(ckpt)  # LoRA merged: what the hf export holds
    head, tail = TEXT.split("<image>")
    ids = [tok.bos_id] + tok.encode(head) + [tok.image_token_id] * NUM_IMAGE_TOKENS + tok.encode(tail)
    prep = image_preprocess(cfg.model)
    pixels = torch.from_numpy(to_model_input(sample_image(), prep.size, prep.mean, prep.std))[None]
    with torch.no_grad():
        logits = model(torch.tensor([ids]), pixel_values=pixels).logits[0]
    generated = generate(model, [ids], pixels, max_new_tokens=8, eos_token_id=tok.eos_id)[0]

    # medmix's own format keeps the LLaVA's tokens: serving and evaluation tokenise as training did
    reloaded = MedmixTokenizer.from_file(export_checkpoint(ckpt, tmp_path / "medmix") / "tokenizer.json")
    assert (reloaded.image_token_id, reloaded.bos_id, reloaded.eos_id, len(reloaded)) == \
        (tok.image_token_id, tok.bos_id, tok.eos_id, len(tok))

    assert main(["export", str(ckpt), "--format", "hf", "--out", str(tmp_path / "hf"), "--no-register"]) == 0
    hf_dir = tmp_path / "hf"
    adapter_dir = export_checkpoint(ckpt, tmp_path / "adapter", fmt="hf-adapter")  # base: model.llava_path
    adapter = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(llava)
    assert adapter["modules_to_save"] and all("multi_modal_projector" in m for m in adapter["modules_to_save"])
    np.save(tmp_path / "image.npy", sample_image())
    run = subprocess.run([sys.executable, "-c", CHECK, str(hf_dir), str(adapter_dir), str(llava),
                          str(tmp_path / "image.npy"), "<s>" + TEXT],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["medmix_imported"] is False
    for name in ("merged", "adapter"):
        got = out[name]
        assert got["ids"] == ids, name  # the exported processor tokenises as medmix does
        torch.testing.assert_close(torch.tensor(got["pixels"]), pixels[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(torch.tensor(got["logits"]), logits, rtol=0, atol=1e-4, msg=name)
        stop = got["generated"].index(tok.eos_id) if tok.eos_id in got["generated"] else None
        assert got["generated"][:stop] == generated, name

    with torch.no_grad():  # fine-tuning moved the model away from the LLaVA it started from
        from transformers import LlavaForConditionalGeneration
        start = LlavaForConditionalGeneration.from_pretrained(llava).eval()
        before = start(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0]
    assert (before - logits).abs().max() > 1e-3


def test_a_timm_model_has_no_hf_export_and_nothing_is_written(tmp_path, tiny_suite, torch_globals):
    cfg = suite_config(tmp_path, tiny_suite, "train.steps=1", "train.checkpoint_every=1", "train.eval_every=0",
                       "train.warmup_steps=0",
                       "mixture.global_batch_size=2", 'mixture.tasks=["derm_pad"]', "lineage.enabled=false")
    kept = KeepCheckpoints(tmp_path / "kept")
    _fit(cfg, [kept])
    with pytest.raises(HFExportError, match="vision tower is a timm model"):
        export_checkpoint(kept.kept[1], tmp_path / "hf", fmt="hf")
    assert not (tmp_path / "hf").exists() and not (tmp_path / "hf.partial").exists()
    with pytest.raises(HFExportError, match="no model.llava_path; pass --base"):
        export_checkpoint(kept.kept[1], tmp_path / "ad", fmt="hf-adapter")
    assert not list(tmp_path.glob("ad*"))
    assert (export_checkpoint(kept.kept[1], tmp_path / "medmix") / CONFIG_FILE).is_file()  # the default still works
