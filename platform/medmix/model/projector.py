"""Vision -> language: pool the ViT's patch grid to `num_image_tokens`, project to the decoder width.

    proj = build_projector(cfg, vision_dim=768, text_dim=2048, grid_size=(14, 14))
    tokens = proj(patch_features)        # (N, 196, 768) -> (N, cfg.num_image_tokens, 2048)

Resampling choice: adaptive average pooling over the 2-D patch grid (as in LLaVA-style
"pooled" connectors and PaLI's pooled variants) rather than a learned resampler (Perceiver /
Q-Former). It has no parameters, keeps the spatial layout (token k covers one rectangle of
the image, row-major), costs nothing, and is exact identity when `num_image_tokens` equals the
number of patches. The output grid is the most nearly square h x w with h * w =
`num_image_tokens` (16 -> 4x4, 196 -> 14x14, 8 -> 2x4); a prime count degenerates to one row.
Pooling happens before the projection so the MLP runs on `num_image_tokens` rows, not on
every patch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medmix.model.config import ModelConfig
from medmix.model.paths import resolve_local_path


def token_grid(num_tokens: int) -> tuple[int, int]:
    """The most nearly square (h, w) with h * w == num_tokens and h <= w."""
    h = int(math.isqrt(num_tokens))
    while num_tokens % h:
        h -= 1
    return h, num_tokens // h


def pool_patches(features: torch.Tensor, grid_size: tuple[int, int], num_tokens: int) -> torch.Tensor:
    """(N, gh*gw, D) row-major patch features -> (N, num_tokens, D) by adaptive average pooling."""
    n, p, d = features.shape
    gh, gw = grid_size
    if p != gh * gw:
        raise ValueError(f"got {p} patch features, expected a {gh}x{gw} grid")
    h, w = token_grid(num_tokens)
    if (h, w) == (gh, gw):
        return features
    grid = features.transpose(1, 2).reshape(n, d, gh, gw)
    pooled = F.adaptive_avg_pool2d(grid, (h, w))
    return pooled.flatten(2).transpose(1, 2)


class Projector(nn.Module):
    """Pool patches to `num_tokens`, then a linear map or a 2-layer GELU MLP to the decoder width."""

    def __init__(self, kind: str, vision_dim: int, text_dim: int, grid_size: tuple[int, int],
                 num_tokens: int, dropout: float = 0.0):
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"model.projector = {kind!r}: choose linear, mlp or llava")
        self.kind = kind
        self.grid_size = tuple(grid_size)
        self.num_tokens = num_tokens
        if kind == "linear":
            self.proj = nn.Linear(vision_dim, text_dim)
        else:
            self.proj = nn.Sequential(nn.Linear(vision_dim, text_dim), nn.GELU(),
                                      nn.Linear(text_dim, text_dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, patch_features: torch.Tensor) -> torch.Tensor:
        pooled = pool_patches(patch_features, self.grid_size, self.num_tokens)
        return self.dropout(self.proj(pooled))


class LlavaProjector(nn.Module):
    """LLaVA's `multi_modal_projector`: linear_1 -> GELU -> linear_2, the same parameter names, so
    its tensors load from (and map to) a `LlavaForConditionalGeneration` checkpoint. LLaVA gives
    every patch its own token; with `num_tokens` below the patch count medmix pools first, as
    for the other projectors (exact LLaVA behaviour needs num_image_tokens = patches)."""

    kind = "llava"

    def __init__(self, vision_dim: int, text_dim: int, grid_size: tuple[int, int], num_tokens: int):
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_tokens = num_tokens
        self.linear_1 = nn.Linear(vision_dim, text_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(text_dim, text_dim)

    def forward(self, patch_features: torch.Tensor) -> torch.Tensor:
        pooled = pool_patches(patch_features, self.grid_size, self.num_tokens)
        return self.linear_2(self.act(self.linear_1(pooled)))


LLAVA_PREFIXES = ("multi_modal_projector.", "model.multi_modal_projector.")


def read_projector_weights(path: Path) -> dict[str, torch.Tensor]:
    """Projector tensors from a .safetensors file or a directory of them; a LLaVA model's
    `multi_modal_projector.*` (or `model.multi_modal_projector.*`) are taken by name."""
    from safetensors import safe_open
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or any(f.suffix != ".safetensors" for f in files):
        raise ValueError(f"model.projector_path {path}: expected a .safetensors file or a directory "
                         f"holding them (a LLaVA model directory)")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt", device="cpu") as st:
            keys = list(st.keys())
            llava = [k for k in keys if k.startswith(LLAVA_PREFIXES)]
            for k in llava or (keys if not path.is_dir() else []):
                name = k
                for prefix in LLAVA_PREFIXES:
                    name = name.removeprefix(prefix)
                out[name.removeprefix("projector.")] = st.get_tensor(k)
    if not out:
        raise ValueError(f"model.projector_path {path}: holds no multi_modal_projector.* tensors")
    return out


@torch.no_grad()
def load_projector(projector: nn.Module, ref: str) -> None:
    """Copy local projector weights into `projector`; a missing, extra or mis-shaped tensor is an
    error naming it."""
    projector.load_state_dict(projector_weights(projector, ref))


def projector_weights(projector: nn.Module, ref: str) -> dict[str, torch.Tensor]:
    """The projector tensors at `ref`, checked by name and shape against `projector` (which may
    live on the meta device: the driver checks before any worker starts)."""
    path = resolve_local_path(ref, what="model.projector_path")
    state = read_projector_weights(path)
    own = projector.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"model.projector_path {path}: tensors do not match a model.projector = "
                         f"{getattr(projector, 'kind', '?')} projector: missing {missing}, unexpected {extra} "
                         f"(a LLaVA checkpoint needs model.projector = \"llava\")")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            first = next(m for m in projector.modules() if isinstance(m, nn.Linear))
            raise ValueError(f"model.projector_path {path}: {name} has shape {tuple(tensor.shape)}, this "
                             f"model's projector expects {tuple(own[name].shape)}: the hidden sizes do not "
                             f"match (this model's tower has hidden size {first.in_features}, its decoder "
                             f"{first.out_features}); the tower or decoder differs from the checkpoint's")
    return state


def build_projector(cfg: ModelConfig, *, vision_dim: int, text_dim: int,
                    grid_size: tuple[int, int]) -> nn.Module:
    if cfg.projector == "llava":
        return LlavaProjector(vision_dim, text_dim, grid_size, cfg.num_image_tokens)
    return Projector(cfg.projector, vision_dim, text_dim, grid_size, cfg.num_image_tokens, cfg.dropout)
