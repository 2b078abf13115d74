"""generate() with the KV cache and score_options(), on token ids + pixels."""

from __future__ import annotations

import torch
from model_helpers import BOS, EOS, IMG, build_tiny, img, pixels, right_pad

from medmix.model import generate, score_options


def prompts_and_pixels():
    # different lengths (left padding), 0, 1 and 2 images
    prompts = [[BOS] + img(1) + [5], [BOS, 7, 8, 9, 10, 11, 12] + img(2) + [13], [BOS, 20, 21]]
    return prompts, pixels(3)


def test_greedy_with_cache_equals_without_cache_token_by_token():
    model = build_tiny(seed=3)
    prompts, px = prompts_and_pixels()
    cached = generate(model, prompts, px, max_new_tokens=12)
    uncached = generate(model, prompts, px, max_new_tokens=12, use_cache=False)
    assert cached == uncached
    assert all(len(r) == 12 for r in cached)


def test_left_padded_batch_decodes_each_row_as_if_alone():
    model = build_tiny(seed=4)
    prompts, px = prompts_and_pixels()
    batch = generate(model, prompts, px, max_new_tokens=8)
    images = [px[0:1], px[1:3], None]
    for prompt, pv, row in zip(prompts, images, batch):
        assert generate(model, [prompt], pv, max_new_tokens=8) == [row]


def test_never_emits_img_or_pad_and_stops_at_eos():
    model = build_tiny(seed=5)
    head = model.decoder.lm_head  # make <img>, then <pad>, by far the likeliest next tokens
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[IMG], biased.bias[0] = 1e4, 1e3
    model.decoder.lm_head = biased
    out = generate(model, [[BOS, 5, 6]], max_new_tokens=6)[0]
    assert IMG not in out and 0 not in out
    first = generate(model, [[BOS, 5, 6]], max_new_tokens=1)[0][0]
    # the first token is a stop token -> nothing returned; a later one -> cut before it
    assert generate(model, [[BOS, 5, 6]], max_new_tokens=6, eos_token_id=first) == [[]]
    full = generate(model, [[BOS, 5, 6]], max_new_tokens=6)[0]
    stop = full[3]
    cut = generate(model, [[BOS, 5, 6]], max_new_tokens=6, eos_token_id=[stop])[0]
    assert cut == full[:full.index(stop)]


def test_sampling_is_seeded_and_top_p_small_is_greedy():
    model = build_tiny(seed=6)
    prompts, px = prompts_and_pixels()
    a = generate(model, prompts, px, max_new_tokens=10, temperature=1.5, seed=11)
    b = generate(model, prompts, px, max_new_tokens=10, temperature=1.5, seed=11)
    c = generate(model, prompts, px, max_new_tokens=10, temperature=1.5, seed=12)
    assert a == b and a != c
    greedy = generate(model, prompts, px, max_new_tokens=10)
    assert generate(model, prompts, px, max_new_tokens=10, temperature=1.0, top_p=1e-6, seed=1) == greedy


def test_score_options_ranks_the_overfit_option_highest():
    model = build_tiny(seed=7)
    prompt = [BOS, 5, 6] + img(1) + [7]
    options = [[30, 31, EOS], [40, 41, EOS], [50, EOS]]
    px = pixels(1, seed=9)
    ids, mask, labels = right_pad([prompt + options[1]], targets=[len(options[1])])
    before = score_options(model, [prompt], [options], px)[0]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(15):
        loss = model(ids, mask, labels=labels, pixel_values=px).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = score_options(model, [prompt], [options], px)[0]
    assert after.best == 1
    assert after.probs[1] > 0.9 and after.probs[1] > before.probs[1]
    assert abs(sum(after.probs) - 1) < 1e-9
    assert after.num_tokens == [3, 3, 2]
    # log-likelihood = -(summed target loss) of the same sequence through forward()
    out = model(ids, mask, labels=labels, pixel_values=px)
    assert abs(after.logprobs[1] + float(out.example_loss[0].detach())) < 1e-4


def test_score_options_batches_prompts_with_their_own_images():
    model = build_tiny(seed=8)
    prompts, px = prompts_and_pixels()
    options = [[30], [31, 32], [33, 34, 35]]
    together = score_options(model, prompts, options, px, batch_size=4)
    images = [px[0:1], px[1:3], None]
    for prompt, pv, scores in zip(prompts, images, together):
        alone = score_options(model, [prompt], [options], pv, batch_size=1)[0]
        assert torch.allclose(torch.tensor(alone.logprobs), torch.tensor(scores.logprobs), atol=1e-5)
