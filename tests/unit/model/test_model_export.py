"""Export: one safetensors file + config.json; loading gives identical logits and never unpickles."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from model_helpers import BOS, build_tiny, img, pixels, right_pad

from medmix.model import generate, load_exported, save_exported


@pytest.fixture
def no_pickle(monkeypatch):
    """Fail the test if anything calls torch.load (the pickle path)."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called while loading an export")
    monkeypatch.setattr(torch, "load", refuse)


def batch():
    ids, mask, _ = right_pad([[BOS, 5] + img(1) + [6, 7], [BOS] + img(2) + [8]])
    return ids, mask, pixels(3)


def test_round_trip_gives_identical_logits_and_generations(tmp_path, no_pickle):
    model = build_tiny(seed=1).eval()
    ids, mask, px = batch()
    want = model(ids, mask, pixel_values=px).logits
    out = save_exported(model, tmp_path / "export", meta={"bos_id": BOS, "eos_id": 2, "step": 7})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded, meta = load_exported(out)
    assert not loaded.training
    got = loaded(ids, mask, pixel_values=px).logits
    assert torch.equal(got, want)
    assert meta["meta"] == {"bos_id": BOS, "eos_id": 2, "step": 7}
    assert meta["image_token_id"] == model.image_token_id and meta["vocab_size"] == 64
    assert meta["params"] == model.num_params()
    assert generate(loaded, [[BOS] + img(1) + [5]], px[:1], max_new_tokens=5) == \
        generate(model, [[BOS] + img(1) + [5]], px[:1], max_new_tokens=5)
    json.loads((out / "config.json").read_text())  # plain JSON


def test_tied_embeddings_are_stored_once_and_retied(tmp_path, monkeypatch, no_pickle):
    from safetensors import safe_open

    from medmix.model import scales
    tied = dataclasses.replace(scales.LANGUAGE_SCALES["debug"], tie_embeddings=True)
    monkeypatch.setitem(scales.LANGUAGE_SCALES, "debug", tied)
    model = build_tiny(seed=2).eval()
    assert model.decoder.lm_head.weight is model.decoder.get_input_embeddings().weight
    out = save_exported(model, tmp_path / "tied")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "decoder.lm_head.weight" not in keys and "decoder.model.embed_tokens.weight" in keys
    assert "decoder.model.rotary_emb.inv_freq" in keys  # non-persistent buffers travel too
    loaded, _ = load_exported(out)
    assert loaded.decoder.lm_head.weight is loaded.decoder.get_input_embeddings().weight
    ids, mask, px = batch()
    assert torch.equal(loaded(ids, mask, pixel_values=px).logits, model(ids, mask, pixel_values=px).logits)


def test_bf16_export_and_loading_onto_meta_free_model(tmp_path):
    model = build_tiny(seed=3)
    out = save_exported(model, tmp_path / "bf16", dtype=torch.bfloat16)
    loaded, meta = load_exported(out)
    assert meta["dtype"] == "bfloat16"
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    assert not any(t.is_meta for t in list(loaded.parameters()) + list(loaded.buffers()))


def test_bad_exports_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a medmix model export"):
        load_exported(tmp_path)
    out = save_exported(build_tiny(), tmp_path / "x")
    data = json.loads((out / "config.json").read_text())
    data["decoder_config"]["hidden_size"] = 32  # a different architecture than the weights
    (out / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="shape"):
        load_exported(out)
    data["model"]["num_image_tokens"] = 9  # more tokens than a 32 px image has patches
    (out / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="model.num_image_tokens = 9"):
        load_exported(out)
