"""model.projector = "llava": LLaVA's linear_1 -> GELU -> linear_2, loaded by name from a tiny
LlavaForConditionalGeneration saved in a temp dir (built from config; nothing downloads)."""

from __future__ import annotations

import pytest
import torch
from model_helpers import IMG, PAD, VOCAB, tiny_config

from medmix.model import build_model


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=16),
        text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, vocab_size=VOCAB),
        image_token_index=IMG, vision_feature_layer=-2)
    model = LlavaForConditionalGeneration(config)
    path = tmp_path_factory.mktemp("llava")
    model.save_pretrained(path)
    return path, model.model.multi_modal_projector.eval()


def build(**changes):
    torch.manual_seed(0)
    return build_model(tiny_config(**changes), vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD)


def test_llava_projector_loads_by_name_and_computes_what_llava_does(llava_dir):
    path, theirs = llava_dir
    model = build(projector="llava", projector_path=str(path))  # debug ViT d64 at 32 px: 2x2 patches
    assert sorted(model.projector.state_dict()) == ["linear_1.bias", "linear_1.weight", "linear_2.bias",
                                                     "linear_2.weight"]
    feats = torch.randn(2, 4, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.projector(feats), theirs(feats), rtol=0, atol=0)


def test_projector_weights_that_do_not_fit_name_the_tensor(llava_dir, tmp_path):
    path, _ = llava_dir
    with pytest.raises(ValueError, match=r"missing \['proj.0.bias'.*model.projector = \"llava\""):
        build(projector="mlp", projector_path=str(path))
    from safetensors.torch import save_file
    save_file({"linear_1.weight": torch.zeros(8, 64), "linear_1.bias": torch.zeros(8),
               "linear_2.weight": torch.zeros(8, 8), "linear_2.bias": torch.zeros(8)}, tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match=r"linear_1.bias has shape \(8,\), this model.s projector expects \(64,\)"):
        build(projector="llava", projector_path=str(tmp_path / "p.safetensors"))
