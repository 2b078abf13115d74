"""MultimodalLM.forward: the image splice, the loss mask, per-example losses."""

from __future__ import annotations

import pytest
import torch
from model_helpers import BOS, IMG, build_tiny, img, pixels, right_pad


def capture_decoder_inputs(model):
    """Hook the decoder's first layer; returns the list its input hidden states land in."""
    seen = []
    layer = model.decoder.model.layers[0]
    handle = layer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).detach()),
        with_kwargs=True)
    return seen, handle


def test_image_features_land_exactly_at_img_positions_several_images_per_example():
    model = build_tiny()
    # row 0: two images, row 1: one image between text; runs in row-major order = images 0, 1, 2
    rows = [[BOS, 5] + img(1) + [6] + img(1) + [7, 8], [BOS] + img(1) + [9, 10, 11]]
    ids, mask, _ = right_pad(rows)
    px = pixels(3)
    seen, handle = capture_decoder_inputs(model)
    model(ids, mask, pixel_values=px)
    handle.remove()
    embeds = seen[0]
    feats = model.encode_images(px).detach()  # (3, 4, D)
    token_emb = model.decoder.get_input_embeddings()(ids).detach()
    is_img = ids == IMG
    torch.testing.assert_close(embeds[~is_img], token_emb[~is_img], rtol=0, atol=0)
    # image k's 4 feature vectors, in order, at the k-th run
    assert torch.equal(embeds[0, 2:6], feats[0])
    assert torch.equal(embeds[0, 7:11], feats[1])
    assert torch.equal(embeds[1, 1:5], feats[2])


def test_count_mismatch_and_missing_pixels_raise_clear_errors():
    model = build_tiny()
    ids, mask, _ = right_pad([[BOS] + img(2) + [5]])
    with pytest.raises(ValueError, match="8 <img> positions .* but 1 images"):
        model(ids, mask, pixel_values=pixels(1))
    with pytest.raises(ValueError, match="no pixel_values"):
        model(ids, mask)
    ragged, mask2, _ = right_pad([[BOS] + [IMG] * 3 + [5]])  # a run shorter than num_image_tokens
    with pytest.raises(ValueError, match="exactly one run of model.num_image_tokens = 4"):
        model(ragged, mask2, pixel_values=pixels(1))


def test_image_path_matters_and_is_causal():
    model = build_tiny()
    ids, mask, _ = right_pad([[BOS, 5, 6] + img(1) + [7, 8, 9]])
    a = model(ids, mask, pixel_values=pixels(1, seed=1)).logits
    b = model(ids, mask, pixel_values=pixels(1, seed=2)).logits
    assert torch.equal(a[:, :3], b[:, :3])  # before the image: unaffected (causal)
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-4  # from the image on: the pixels matter


def test_text_only_batch_still_runs_vision_so_ranks_stay_in_step():
    # FSDP2: a rank whose micro-batch has no images must still run (and reduce grads for) the ViT
    model = build_tiny()
    ids, mask, labels = right_pad([[BOS, 5, 6, 7, 8]], targets=[2])
    out = model(ids, mask, labels=labels, pixel_values=pixels(0))
    out.loss.backward()
    vit_grads = [p.grad for p in model.vision.parameters()]
    assert all(g is not None for g in vit_grads)
    assert all(float(g.abs().sum()) == 0 for g in vit_grads)


def test_loss_only_on_target_tokens():
    model = build_tiny()
    prompt = [BOS, 5, 6] + img(1) + [7]
    target = [20, 21, 22]
    ids, mask, labels = right_pad([prompt + target], targets=[len(target)])
    out = model(ids, mask, labels=labels, pixel_values=pixels(1))
    # by hand: next-token CE at the 3 positions that predict target tokens, nothing else
    logp = torch.log_softmax(out.logits[0].float(), -1)
    start = len(prompt)
    manual = -sum(logp[start - 1 + k, target[k]] for k in range(len(target))) / len(target)
    torch.testing.assert_close(out.loss, manual)
    assert out.example_tokens.tolist() == [3]

    # the gradient reaching prompt-predicting logits is exactly zero
    logits = out.logits
    logits.retain_grad()
    out.loss.backward()
    g = logits.grad[0].abs().sum(-1)
    assert float(g[:start - 1].sum()) == 0.0
    assert bool((g[start - 1:start - 1 + len(target)] > 0).all())

    # what the prompt's tokens are does not enter the loss terms; what the targets are does
    labels_t = labels.clone()
    labels_t[0, start + 1] = 30
    assert not torch.equal(model(ids, mask, labels=labels_t, pixel_values=pixels(1)).loss, out.loss)


def test_per_example_losses_sum_to_the_batch_loss_and_match_single_runs():
    model = build_tiny()
    rows = [[BOS, 5] + img(1) + [6, 20, 21], [BOS] + img(2) + [7, 8, 22, 23, 24, 25], [BOS, 9, 26]]
    targets = [2, 4, 1]
    ids, mask, labels = right_pad(rows, targets)
    px = pixels(3)
    out = model(ids, mask, labels=labels, pixel_values=px)
    torch.testing.assert_close(out.example_loss.sum() / out.example_tokens.sum(), out.loss)
    assert out.example_tokens.tolist() == targets
    images = [px[0:1], px[1:3], px[3:3]]
    for i, row in enumerate(rows):
        one = right_pad([row], [targets[i]])
        single = model(one[0], one[1], labels=one[2], pixel_values=images[i])
        torch.testing.assert_close(single.example_loss[0], out.example_loss[i], rtol=1e-5, atol=1e-5)


def test_frozen_vision_gets_no_gradient_but_projector_does():
    model = build_tiny(freeze_vision=True)
    ids, mask, labels = right_pad([[BOS] + img(1) + [5, 20]], targets=[1])
    model(ids, mask, labels=labels, pixel_values=pixels(1)).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.vision.parameters())
    assert all(p.grad is not None for p in model.projector.parameters())


def test_linear_projector_and_pooling_grid():
    from medmix.model.projector import pool_patches, token_grid
    assert token_grid(16) == (4, 4) and token_grid(196) == (14, 14) and token_grid(8) == (2, 4)
    feats = torch.randn(2, 16, 5)
    assert torch.equal(pool_patches(feats, (4, 4), 16), feats)  # identity at full resolution
    pooled = pool_patches(feats, (4, 4), 4)
    # token 0 = mean of the top-left 2x2 patches (row-major grid)
    torch.testing.assert_close(pooled[:, 0], feats[:, [0, 1, 4, 5]].mean(1))
    model = build_tiny(projector="linear")
    assert isinstance(model.projector.proj, torch.nn.Linear)
