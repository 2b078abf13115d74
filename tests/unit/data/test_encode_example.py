"""encode: prompt + target -> ids/labels, image slots expanded, fitting to max_seq_len.

Golden counts use a byte tokenizer (byte-level BPE with no merges), so every count is checkable
by hand: tokens of a text = its UTF-8 bytes.
"""

from __future__ import annotations

import pytest

from medmix.data.encode import (IGNORE_INDEX, EncodeError, encode_example, encode_options, encode_prompt,
                                prompt_ids)
from medmix.data.tokenizer import SPECIAL_TOKENS, MedmixTokenizer
from medmix.tasks import get_task, render_prompt


@pytest.fixture(scope="module")
def tok() -> MedmixTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return MedmixTokenizer(t, bos="<bos>", eos="<eos>")


DERM = {"age": 41, "gender": "male", "region": "back", "itch": "yes"}
MEDQA = {"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"]}


def runs(ids: list[int], token: int) -> list[tuple[int, int]]:
    """(start, length) of each run of `token`."""
    out, i = [], 0
    while i < len(ids):
        if ids[i] == token:
            j = i
            while j < len(ids) and ids[j] == token:
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out


@pytest.mark.parametrize("task,context,target,images,per_image,prompt_len,total", [
    # bos + 641 prompt bytes - 5 ("<img>" of the example) + 16 image ids; target " melanoma" + eos
    ("derm_pad", DERM, "melanoma", 1, 16, 653, 663),
    ("medqa", MEDQA, "Pancreas", 0, 16, 307, 317),
    # three slices: the exemplar's two "<img>" stay text, the example's three become 3 x 8 ids
    ("volume_report", {"modality": "MR"}, "No focal lesion.", 3, 8, 291, 309),
])
def test_golden_token_counts(tok, task, context, target, images, per_image, prompt_len, total):
    spec = get_task(task)
    ex = encode_example(tok, spec, context, target, images, per_image, max_seq_len=2048)
    prompt = render_prompt(spec, context, images)
    assert prompt_len == 1 + len(prompt.encode()) - 5 * images + images * per_image
    assert (ex.num_prompt_tokens, len(ex)) == (prompt_len, total)
    assert ex.input_ids[0] == tok.bos_id and ex.input_ids[-1] == tok.eos_id
    assert ex.exemplar and not ex.truncated


def test_labels_cover_target_and_eos_only(tok):
    ex = encode_example(tok, get_task("derm_pad"), DERM, "melanoma", 1, 16, 2048)
    k = ex.num_prompt_tokens
    assert ex.labels[:k] == [IGNORE_INDEX] * k
    assert ex.labels[k:] == ex.input_ids[k:]
    assert tok.decode(ex.labels[k:]) == " melanoma"
    assert len(ex.labels) == len(ex.input_ids)


def test_only_the_examples_slots_become_image_ids(tok):
    spec = get_task("volume_report")
    ex = encode_example(tok, spec, {"modality": "MR"}, "No focal lesion.", 3, 8, 2048)
    assert [n for _, n in runs(ex.input_ids, tok.image_token_id)] == [8, 8, 8]
    text = tok.decode([i for i in ex.input_ids if i != tok.image_token_id])
    assert text.count("<img>") == 2  # the exemplar's placeholders, as text
    # plain text "<img>" never turns into the image id
    assert tok.image_token_id not in prompt_ids(tok, "a <img> b", 0, 8)
    with pytest.raises(EncodeError, match="2 <img> slot"):
        prompt_ids(tok, "a <img> <img> b", 3, 8)


def test_too_long_drops_exemplar_then_truncates_context(tok):
    spec = get_task("mimic3_summary")
    findings = " ".join(f"finding{i}" for i in range(200))
    full = encode_example(tok, spec, {"findings": findings}, "Normal.", 0, 4, 4096)
    without = encode_example(tok, spec, {"findings": findings}, "Normal.", 0, 4, 4096, exemplar=False)
    # room for the example without its exemplar: the exemplar goes, nothing is cut
    ex = encode_example(tok, spec, {"findings": findings}, "Normal.", 0, 4, len(without))
    assert (ex.exemplar, ex.truncated, ex.input_ids) == (False, False, without.input_ids)
    assert len(full) > len(without)
    # less room: the findings are cut (head kept), the target and eos are intact
    ex = encode_example(tok, spec, {"findings": findings}, "Normal.", 0, 4, 600)
    assert (ex.exemplar, ex.truncated) == (False, True)
    assert 590 <= len(ex) <= 600
    text = tok.decode(ex.input_ids)
    assert "finding0 finding1" in text and "finding199" not in text
    assert tok.decode(ex.labels[ex.num_prompt_tokens:]) == " Normal."


def test_truncation_never_cuts_image_runs_and_fails_clearly(tok):
    spec = get_task("cxr_report")
    ctx = {"view": "AP", "indication": " ".join(["persistent cough"] * 100)}
    ex = encode_example(tok, spec, ctx, "Clear lungs.", 1, 64, 400)
    assert ex.truncated and len(ex) <= 400
    assert runs(ex.input_ids, tok.image_token_id) and [n for _, n in runs(ex.input_ids, tok.image_token_id)] == [64]
    with pytest.raises(EncodeError, match="raise stream.max_seq_len"):
        encode_example(tok, spec, ctx, "Clear lungs.", 1, 512, 400)
    with pytest.raises(EncodeError, match="target alone"):
        encode_example(tok, spec, ctx, "x" * 500, 1, 4, 400)


def test_long_question_keeps_its_tail(tok):
    q = " ".join(["A patient presents with fever."] * 60) + " Which drug is first line?"
    ex = encode_example(tok, get_task("medqa"), {"question": q, "options": ["a", "b"]}, "a", 0, 4, 400)
    assert ex.truncated
    assert "Which drug is first line?" in tok.decode(ex.input_ids)


def test_encode_prompt_is_the_training_prefix(tok):
    spec = get_task("derm_pad")
    train = encode_example(tok, spec, DERM, "melanoma", 1, 16, 2048)
    prompt = encode_prompt(tok, spec, DERM, 1, 16, 2048)
    assert prompt.labels is None
    assert prompt.input_ids == train.input_ids[:train.num_prompt_tokens]


def test_encode_options_share_the_prompt(tok):
    spec = get_task("derm_pad")
    seqs = encode_options(tok, spec, DERM, 1, 16, 2048)
    assert len(seqs) == 6
    k = seqs[0].num_prompt_tokens
    assert all(s.input_ids[:k] == seqs[0].input_ids[:k] for s in seqs)
    for s, option in zip(seqs, spec.options):
        assert tok.decode(s.labels[k:]) == " " + option
        assert s.labels[:k] == [IGNORE_INDEX] * k and s.input_ids[-1] == tok.eos_id
    # the prompt is fitted for the longest option, so every option gets the same prompt
    tight = encode_options(tok, spec, DERM, 1, 16, 600)
    assert len({tuple(s.input_ids[:s.num_prompt_tokens]) for s in tight}) == 1
    assert all(len(s) <= 600 for s in tight)
