"""model.llava_path: a LLaVA directory (tiny, built from config and saved with its processor;
nothing downloads) becomes a medmix model with the same weights and the same logits as
transformers' LlavaForConditionalGeneration on an image + text prompt; what cannot be
reproduced is a ConfigError naming the field."""

from __future__ import annotations

import json

import pytest
import torch
from llava_helpers import IMAGE_SIZE, NUM_IMAGE_TOKENS, sample_image, save_tiny_llava

from medmix.config import ConfigError, load_config
from medmix.data.config import TokenizerConfig
from medmix.data.images import to_model_input
from medmix.data.tokenizer import load_tokenizer
from medmix.model import build_model
from medmix.model.preprocess import image_preprocess


def medmix_model(path):
    cfg = load_config("debug", [f'model.llava_path="{path}"']).model
    tok = load_tokenizer(TokenizerConfig(), "/nonexistent", cfg.decoder_path)
    torch.manual_seed(1)  # a different seed than the LLaVA's: every weight must come from the files
    model = build_model(cfg, vocab_size=len(tok), image_token_id=tok.image_token_id, pad_token_id=tok.pad_id)
    return cfg, tok, model.eval()


@pytest.mark.parametrize("tower", ["clip", "siglip"])
def test_a_llava_dir_gives_the_same_logits_as_transformers(tmp_path, tower):
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    path = save_tiny_llava(tmp_path / "llava", tower)
    cfg, tok, model = medmix_model(path)
    assert (cfg.vision_path, cfg.decoder_path, cfg.projector_path, cfg.projector) == (str(path),) * 3 + ("llava",)
    assert (cfg.image_size, cfg.num_image_tokens, cfg.vision_feature_layer) == (IMAGE_SIZE, NUM_IMAGE_TOKENS, -2)
    llava = LlavaForConditionalGeneration.from_pretrained(path).eval()
    assert tok.image_token_id == llava.config.image_token_id and len(tok) == llava.config.text_config.vocab_size

    processor = AutoProcessor.from_pretrained(path)
    text = "USER: <image>\nwhat does the chest x-ray show? ASSISTANT:"
    inputs = processor(images=sample_image(), text=text, return_tensors="pt")
    head, tail = text.split("<image>")
    ids = tok.encode(head) + [tok.image_token_id] * NUM_IMAGE_TOKENS + tok.encode(tail)
    assert inputs["input_ids"][0].tolist() == ids  # medmix's encoding is the processor's
    prep = image_preprocess(cfg)
    pixels = torch.from_numpy(to_model_input(sample_image(), prep.size, prep.mean, prep.std))[None]
    torch.testing.assert_close(pixels, inputs["pixel_values"], rtol=0, atol=1e-6)

    with torch.no_grad():
        want = llava(**inputs).logits
        got = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), pixel_values=pixels).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (got[0, -1] - got[0, -2]).abs().max() > 1e-3  # positions differ: not a degenerate comparison


def test_llava_feature_layer_minus_one_is_the_last_block_without_the_final_norm(tmp_path):
    from transformers import LlavaForConditionalGeneration
    path = save_tiny_llava(tmp_path / "llava", "siglip", feature_layer=-1)
    cfg, _, model = medmix_model(path)
    assert cfg.vision_feature_layer == 3  # after block 3 of 3: LLaVA's hidden_states[-1]
    llava = LlavaForConditionalGeneration.from_pretrained(path).eval()
    px = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        want = torch.stack(llava.model.get_image_features(pixel_values=px).pooler_output)
        torch.testing.assert_close(model.encode_images(px), want, rtol=0, atol=1e-6)


def edit_config(path, **changes):
    data = json.loads((path / "config.json").read_text())
    data.update(changes)
    (path / "config.json").write_text(json.dumps(data))


def test_what_medmix_cannot_reproduce_is_named(tmp_path):
    path = save_tiny_llava(tmp_path / "llava", "siglip")
    with pytest.raises(ConfigError, match=r"model.vision_path = .*names another; drop one"):
        load_config("debug", [f'model.llava_path="{path}"', 'model.vision_path="/elsewhere"'])
    with pytest.raises(ConfigError, match=r"model.vision_timm = 'vit_small_patch16_224' names a timm one"):
        load_config("debug", [f'model.llava_path="{path}"', 'model.vision_timm="vit_small_patch16_224"'])
    edit_config(path, vision_feature_select_strategy="default")
    with pytest.raises(ConfigError, match=r"vision_feature_select_strategy = 'default' with a siglip_vision_model"):
        load_config("debug", [f'model.llava_path="{path}"'])
    edit_config(path, vision_feature_select_strategy="full", vision_feature_layer=[-2, -1])
    with pytest.raises(ConfigError, match=r"vision_feature_layer = \[-2, -1\] concatenates several layers"):
        load_config("debug", [f'model.llava_path="{path}"'])
    edit_config(path, model_type="llama")
    with pytest.raises(ConfigError, match=r"model_type 'llama', not 'llava'"):
        load_config("debug", [f'model.llava_path="{path}"'])
    with pytest.raises(ConfigError, match=r"model.llava_path = .*nowhere.* does not exist"):
        load_config("debug", [f'model.llava_path="{tmp_path}/nowhere"'])
