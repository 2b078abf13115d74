"""The vision encoder: a timm ViT that turns images into a grid of patch features.

    enc = build_vision(cfg)                 # cfg: ModelConfig; random init unless
    feats = enc(pixel_values)               #   cfg.vision_checkpoint names a local file
    feats.shape == (N, enc.num_patches, enc.embed_dim)   # class/register tokens dropped

Pixels arrive normalised with ImageNet statistics (`medmix.data.images.to_model_input`).
Pretrained weights come from a local file only — a `.safetensors` file or a torch state dict
read with `weights_only=True` (no pickle is executed). timm's own checkpoint filter adapts
them: position embeddings are resampled when `model.image_size` differs from the size the
checkpoint was trained at, and classifier-head weights are dropped (we keep no head).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from medmix.model.config import ModelConfig
from medmix.model.paths import resolve_local_path
from medmix.model.scales import VisionScale, resolve_scales

log = logging.getLogger(__name__)


class VisionEncoder(nn.Module):
    """timm ViT without its head; forward returns the patch tokens only."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.embed_dim: int = vit.embed_dim
        self.grid_size: tuple[int, int] = tuple(vit.patch_embed.grid_size)
        self.num_patches: int = self.grid_size[0] * self.grid_size[1]
        self.num_prefix_tokens: int = getattr(vit, "num_prefix_tokens", 0)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, grid_h * grid_w, embed_dim), row-major over the patch grid."""
        tokens = self.vit.forward_features(pixel_values)
        return tokens[:, self.num_prefix_tokens:]


def create_vit(scale: VisionScale, image_size: int) -> nn.Module:
    import timm
    return timm.create_model(scale.timm_name, pretrained=False, num_classes=0, img_size=image_size,
                             **scale.timm_kwargs)


def build_vision(cfg: ModelConfig, *, load_pretrained: bool = True) -> VisionEncoder:
    """The ViT of `cfg`'s vision scale at `cfg.image_size`, with `cfg.vision_checkpoint` loaded.

    Args:
        load_pretrained: False builds the architecture only (meta-device sizing, or when the
            weights come from an export).
    """
    scale, _ = resolve_scales(cfg)
    vit = create_vit(scale, cfg.image_size)
    patch = vit.patch_embed.patch_size[0]
    if cfg.image_size % patch:
        raise ValueError(f"model.image_size = {cfg.image_size} is not a multiple of the ViT patch "
                         f"size {patch}; use e.g. {cfg.image_size // patch * patch or patch}")
    if load_pretrained and cfg.vision_checkpoint:
        load_vit_checkpoint(vit, cfg.vision_checkpoint)
    return VisionEncoder(vit)


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A safetensors file or a torch state dict (weights only: no pickle is executed)."""
    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):  # common wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or {{'state_dict': ...}})")
    return obj


def load_vit_checkpoint(vit: nn.Module, ref: str) -> None:
    """Load a local timm ViT checkpoint into `vit`; every ViT parameter must be present."""
    from timm.models.vision_transformer import checkpoint_filter_fn
    path = resolve_local_path(ref, what="model.vision_checkpoint")
    state = read_state_dict(path)
    state = {k.removeprefix("module.").removeprefix("vit."): v for k, v in state.items()}
    state = checkpoint_filter_fn(state, vit)  # resample pos-embed to our grid, adapt old layouts
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.", "head_drop."))
             or k in vit.state_dict()}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"model.vision_checkpoint {path}: does not match the "
            f"{type(vit).__name__} of this vision scale (embed_dim {vit.embed_dim}, "
            f"{len(vit.blocks)} blocks): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; "
            f"pick the model.vision_scale the checkpoint was trained with")
    log.info("vision: loaded %d tensors from %s", len(state), path)
