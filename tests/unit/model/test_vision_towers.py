"""Vision towers beyond the scale ladder: Hugging Face SigLIP/CLIP directories (tiny, built from
config and saved with save_pretrained — nothing downloads), timm models with their own patch size,
the feature layer, the tower's own preprocessing, exports that rebuild the tower, and the errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from model_helpers import BOS, IMG, PAD, VOCAB, img, pixels, right_pad, tiny_config

from medmix.config import ConfigError, load_config
from medmix.data.images import to_model_input
from medmix.model import build_model, load_exported, save_exported
from medmix.model.export_meta import ExportMeta
from medmix.model.preprocess import IMAGENET_MEAN, image_preprocess
from medmix.train.fsdp import transformer_blocks

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
             image_size=32, patch_size=8)


def save_siglip(path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(**TOWER)).save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def save_clip(path):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(**TOWER)).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return save_siglip(tmp_path_factory.mktemp("siglip"))


def build(**changes):
    torch.manual_seed(0)
    return build_model(tiny_config(**changes), vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD)


@pytest.mark.parametrize("layer", [-1, -2])
def test_siglip_dir_features_are_the_towers_own(siglip_dir, layer):
    from transformers import SiglipVisionModel
    model = build(vision_path=str(siglip_dir), vision_feature_layer=layer)
    assert model.vision.grid_size == (4, 4) and model.vision.embed_dim == 32 and model.vision.patch_size == 8
    ref = SiglipVisionModel.from_pretrained(siglip_dir).eval()
    model.eval()
    px = pixels(2)
    with torch.no_grad():
        out = ref(pixel_values=px, output_hidden_states=True)
        want = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        torch.testing.assert_close(model.vision(px), want, rtol=0, atol=0)
    assert any(type(b).__name__ == "SiglipEncoderLayer" for b in transformer_blocks(model))  # FSDP units


def test_clip_dir_drops_the_class_token_and_takes_the_second_to_last_layer(tmp_path):
    from transformers import CLIPVisionModel
    path = save_clip(tmp_path / "clip")
    model = build(vision_path=str(path), vision_feature_layer=-2).eval()
    ref = CLIPVisionModel.from_pretrained(path).eval()
    px = pixels(1)
    with torch.no_grad():
        want = ref(pixel_values=px, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(model.vision(px), want, rtol=0, atol=0)
    prep = image_preprocess(tiny_config(vision_path=str(path)))
    assert prep.size == 32 and prep.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_the_towers_preprocessing_matches_its_processor_and_reaches_the_stream(siglip_dir):
    from transformers import AutoImageProcessor
    from medmix.data.stream import make_batch_spec
    prep = image_preprocess(tiny_config(vision_path=str(siglip_dir)))
    assert (prep.size, prep.mean, prep.std) == (32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ours = to_model_input(image, prep.size, prep.mean, prep.std)
    theirs = AutoImageProcessor.from_pretrained(siglip_dir)(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert image_preprocess(tiny_config()).mean == IMAGENET_MEAN  # the scale ladder keeps ImageNet's

    class Plan:
        task_names, orders, seed = ["t"], {}, 0
    spec = make_batch_spec(Plan(), "/store", None, 32, 4, load_config("debug").stream, prep)
    assert (spec.image_mean, spec.image_std) == (prep.mean, prep.std)


def test_export_rebuilds_the_hf_tower_without_its_directory(siglip_dir, tmp_path):
    tower = shutil.copytree(siglip_dir, tmp_path / "tower")
    model = build(vision_path=str(tower), vision_feature_layer=-2).eval()
    prep = image_preprocess(model.config)
    out = save_exported(model, tmp_path / "export", meta={"image_size": 32, "image_mean": list(prep.mean),
                                                         "image_std": list(prep.std)})
    shutil.rmtree(tower)  # the export alone must rebuild it
    meta = ExportMeta.read(out)
    assert meta.image_mean == (0.5, 0.5, 0.5) and meta.vision_config["model_type"] == "siglip_vision_model"
    loaded, _ = load_exported(out)
    ids, mask, _ = right_pad([[BOS, 5] + img(1) + [6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask, pixel_values=pixels(1)).logits,
                                   model(ids, mask, pixel_values=pixels(1)).logits, rtol=0, atol=0)


def test_a_timm_model_brings_its_own_patch_size():
    model = build(vision_timm="vit_small_patch8_224", image_size=32, num_image_tokens=4, vision_feature_layer=-2)
    assert model.vision.patch_size == 8 and model.vision.grid_size == (4, 4)
    assert model.vision(pixels(1)).shape == (1, 16, 384)  # the 11th of 12 blocks, every patch
    ids, mask, labels = right_pad([[BOS, 5] + img(1) + [6, 7]], targets=[2])
    assert torch.isfinite(model(ids, mask, labels=labels, pixel_values=pixels(1)).loss)


def check(**changes):
    from medmix.train.launcher import check_model
    cfg = load_config("debug")
    cfg.model = dataclasses.replace(cfg.model, **changes)
    check_model(cfg)


def test_bad_towers_fail_before_any_worker_naming_the_path(tmp_path, siglip_dir):
    check(vision_path=str(siglip_dir), image_size=32)  # a good one passes
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"empty: not a Hugging Face model directory \(no config.json\)"):
        check(vision_path=str(tmp_path / "empty"), image_size=32)
    from transformers import LlamaConfig
    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "llama")
    (tmp_path / "llama" / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 32}}))
    with pytest.raises(ConfigError, match="model_type 'llama' is not a supported vision tower"):
        check(vision_path=str(tmp_path / "llama"), image_size=32)
    with pytest.raises(ConfigError, match=r"model.image_size = 64, but the tower at .* takes 32 px"):
        check(vision_path=str(siglip_dir), image_size=64)
    with pytest.raises(ConfigError, match="does not yield patch tokens"):
        check(vision_timm="resnet18", image_size=32)
    with pytest.raises(ConfigError, match="'not_a_model' is not a timm model"):
        check(vision_timm="not_a_model")
    with pytest.raises(ConfigError, match="vision_feature_layer = -9: the tower has 3 blocks"):
        check(vision_path=str(siglip_dir), image_size=32, vision_feature_layer=-9)
    noprep = shutil.copytree(siglip_dir, tmp_path / "noprep")
    (noprep / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError, match="noprep: no preprocessor_config.json"):
        check(vision_path=str(noprep), image_size=32)


def test_more_image_tokens_than_the_tower_has_patches_is_an_error(siglip_dir):
    with pytest.raises(ValueError, match="model.num_image_tokens = 32 is more than the 16 patches"):
        build(vision_path=str(siglip_dir), num_image_tokens=32)


def test_bad_decoders_and_projectors_fail_before_any_worker_naming_the_path(tmp_path, siglip_dir):
    from transformers import LlamaConfig, SiglipVisionConfig
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"model.decoder_path .*empty: not a Hugging Face model directory"):
        check(decoder_path=str(tmp_path / "empty"))
    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "noweights")
    with pytest.raises(ConfigError, match=r"noweights: config.json but no weights"):
        check(decoder_path=str(tmp_path / "noweights"))
    SiglipVisionConfig(hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       image_size=32, patch_size=16).save_pretrained(tmp_path / "tower")
    (tmp_path / "tower" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"model_type 'siglip_vision_model' is not a causal language model"):
        check(decoder_path=str(tmp_path / "tower"))
    # a projector saved for another pair of hidden sizes: named with both sizes, before any worker
    from safetensors.torch import save_file
    save_file({"proj.0.weight": torch.zeros(48, 16), "proj.0.bias": torch.zeros(48),
               "proj.2.weight": torch.zeros(48, 48), "proj.2.bias": torch.zeros(48)}, tmp_path / "p.safetensors")
    with pytest.raises(ConfigError, match=r"p.safetensors: proj.0.\w+ has shape \(48,.*hidden sizes do not "
                                          r"match \(this model's tower has hidden size 64"):
        check(projector_path=str(tmp_path / "p.safetensors"))
