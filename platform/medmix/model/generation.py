"""Inference on already-tokenised inputs: `generate()` with the KV cache, `score_options()`.

    new_ids = generate(model, [prompt_ids, ...], pixel_values, max_new_tokens=64,
                       eos_token_id=tok.eos_id)                       # greedy
    new_ids = generate(model, prompts, pixels, temperature=0.7, top_p=0.9, seed=1, ...)
    scores = score_options(model, [prompt_ids], [[opt_a_ids, opt_b_ids]], pixel_values)
    scores[0].logprobs, scores[0].probs, scores[0].best

Both take token-id lists and pixel tensors, so they work with any tokenizer: the caller
encodes (`medmix.data.encode`) and decodes. `pixel_values` holds every prompt's images in
prompt order (the order their `<img>` runs appear), exactly as in training.

Batching: `generate` left-pads the prompts so every row's next token sits in the last
column; positions come from the attention mask (cumsum), so padding does not shift rotary
positions and a left-padded row decodes exactly as it would alone. The prompt is encoded once
(images spliced in), then each step feeds one token per row through the decoder's KV cache.
`use_cache=False` recomputes the whole sequence every step — slow, kept as the reference the
cache is tested against. Neither function imports a tokenizer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import torch

from medmix.model.multimodal import IGNORE_INDEX, MultimodalLM, token_loss_sums


def _device(model: MultimodalLM) -> torch.device:
    return model.decoder.get_input_embeddings().weight.device


def _cache_kwarg(decoder) -> str:
    # transformers renamed `past_key_values` to `cache` in 5.2x; accept both versions
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(decoder):
    from transformers import DynamicCache
    try:
        return DynamicCache(config=decoder.config)  # layer types from the config (sliding, ...)
    except TypeError:  # older transformers: layers are created lazily
        return DynamicCache()


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, max_len), rows right-aligned."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token (start it with BOS)")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _sample(logits: torch.Tensor, temperature: float, top_p: float,
            generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) fp32 logits -> (B,) next ids: argmax at temperature 0, else top-p sampling."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: MultimodalLM, prompts: Sequence[Sequence[int]],
             pixel_values: torch.Tensor | None = None, *, max_new_tokens: int = 64,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
             use_cache: bool = True) -> list[list[int]]:
    """Continue each prompt; returns the new token ids per prompt, without the stop token.

    Args:
        prompts: token ids per prompt (BOS included), `<img>` runs where images go.
        pixel_values: (N, 3, S, S) the prompts' images in order, or None for text only.
        eos_token_id: id (or ids) that end a row; None runs `max_new_tokens` steps.
        temperature: 0 = greedy; > 0 samples from softmax(logits / temperature).
        top_p: nucleus sampling mass (1.0 = the whole distribution).
        seed: seeds the sampler's own generator (the global RNG is left alone).
        use_cache: False recomputes the full sequence each step (reference path).
    """
    device = _device(model)
    pad = pad_token_id if pad_token_id is not None else (model.pad_token_id or 0)
    stops = torch.tensor([] if eos_token_id is None else
                         ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)),
                         dtype=torch.long, device=device)
    generator = None
    if temperature > 0 and seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        ids, mask = left_pad(prompts, pad, device)
        embeds = model.embed(ids, None if pixel_values is None else pixel_values.to(device))
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        decoder, cache_kw = model.decoder, _cache_kwarg(model.decoder)
        cache = _new_cache(decoder) if use_cache else None
        banned = [model.image_token_id] + ([pad] if pad not in stops.tolist() else [])
        out_tokens: list[torch.Tensor] = []
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        step_embeds, step_pos = embeds, positions
        for _ in range(max_new_tokens):
            kwargs = {cache_kw: cache} if use_cache else {}
            out = decoder(inputs_embeds=step_embeds, attention_mask=mask, position_ids=step_pos,
                          use_cache=use_cache, logits_to_keep=1, **kwargs)
            logits = out.logits[:, -1].float()
            logits[:, banned] = float("-inf")  # never emit <img> or padding
            nxt = _sample(logits, temperature, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            out_tokens.append(nxt)
            done = done | torch.isin(nxt, stops)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            new_pos = positions[:, -1:] + 1
            positions = torch.cat([positions, new_pos], dim=1)
            new_embed = decoder.get_input_embeddings()(nxt[:, None])
            if use_cache:
                step_embeds, step_pos = new_embed, new_pos
            else:
                embeds = torch.cat([embeds, new_embed], dim=1)
                step_embeds, step_pos = embeds, positions
    finally:
        model.train(was_training)
    if not out_tokens:
        return [[] for _ in prompts]
    rows = torch.stack(out_tokens, dim=1).tolist()
    stop_set = set(stops.tolist())
    result = []
    for row in rows:
        cut = next((k for k, t in enumerate(row) if t in stop_set), len(row))
        result.append(row[:cut])
    return result


@dataclass
class OptionScores:
    """Scores of one prompt's answer options."""

    logprobs: list[float]
    """sum of the option's token log-probabilities given the prompt"""
    probs: list[float]
    """softmax of `logprobs` over the options (probabilities normalised over the options)"""
    num_tokens: list[int]
    """tokens per option (divide `logprobs` by it for a length-normalised score)"""

    @property
    def best(self) -> int:
        return max(range(len(self.logprobs)), key=self.logprobs.__getitem__)


@torch.no_grad()
def score_options(model: MultimodalLM, prompts: Sequence[Sequence[int]],
                  options: Sequence[Sequence[Sequence[int]]] | Sequence[Sequence[int]],
                  pixel_values: torch.Tensor | None = None, *, batch_size: int = 32,
                  pad_token_id: int | None = None) -> list[OptionScores]:
    """Log-likelihood of each option continuation given its prompt, batched.

    Args:
        prompts: token ids per prompt, `<img>` runs where images go.
        options: per prompt, a list of option token-id lists; or one list of options shared
            by every prompt. Include the EOS id in each option to score "the answer ends here".
        pixel_values: (N, 3, S, S) the prompts' images in prompt order.
        batch_size: (prompt, option) rows per decoder forward.
    """
    if options and options[0] and isinstance(options[0][0], int):
        options = [options] * len(prompts)  # shared options
    if len(options) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but option lists for {len(options)}")
    device = _device(model)
    pad = pad_token_id if pad_token_id is not None else (model.pad_token_id or 0)
    was_training = model.training
    model.eval()
    try:
        # encode each image once, then hand every (prompt, option) row its prompt's features
        per_prompt = [model.count_images(torch.as_tensor(list(p))) for p in prompts]
        feats = None
        if pixel_values is not None and pixel_values.shape[0] > 0:
            if pixel_values.shape[0] != sum(per_prompt):
                raise ValueError(f"prompts hold {sum(per_prompt)} images (<img> runs) but "
                                 f"pixel_values has {pixel_values.shape[0]}")
            feats = model.encode_images(pixel_values.to(device))
        starts = [sum(per_prompt[:i]) for i in range(len(prompts))]
        rows = [(i, j) for i, opts in enumerate(options) for j in range(len(opts))]
        for i, opts in enumerate(options):
            if not opts or any(len(o) == 0 for o in opts):
                raise ValueError(f"prompt {i}: every option needs at least one token")
        logprob = {}
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo:lo + batch_size]
            seqs = [list(prompts[i]) + list(options[i][j]) for i, j in chunk]
            width = max(map(len, seqs))
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, ((i, j), seq) in enumerate(zip(chunk, seqs)):
                ids[r, :len(seq)] = torch.as_tensor(seq)
                mask[r, :len(seq)] = 1
                labels[r, len(prompts[i]):len(seq)] = torch.as_tensor(list(options[i][j]))
            row_feats = None
            if feats is not None:
                row_feats = torch.cat([feats[starts[i]:starts[i] + per_prompt[i]] for i, _ in chunk])
            embeds = model.embed(ids.to(device), image_features=row_feats)
            logits = model.decoder(inputs_embeds=embeds, attention_mask=mask.to(device), use_cache=False).logits
            loss, _ = token_loss_sums(logits, labels.to(device))
            for (i, j), v in zip(chunk, (-loss).tolist()):
                logprob[(i, j)] = v
    finally:
        model.train(was_training)
    out = []
    for i, opts in enumerate(options):
        lp = torch.tensor([logprob[(i, j)] for j in range(len(opts))], dtype=torch.float64)
        out.append(OptionScores(logprobs=lp.tolist(), probs=torch.softmax(lp, 0).tolist(),
                                num_tokens=[len(o) for o in opts]))
    return out
