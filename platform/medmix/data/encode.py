"""Prompt + target -> token ids and labels: the one encoder training, evaluation and serving share.

    ex = encode_example(tok, get_task("derm_pad"), context, "melanoma", num_images=1,
                        num_image_tokens=16, max_seq_len=512)
    ex.input_ids   # [bos] prompt (with 16 image ids at the image slot) target [eos]
    ex.labels      # -100 everywhere except the target tokens and eos

The prompt comes from `medmix.tasks.render_prompt`. It holds one literal `<img>` per image
slot: the exemplar's (text-only, as in Med-PaLM M) come first, the example's last. The last
`num_images` occurrences become runs of `num_image_tokens` image ids; earlier ones are encoded
as the text "<img>" (the tokenizer never turns that text into the image id).

Labels are aligned with `input_ids` (the Hugging Face convention: the model shifts them).

A tokenizer with a chat template (`tok.chat_template`, see `medmix.data.chat`) renders the same
prompt as turns instead — system (the instruction), the exemplar as a user turn and its answer,
the example as the last user turn — and the target as the assistant's answer ending in the
template's end-of-turn token. Which of the two applies is the tokenizer's business, so
training, evaluation and serving, which all encode here, always agree.

Too long for `max_seq_len`? First the exemplar is dropped, then the example's context text is
cut (the longest free-text context field first, keeping its head; the question last, keeping
its tail, where the actual ask is). Image runs and the target are never cut; if the example
still does not fit, `EncodeError` says by how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from medmix.data.chat import Message, chat_answer_ids, chat_messages, chat_prompt_ids
from medmix.tasks import IMAGE_PLACEHOLDER, prompt_turns, render_prompt, render_target
from medmix.tasks.spec import TaskSpec

IGNORE_INDEX = -100  # label of positions that carry no loss (torch cross_entropy's default)


class EncodeError(ValueError):
    """An example that cannot be encoded within max_seq_len (the caller adds shard/row)."""


@dataclass
class EncodedExample:
    """One tokenized example. `labels` is None for an inference prompt."""

    input_ids: list[int]
    labels: list[int] | None
    num_images: int
    num_prompt_tokens: int
    """Positions before the target: bos + prompt (including image ids)."""
    exemplar: bool
    """Whether the one-shot exemplar is in the prompt (False when dropped to fit)."""
    truncated: bool
    """Whether context text was cut to fit."""

    def __len__(self) -> int:
        return len(self.input_ids)


def prompt_ids(tok, prompt: str, num_images: int, num_image_tokens: int) -> list[int]:
    """Token ids of a rendered prompt with its last `num_images` `<img>` slots expanded."""
    parts = prompt.split(IMAGE_PLACEHOLDER)
    slots = len(parts) - 1
    if slots < num_images:
        raise EncodeError(f"prompt has {slots} {IMAGE_PLACEHOLDER} slot(s) but the example has "
                          f"{num_images} image(s)")
    as_text = slots - num_images  # the exemplar's placeholders stay text
    pieces = [IMAGE_PLACEHOLDER.join(parts[:as_text + 1])] + parts[as_text + 1:]
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids.extend([tok.image_token_id] * num_image_tokens)
        ids.extend(tok.encode(piece))
    return ids


def _truncatable(spec: TaskSpec, context: dict[str, Any]) -> list[tuple[str, bool]]:
    """(field, keep_head) in the order fields are cut: context fields longest first, then the question."""
    fields = [k for k, _ in spec.context_fields if isinstance(context.get(k), str) and context[k].strip()]
    fields.sort(key=lambda k: (-len(context[k]), k))
    out = [(k, True) for k in fields]
    if isinstance(context.get("question"), str) and context["question"].strip():
        out.append(("question", False))
    return out


def _cut(text: str, words: int, keep_head: bool) -> str:
    parts = text.split()
    return " ".join(parts[:words] if keep_head else parts[len(parts) - words:])


def uses_chat_template(tok) -> bool:
    """Whether prompts for `tok` go through its chat template (see `medmix.data.chat`)."""
    return getattr(tok, "chat_template", None) is not None


def _messages(spec: TaskSpec, context: dict[str, Any], num_images: int, exemplar: bool) -> list[Message]:
    system, turns = prompt_turns(spec, context, num_images, exemplar=exemplar)
    try:
        return chat_messages(system, turns, num_images, IMAGE_PLACEHOLDER)
    except ValueError as exc:
        raise EncodeError(str(exc)) from None


def _prompt(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
            exemplar: bool) -> tuple[list[int], list[Message] | None]:
    """(ids of the whole prompt, BOS included; its chat messages, None without a template)."""
    if uses_chat_template(tok):
        messages = _messages(spec, context, num_images, exemplar)
        return chat_prompt_ids(tok, messages, num_image_tokens), messages
    text = render_prompt(spec, context, num_images, exemplar=exemplar)
    return [tok.bos_id] + prompt_ids(tok, text, num_images, num_image_tokens), None


def _answer(tok, spec: TaskSpec, messages: list[Message] | None, target: str, end: bool = True) -> list[int]:
    """The ids that follow the prompt for `target`: labelled in training, scored in evaluation."""
    if messages is not None:
        return chat_answer_ids(tok, messages, target.strip(), end=end)
    return tok.encode(render_target(spec, target)) + ([tok.eos_id] if end else [])


def _fit(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
         budget: int, exemplar: bool = True) -> tuple[list[int], bool, bool, list[Message] | None]:
    def ids_for(ctx: dict[str, Any], use_exemplar: bool) -> tuple[list[int], list[Message] | None]:
        return _prompt(tok, spec, ctx, num_images, num_image_tokens, use_exemplar)

    for use_exemplar in ((True, False) if exemplar and spec.exemplar is not None else (False,)):
        ids, messages = ids_for(context, use_exemplar)
        if len(ids) <= budget:
            return ids, use_exemplar, False, messages
    ctx = dict(context)
    for key, keep_head in _truncatable(spec, ctx):
        n = len(ctx[key].split())
        lo, hi, best = 0, n - 1, None  # largest word count in [0, n-1] that fits
        while lo <= hi:
            mid = (lo + hi) // 2
            trial = {**ctx, key: _cut(ctx[key], mid, keep_head)}
            ids, messages = ids_for(trial, False)
            if len(ids) <= budget:
                best, lo = (ids, messages), mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best[0], False, True, best[1]
        ctx[key] = ""  # even empty does not fit: drop this field and cut the next one
    shortest = len(ids_for(ctx, False)[0])
    raise EncodeError(f"task {spec.name}: the prompt needs {shortest} tokens without its exemplar and "
                      f"context text (images: {num_images} x {num_image_tokens} tokens), more than the "
                      f"{budget} left for it; raise stream.max_seq_len or lower model.num_image_tokens")


def fit_prompt(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
               budget: int, exemplar: bool = True) -> tuple[list[int], bool, bool]:
    """Prompt ids (BOS, or the chat template's opening, included) of at most `budget` tokens:
    (ids, exemplar kept, context truncated).

    Drops the exemplar first, then cuts context text (see the module docstring).
    """
    ids, kept, truncated, _ = _fit(tok, spec, context, num_images, num_image_tokens, budget, exemplar)
    return ids, kept, truncated


def encode_example(tok, spec: TaskSpec, context: dict[str, Any], target: str, num_images: int,
                   num_image_tokens: int, max_seq_len: int, exemplar: bool = True) -> EncodedExample:
    """[bos] prompt target [eos] with labels on target + eos only (with a chat template: the
    rendered turns, and the assistant's answer through its end-of-turn token labelled).

    Args:
        tok: a `MedmixTokenizer` (anything with encode/image_token_id/bos_id/eos_id).
        num_images: images this example carries (each becomes `num_image_tokens` ids).
        max_seq_len: the most tokens the whole sequence may hold.
        exemplar: render the one-shot exemplar (dropped anyway when it does not fit).
    """
    full = _messages(spec, context, num_images, exemplar) if uses_chat_template(tok) else None
    target_ids = _answer(tok, spec, full, target)
    budget = max_seq_len - len(target_ids)
    if budget < 1:
        raise EncodeError(f"task {spec.name}: the target alone is {len(target_ids)} tokens, more than "
                          f"max_seq_len = {max_seq_len} allows; raise stream.max_seq_len")
    prefix, kept, truncated, messages = _fit(tok, spec, context, num_images, num_image_tokens, budget, exemplar)
    if messages is not None and messages != full:
        target_ids = _answer(tok, spec, messages, target)
    return EncodedExample(
        input_ids=prefix + target_ids,
        labels=[IGNORE_INDEX] * len(prefix) + target_ids,
        num_images=num_images, num_prompt_tokens=len(prefix), exemplar=kept, truncated=truncated)


def encode_prompt(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
                  max_seq_len: int, exemplar: bool = True) -> EncodedExample:
    """[bos] prompt (or the chat template's turns and generation prompt), for generation;
    `max_seq_len` bounds the prompt (leave room for new tokens)."""
    prefix, kept, truncated, _ = _fit(tok, spec, context, num_images, num_image_tokens, max_seq_len, exemplar)
    return EncodedExample(input_ids=prefix, labels=None, num_images=num_images,
                          num_prompt_tokens=len(prefix), exemplar=kept, truncated=truncated)


def encode_options(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
                   max_seq_len: int, options: Sequence[str] | None = None, exemplar: bool = True,
                   with_eos: bool = True) -> list[EncodedExample]:
    """One sequence per answer option, all with the same prompt, labels on the option only.

    The log-likelihood of option i is the sum of log p(labels) of sequence i; `with_eos` also
    scores "the answer ends here" (EOS, or the chat template's end of turn), which separates
    "yes" from "yes, but ...".

    Args:
        options: the candidates (default: the example's options, `spec.options_for(context)`).
    """
    options = list(options if options is not None else spec.options_for(context))
    if not options:
        raise EncodeError(f"task {spec.name}: no options to score (kind {spec.kind})")
    full = _messages(spec, context, num_images, exemplar) if uses_chat_template(tok) else None
    tails = [_answer(tok, spec, full, o, end=with_eos) for o in options]
    budget = max_seq_len - max(len(t) for t in tails)
    if budget < 1:
        raise EncodeError(f"task {spec.name}: the longest option is {max(map(len, tails))} tokens, "
                          f"more than max_seq_len = {max_seq_len} allows")
    prefix, kept, truncated, messages = _fit(tok, spec, context, num_images, num_image_tokens, budget, exemplar)
    if messages is not None and messages != full:
        tails = [_answer(tok, spec, messages, o, end=with_eos) for o in options]
    return [EncodedExample(input_ids=prefix + t, labels=[IGNORE_INDEX] * len(prefix) + t,
                           num_images=num_images, num_prompt_tokens=len(prefix), exemplar=kept,
                           truncated=truncated) for t in tails]
