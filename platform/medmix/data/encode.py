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

Too long for `max_seq_len`? First the exemplar is dropped, then the example's context text is
cut (the longest free-text context field first, keeping its head; the question last, keeping
its tail, where the actual ask is). Image runs and the target are never cut; if the example
still does not fit, `EncodeError` says by how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from medmix.tasks import IMAGE_PLACEHOLDER, render_prompt, render_target
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


def fit_prompt(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
               budget: int, exemplar: bool = True) -> tuple[list[int], bool, bool]:
    """Prompt ids of at most `budget` tokens: (ids, exemplar kept, context truncated).

    Drops the exemplar first, then cuts context text (see the module docstring).
    """
    def ids_for(ctx: dict[str, Any], use_exemplar: bool) -> list[int]:
        return prompt_ids(tok, render_prompt(spec, ctx, num_images, exemplar=use_exemplar),
                          num_images, num_image_tokens)

    for use_exemplar in ((True, False) if exemplar and spec.exemplar is not None else (False,)):
        ids = ids_for(context, use_exemplar)
        if len(ids) <= budget:
            return ids, use_exemplar, False
    ctx = dict(context)
    for key, keep_head in _truncatable(spec, ctx):
        n = len(ctx[key].split())
        lo, hi, best = 0, n - 1, None  # largest word count in [0, n-1] that fits
        while lo <= hi:
            mid = (lo + hi) // 2
            trial = {**ctx, key: _cut(ctx[key], mid, keep_head)}
            ids = ids_for(trial, False)
            if len(ids) <= budget:
                best, lo = (mid, ids), mid + 1
            else:
                hi = mid - 1
        if best is not None:
            return best[1], False, True
        ctx[key] = ""  # even empty does not fit: drop this field and cut the next one
    shortest = len(ids_for(ctx, False))
    raise EncodeError(f"task {spec.name}: the prompt needs {shortest} tokens without its exemplar and "
                      f"context text (images: {num_images} x {num_image_tokens} tokens), more than the "
                      f"{budget} left for it; raise stream.max_seq_len or lower model.num_image_tokens")


def encode_example(tok, spec: TaskSpec, context: dict[str, Any], target: str, num_images: int,
                   num_image_tokens: int, max_seq_len: int, exemplar: bool = True) -> EncodedExample:
    """[bos] prompt target [eos] with labels on target + eos only.

    Args:
        tok: a `MedmixTokenizer` (anything with encode/image_token_id/bos_id/eos_id).
        num_images: images this example carries (each becomes `num_image_tokens` ids).
        max_seq_len: the most tokens the whole sequence may hold.
        exemplar: render the one-shot exemplar (dropped anyway when it does not fit).
    """
    target_ids = tok.encode(render_target(spec, target))
    budget = max_seq_len - len(target_ids) - 2  # bos, eos
    if budget < 0:
        raise EncodeError(f"task {spec.name}: the target alone is {len(target_ids)} tokens, more than "
                          f"max_seq_len = {max_seq_len} allows; raise stream.max_seq_len")
    ids, kept, truncated = fit_prompt(tok, spec, context, num_images, num_image_tokens, budget, exemplar)
    prefix = [tok.bos_id] + ids
    return EncodedExample(
        input_ids=prefix + target_ids + [tok.eos_id],
        labels=[IGNORE_INDEX] * len(prefix) + target_ids + [tok.eos_id],
        num_images=num_images, num_prompt_tokens=len(prefix), exemplar=kept, truncated=truncated)


def encode_prompt(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
                  max_seq_len: int, exemplar: bool = True) -> EncodedExample:
    """[bos] prompt, for generation; `max_seq_len` bounds the prompt (leave room for new tokens)."""
    ids, kept, truncated = fit_prompt(tok, spec, context, num_images, num_image_tokens,
                                      max_seq_len - 1, exemplar)
    prefix = [tok.bos_id] + ids
    return EncodedExample(input_ids=prefix, labels=None, num_images=num_images,
                          num_prompt_tokens=len(prefix), exemplar=kept, truncated=truncated)


def encode_options(tok, spec: TaskSpec, context: dict[str, Any], num_images: int, num_image_tokens: int,
                   max_seq_len: int, options: Sequence[str] | None = None, exemplar: bool = True,
                   with_eos: bool = True) -> list[EncodedExample]:
    """One sequence per answer option, all with the same prompt, labels on the option only.

    The log-likelihood of option i is the sum of log p(labels) of sequence i; `with_eos` also
    scores "the answer ends here", which separates "yes" from "yes, but ...".

    Args:
        options: the candidates (default: the example's options, `spec.options_for(context)`).
    """
    options = list(options if options is not None else spec.options_for(context))
    if not options:
        raise EncodeError(f"task {spec.name}: no options to score (kind {spec.kind})")
    tails = [tok.encode(render_target(spec, o)) + ([tok.eos_id] if with_eos else []) for o in options]
    budget = max_seq_len - 1 - max(len(t) for t in tails)
    if budget < 0:
        raise EncodeError(f"task {spec.name}: the longest option is {max(map(len, tails))} tokens, "
                          f"more than max_seq_len = {max_seq_len} allows")
    ids, kept, truncated = fit_prompt(tok, spec, context, num_images, num_image_tokens, budget, exemplar)
    prefix = [tok.bos_id] + ids
    return [EncodedExample(input_ids=prefix + t, labels=[IGNORE_INDEX] * len(prefix) + t,
                           num_images=num_images, num_prompt_tokens=len(prefix), exemplar=kept,
                           truncated=truncated) for t in tails]
