"""Hugging Face export: a medmix model whose parts map (HF tower, llava projector, Llama-family
decoder) written as a LlavaForConditionalGeneration directory + processor gives the same logits
in transformers; LoRA adapters alone load with peft on the base; a part that cannot map is an
HFExportError naming it, before anything is written."""

from __future__ import annotations

import pytest
import torch
from llava_helpers import NUM_IMAGE_TOKENS, save_tiny_llava
from model_helpers import build_tiny

from medmix.config import load_config
from medmix.data.config import TokenizerConfig
from medmix.model.config import LoraConfig
from medmix.data.tokenizer import load_tokenizer
from medmix.model import build_model
from medmix.model.hf_export import HFExportError, hf_plan, save_hf, save_hf_adapter
from medmix.model.preprocess import image_preprocess
from medmix.model.trainable import apply_trainable


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("llava") / "llava", "siglip")


def from_llava(path):
    cfg = load_config("debug", [f'model.llava_path="{path}"']).model
    tok = load_tokenizer(TokenizerConfig(), "/nonexistent", cfg.decoder_path)
    model = build_model(cfg, vocab_size=len(tok), image_token_id=tok.image_token_id, pad_token_id=tok.pad_id)
    return cfg, tok, model.eval()


def prompt(tok):
    ids = tok.encode("USER: ") + [tok.image_token_id] * NUM_IMAGE_TOKENS + tok.encode("what is shown? ASSISTANT:")
    return torch.tensor([[tok.bos_id] + ids]), torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def nudge(params, scale=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * scale)


def test_the_hf_export_computes_what_medmix_does(llava_dir, tmp_path):
    from transformers import LlavaForConditionalGeneration
    cfg, tok, model = from_llava(llava_dir)
    nudge(model.parameters())  # weights no file holds: the export must carry medmix's own
    save_hf(model, tmp_path / "hf", tok, image_preprocess(cfg))
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    ids, px = prompt(tok)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, pixel_values=px).logits, model(ids, pixel_values=px).logits,
                                   rtol=0, atol=1e-5)
    assert hf.generation_config.suppress_tokens == sorted({tok.image_token_id, tok.pad_id})


def test_the_adapter_alone_on_its_base_is_the_trained_model(llava_dir, tmp_path):
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration
    cfg, tok, model = from_llava(llava_dir)
    lora = LoraConfig(rank=4, target_modules=["q_proj", "v_proj"])
    apply_trainable(model, "projector+lora", lora)
    model.eval()  # the adapters' dropout modules start in training mode
    nudge([p for p in model.parameters() if p.requires_grad])  # as training would move them
    save_hf_adapter(model, tmp_path / "adapter", llava_dir, tok, image_preprocess(cfg), lora)
    base = LlavaForConditionalGeneration.from_pretrained(llava_dir).eval()
    ids, px = prompt(tok)
    with torch.no_grad():
        want = model(ids, pixel_values=px).logits
        before = base(input_ids=ids, pixel_values=px).logits
        tuned = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()  # wraps `base` in place
        torch.testing.assert_close(tuned(input_ids=ids, pixel_values=px).logits, want, rtol=0, atol=1e-5)
    assert (before - want).abs().max() > 1e-3  # the adapter (and the saved projector) matter

    with torch.no_grad():
        model.decoder.model.norm.weight.add_(0.5)  # frozen in this run: the base no longer matches
    with pytest.raises(HFExportError, match=r"differs in model.language_model.norm.weight .*frozen"):
        save_hf_adapter(model, tmp_path / "bad", llava_dir, tok, image_preprocess(cfg), lora)
    assert not (tmp_path / "bad").exists()


def test_parts_that_cannot_map_are_named_before_anything_is_written(llava_dir, tmp_path):
    with pytest.raises(HFExportError, match=r"vision tower is a timm model .*--format medmix"):
        hf_plan(build_tiny())
    with pytest.raises(HFExportError, match=r"model.projector = 'mlp' is medmix's own"):
        hf_plan(build_tiny(vision_path=str(llava_dir), image_size=32, num_image_tokens=16, vision_feature_layer=-2))
    with pytest.raises(HFExportError, match=r"model.num_image_tokens = 4 pools the tower's 16 patches"):
        hf_plan(build_tiny(vision_path=str(llava_dir), image_size=32, projector="llava", vision_feature_layer=-2))
    with pytest.raises(HFExportError, match=r"vision_feature_layer = -1 takes the SigLIP tower's output after"):
        hf_plan(build_tiny(vision_path=str(llava_dir), image_size=32, projector="llava", num_image_tokens=16,
                           vision_feature_layer=-1))
    cfg, tok, model = from_llava(llava_dir)
    model.decoder.config.model_type = "gpt2"
    with pytest.raises(HFExportError, match=r"decoder is a 'gpt2' model"):
        save_hf(model, tmp_path / "out", tok, image_preprocess(cfg))
    assert not (tmp_path / "out").exists()
