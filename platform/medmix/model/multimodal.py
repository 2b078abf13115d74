"""MultimodalLM: ViT -> projector -> causal LM, image features written at the `<img>` positions.

    model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id,
                        pad_token_id=tok.pad_id)
    out = model(input_ids, attention_mask, labels=labels, pixel_values=pixel_values)
    out.loss                 # mean over the batch's target tokens
    out.example_loss         # (B,) summed token loss per example -> per-task loss in the trainer
    out.example_tokens       # (B,) target tokens per example

The splice (PaLM-E / Med-PaLM M, and OLMo-core's multimodal model): every image in the
prompt is a run of `num_image_tokens` copies of the `<img>` id (`medmix.data.encode` writes
them). `pixel_values` holds the batch's images in the order those runs appear, row-major over
the batch, so image k's projected features replace the embeddings of the k-th run. The count
is checked: a mismatch is a data bug, and silently shifting images between examples would
train on the wrong pictures.

Loss uses the Hugging Face convention: `labels` aligned with `input_ids`, -100 where no loss
is taken (prompt, images, padding); the model shifts them. Token losses are computed in fp32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medmix.model.config import ModelConfig
from medmix.model.decoder import build_decoder
from medmix.model.flops import decoder_flops_per_token, image_flops
from medmix.model.projector import build_projector, load_projector
from medmix.model.vision import build_vision

IGNORE_INDEX = -100


class MultimodalOutput(NamedTuple):
    """What `MultimodalLM.forward` returns; loss fields are None without labels."""

    loss: torch.Tensor | None
    """mean token loss over the batch's target tokens (what a single-rank step backprops)"""
    logits: torch.Tensor
    """(B, L, V) next-token logits, in the compute dtype"""
    example_loss: torch.Tensor | None
    """(B,) fp32 sum of target-token losses per example"""
    example_tokens: torch.Tensor | None
    """(B,) number of target tokens per example"""


class MultimodalLM(nn.Module):
    """A vision tower (timm or transformers), a projector and a transformers causal LM."""

    def __init__(self, vision: nn.Module, projector: nn.Module, decoder: nn.Module, *,
                 image_token_id: int, pad_token_id: int | None, num_image_tokens: int,
                 freeze_vision: bool = False, config: ModelConfig | None = None):
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.decoder = decoder
        self.image_token_id = int(image_token_id)
        self.pad_token_id = pad_token_id
        self.num_image_tokens = int(num_image_tokens)
        self.freeze_vision = freeze_vision
        self.config = config  # the ModelConfig it was built from (export writes it)
        if freeze_vision:
            vision.requires_grad_(False)

    # -- embedding with the image splice -------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels -> (N, num_image_tokens, decoder hidden)."""
        pixel_values = pixel_values.to(self.vision.dtype)
        # a tower with nothing to train (freeze_vision, or train.trainable leaving it out) runs
        # without autograd: its activations are not kept for a backward that never reaches it
        if self.freeze_vision or not any(p.requires_grad for p in self.vision.parameters()):
            with torch.no_grad():
                feats = self.vision(pixel_values)
        else:
            feats = self.vision(pixel_values)
        return self.projector(feats)

    def count_images(self, input_ids: torch.Tensor) -> int:
        """Images the `<img>` runs in `input_ids` stand for (positions / num_image_tokens)."""
        n = int((input_ids == self.image_token_id).sum())
        return n // self.num_image_tokens

    def embed(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, *,
              image_features: torch.Tensor | None = None, keep_vision_in_graph: bool = False) -> torch.Tensor:
        """Token embeddings with image features written at the `<img>` positions.

        Args:
            pixel_values: (N, 3, S, S), the batch's images in row-major run order.
            image_features: (N, num_image_tokens, D) already encoded images instead of pixels.
            keep_vision_in_graph: with no images, still run the encoder on one blank image and
                add 0 x its output, so every data-parallel rank runs (and all-gathers, and
                reduces gradients for) the same modules — a rank whose micro-batch happens to
                be text-only must not skip the FSDP collectives of the vision blocks.
        """
        embeds = self.decoder.get_input_embeddings()(input_ids)
        mask = input_ids == self.image_token_id
        if image_features is None and pixel_values is not None and pixel_values.shape[0] > 0:
            image_features = self.encode_images(pixel_values)
        n_pos = int(mask.sum())
        if image_features is None or image_features.shape[0] == 0:
            if n_pos:
                raise ValueError(
                    f"input_ids hold {n_pos} <img> positions (id {self.image_token_id}) but no "
                    f"pixel_values were given; pass one image per run of {self.num_image_tokens} "
                    f"<img> ids")
            if keep_vision_in_graph:
                size = self.vision.image_size
                blank = embeds.new_zeros((1, 3, *size))
                embeds = embeds + self.encode_images(blank).sum() * 0
            return embeds
        n_img, n_tok = image_features.shape[0], image_features.shape[1]
        if n_pos != n_img * n_tok:
            raise ValueError(
                f"image/token count mismatch: input_ids hold {n_pos} <img> positions "
                f"(= {n_pos / n_tok:g} images x {n_tok} tokens) but {n_img} images were given "
                f"({n_img * n_tok} positions); each image must be exactly one run of "
                f"model.num_image_tokens = {n_tok} <img> ids, and pixel_values must list the "
                f"batch's images in the order their runs appear (row by row)")
        # masked_scatter fills masked positions in row-major order: image k -> k-th run
        return embeds.masked_scatter(mask.unsqueeze(-1), image_features.to(embeds.dtype))

    # -- training / scoring forward ------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> MultimodalOutput:
        """One full-sequence pass (no KV cache).

        Args:
            input_ids: (B, L) token ids, `<img>` runs where images go.
            attention_mask: (B, L) 1 for real tokens, 0 for padding.
            labels: (B, L) aligned with input_ids; -100 where no loss is taken.
            pixel_values: (N_images_total, 3, S, S) in the order the `<img>` runs appear.
            position_ids: (B, L) explicit positions (left-padded inputs); default 0..L-1.
        """
        embeds = self.embed(input_ids, pixel_values, keep_vision_in_graph=True)
        out = self.decoder(inputs_embeds=embeds, attention_mask=attention_mask,
                           position_ids=position_ids, use_cache=False)
        logits = out.logits
        if labels is None:
            return MultimodalOutput(None, logits, None, None)
        example_loss, example_tokens = token_loss_sums(logits, labels)
        loss = example_loss.sum() / example_tokens.sum().clamp(min=1)
        return MultimodalOutput(loss, logits, example_loss, example_tokens)

    # -- sizes ---------------------------------------------------------------------------
    def num_params(self) -> dict[str, int]:
        """Parameters per part (shared tensors counted once): vision, projector, decoder, total."""
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())
        return {"vision": count(self.vision), "projector": count(self.projector),
                "decoder": count(self.decoder), "total": count(self)}

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per decoder token: 6 N + 12 layers hidden seq_len (see flops.py)."""
        return decoder_flops_per_token(self.decoder, seq_len)

    def flops_per_image(self, train: bool = True) -> float:
        """FLOPs to encode and project one image (forward + backward when `train`)."""
        return image_flops(self, train=train)


def token_loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) fp32 summed next-token loss over labelled positions, and (B,) their counts."""
    shift_labels = labels[:, 1:]
    b, n = shift_labels.shape
    flat = logits[:, :-1].reshape(b * n, -1).float()
    tok = F.cross_entropy(flat, shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")
    return tok.view(b, n).sum(1), (shift_labels != IGNORE_INDEX).sum(1)


def build_model(cfg: ModelConfig, vocab_size: int, image_token_id: int, pad_token_id: int | None,
                *, load_pretrained: bool = True) -> MultimodalLM:
    """The MultimodalLM `cfg` describes, for a tokenizer of `vocab_size` ids.

    Random init from the scales unless `cfg.vision_checkpoint` / `cfg.decoder_path` name local
    weights. Build under `torch.device("meta")` with `load_pretrained=False` to size a model
    without allocating it (`medmix model info`).
    """
    if not 0 <= image_token_id < vocab_size:
        raise ValueError(f"image_token_id {image_token_id} is outside the vocabulary of {vocab_size} "
                         f"ids; the tokenizer must contain <img>")
    vision = build_vision(cfg, load_pretrained=load_pretrained)
    if cfg.num_image_tokens > vision.num_patches:
        raise ValueError(f"model.num_image_tokens = {cfg.num_image_tokens} is more than the {vision.num_patches} "
                         f"patches the tower yields at {cfg.image_size} px (patch {vision.patch_size}); lower "
                         f"it to at most {vision.num_patches}")
    decoder = build_decoder(cfg, vocab_size, pad_token_id=pad_token_id, load_pretrained=load_pretrained)
    projector = build_projector(cfg, vision_dim=vision.embed_dim, text_dim=decoder.config.hidden_size,
                                grid_size=vision.grid_size)
    if load_pretrained and cfg.projector_path:
        load_projector(projector, cfg.projector_path)
    return MultimodalLM(vision, projector, decoder, image_token_id=image_token_id,
                        pad_token_id=pad_token_id, num_image_tokens=cfg.num_image_tokens,
                        freeze_vision=cfg.freeze_vision, config=cfg)
