"""Chat templates: a decoder's own prompt format, rendered the same way in training, evaluation and serving.

    msgs = [Message("system", ("Classify the skin lesion.",)),
            Message("user", ("Given a photo ", IMAGE, ".\\nQ: Which condition?",))]
    ids = chat_prompt_ids(tok, msgs, num_image_tokens=16)     # the template's generation prompt
    tail = chat_answer_ids(tok, msgs, "melanoma")              # what training appends (and labels)

An instruct decoder (SmolLM2, Llama 3, Qwen, Gemma) was tuned on conversations in its own
format — ChatML's `<|im_start|>user ... <|im_end|>`, Llama 3's `<|start_header_id|>` headers.
When its tokenizer carries a chat template (`tokenizer_config.json`'s `chat_template`, a
`chat_template.jinja` beside `tokenizer.json`, a GGUF's `tokenizer.chat_template`) and
`tokenizer.chat_template = "auto"`, every prompt goes through it: a task prompt becomes
system (the task's instruction), user/assistant (the text-only exemplar and its answer) and
user (the example); a served chat keeps its own turns.

The template is Jinja, rendered by transformers' renderer (the one `apply_chat_template`
uses), so the text is exactly what the model's authors intended. Message text never reaches
the template: each message is rendered as a private placeholder that is replaced afterwards,
so the template's own control tokens (`<|im_start|>`) become their ids while the same strings
typed by a user, and the literal `<img>` of an exemplar, stay ordinary text; an image slot
becomes `num_image_tokens` image ids where it stood.

The answer the model learns (and generation stops at) ends with the template's end-of-turn
token — the first special token the template writes after an assistant message
(`<|im_end|>`, `<|eot_id|>`); `MedmixTokenizer.eos_id` is that token when a template is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

IMAGE = None
"""A message piece that is one image slot (`num_image_tokens` image ids)."""

ROLES = ("system", "user", "assistant")
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: placeholders no real text contains
_SLOT = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
_PROBE = f"{_OPEN}probe{_CLOSE}"


class ChatTemplateError(ValueError):
    """A chat template that cannot render medmix's turns; names the template's source."""


@dataclass(frozen=True)
class Message:
    """One turn: its role and its content as text pieces and image slots (`IMAGE`), in order."""

    role: str
    pieces: tuple[str | None, ...]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"chat message role {self.role!r}: use one of {', '.join(ROLES)}")


def render_text(template: str, messages: Sequence[dict], *, add_generation_prompt: bool,
                bos: str | None, eos: str | None, source: str = "chat template") -> str:
    """The template's text for `messages` (dicts with role/content), as transformers renders it."""
    import jinja2  # the template errors; loaded with transformers, which renders
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template([list(messages)], chat_template=template,
                                            add_generation_prompt=add_generation_prompt,
                                            bos_token=bos or "", eos_token=eos or "")
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"{source}: the chat template fails on medmix's turns "
                                f"({', '.join(m['role'] for m in messages)}): {exc}; set "
                                f"tokenizer.chat_template = \"none\" to use medmix's plain prompts") from exc
    return rendered[0]


def end_of_turn(template: str, markup: Sequence[str], *, bos: str | None, eos: str | None,
                source: str = "chat template") -> str | None:
    """The first control token (one of `markup`) the template writes after an assistant message."""
    msgs = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _PROBE}]
    text = render_text(template, msgs, add_generation_prompt=False, bos=bos, eos=eos, source=source)
    if _PROBE not in text:
        raise ChatTemplateError(f"{source}: the chat template drops the assistant's message; set "
                                f"tokenizer.chat_template = \"none\"")
    after = text.split(_PROBE, 1)[1]
    found = [(after.find(t), -len(t), t) for t in markup if t and t in after]
    return min(found)[2] if found else None


@lru_cache(maxsize=64)
def _markup_pattern(tokens: tuple[str, ...]) -> re.Pattern:
    longest_first = sorted(tokens, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if tokens else re.compile("(?!)")


def _spans(tok, text: str, contents: Sequence[Sequence[str | None]]) -> list[str | int | None]:
    """Rendered text with placeholders -> spans: text (str), a control token's id (int), an image slot (None)."""
    pattern = _markup_pattern(tok.markup_tokens)
    out: list[str | int | None] = []

    def add_text(s: str) -> None:
        if not s:
            return
        if out and isinstance(out[-1], str):
            out[-1] += s  # neighbouring texts are encoded together, as one string would be
        else:
            out.append(s)

    for i, part in enumerate(_SLOT.split(text)):
        if i % 2:  # a message's content
            for piece in contents[int(part)]:
                if piece is IMAGE:
                    out.append(None)
                else:
                    add_text(piece)
            continue
        for j, chunk in enumerate(pattern.split(part)):
            if j % 2:
                out.append(tok.token_to_id(chunk))
            else:
                add_text(chunk)
    return out


def _ids(tok, spans: list[str | int | None], num_image_tokens: int) -> list[int]:
    ids: list[int] = []
    for s in spans:
        if s is None:
            ids.extend([tok.image_token_id] * num_image_tokens)
        elif isinstance(s, int):
            ids.append(s)
        else:
            ids.extend(tok.encode(s))
    return ids


def _placeholders(messages: Sequence[Message]) -> tuple[list[dict], list[tuple[str | None, ...]]]:
    dicts = [{"role": m.role, "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(messages)]
    return dicts, [m.pieces for m in messages]


def chat_prompt_ids(tok, messages: Sequence[Message], num_image_tokens: int) -> list[int]:
    """Ids of `messages` rendered through `tok.chat_template` with the generation prompt (the
    assistant's header): what the model continues. The template writes BOS itself if it wants one."""
    dicts, contents = _placeholders(messages)
    text = render_text(tok.chat_template, dicts, add_generation_prompt=True, bos=tok.bos_token,
                       eos=tok.eos_token, source=tok.source)
    return _ids(tok, _spans(tok, text, contents), num_image_tokens)


def chat_answer_ids(tok, messages: Sequence[Message], answer: str, end: bool = True) -> list[int]:
    """Ids that follow `chat_prompt_ids(tok, messages)` when the assistant answers `answer`.

    With `end`, up to and including the end-of-turn token (`tok.eos_id`); text the template
    writes after it (a newline) belongs to the next turn and is left out.
    """
    dicts, contents = _placeholders(messages)
    kw = {"bos": tok.bos_token, "eos": tok.eos_token, "source": tok.source}
    prompt = render_text(tok.chat_template, dicts, add_generation_prompt=True, **kw)
    full = render_text(tok.chat_template, dicts + [{"role": "assistant", "content": _PROBE}],
                       add_generation_prompt=False, **kw)
    if not full.startswith(prompt) or _PROBE not in full[len(prompt):]:
        raise ChatTemplateError(f"{tok.source}: the chat template renders an assistant turn that does not "
                                f"continue its own generation prompt; set tokenizer.chat_template = \"none\"")
    before, after = full[len(prompt):].split(_PROBE, 1)
    ids = _ids(tok, _spans(tok, before, contents), 0) + tok.encode(answer)
    if not end:
        return ids
    tail = _ids(tok, _spans(tok, after, contents), 0)
    if tok.eos_id in tail:
        return ids + tail[:tail.index(tok.eos_id) + 1]
    return ids + [tok.eos_id]  # a template whose turns end in plain text: the answer ends with EOS


def chat_messages(system: str, turns: Sequence[tuple[str, str]], num_images: int,
                  placeholder: str) -> list[Message]:
    """Messages from text turns whose last `num_images` `placeholder`s are image slots (the
    earlier ones, an exemplar's, stay text)."""
    total = sum(text.count(placeholder) for _, text in turns)
    if total < num_images:
        raise ValueError(f"prompt has {total} {placeholder} slot(s) but the example has {num_images} image(s)")
    as_text = total - num_images
    out = [Message("system", (system,))] if system else []
    for role, text in turns:
        parts = text.split(placeholder)
        pieces: list[str | None] = [parts[0]]
        for part in parts[1:]:
            if as_text > 0:
                pieces[-1] = (pieces[-1] or "") + placeholder + part
                as_text -= 1
            else:
                pieces.extend([IMAGE, part])
        out.append(Message(role, tuple(p for p in pieces if p != "")))
    return out
