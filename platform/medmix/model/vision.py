"""The vision tower: images -> a grid of patch features, from timm or from a Hugging Face directory.

    enc = build_vision(cfg)                 # cfg: ModelConfig
    feats = enc(pixel_values)               # (N, enc.num_patches, enc.embed_dim), prefix tokens dropped

Three sources, one interface (`VisionEncoder`: embed_dim, grid_size, patch_size, image_size,
num_layers, dtype):
  - the scale ladder's timm ViT (`model.vision_scale`), random or `model.vision_checkpoint`;
  - any timm ViT-family model by name (`model.vision_timm`): its patch size and grid come from
    the model, not a fixed 16, and its weights from `model.vision_checkpoint` (nothing is
    fetched: `pretrained=False`);
  - a local Hugging Face vision model directory (`model.vision_path`): `SiglipVisionModel`,
    `CLIPVisionModel`, or whatever `AutoModel` resolves for a ViT-style vision config (a
    composite CLIP/SigLIP config contributes its `vision_config`). Its pixels are normalised
    with its own processor's statistics (`medmix.model.preprocess`).

`model.vision_feature_layer` picks the features: -1 is the tower's final output (timm's
`forward_features`, HF's `last_hidden_state`, each with its last norm), any other value the
hidden state after that block, without the final norm — LLaVA takes -2. Class and register
tokens are dropped: the projector sees the patch grid only, row-major.

Every problem — a directory that is not a model, an architecture that yields no patch tokens,
an image size the tower cannot take — is a ValueError naming the path or timm name and the
config key, raised when the tower is built (the launcher builds it on the meta device before
any worker starts).
"""

from __future__ import annotations

import importlib
import logging

import torch
from torch import nn

from medmix.model.config import ModelConfig
from medmix.model.llava import VISION_KEYS, is_llava_dir
from medmix.model.paths import resolve_local_path
from medmix.model.scales import VisionScale, resolve_scales

log = logging.getLogger(__name__)

COMPOSITE_TYPES = ("clip", "siglip", "siglip2", "llava")
"""Model types whose config holds the vision tower's under `vision_config`."""


class VisionEncoder(nn.Module):
    """Pixels -> (N, grid_h * grid_w, embed_dim) patch features; subclasses wrap a timm or HF tower."""

    embed_dim: int
    grid_size: tuple[int, int]
    patch_size: int
    image_size: tuple[int, int]
    num_layers: int
    num_prefix_tokens: int
    feature_layer: int

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def layer_index(self) -> int:
        """`feature_layer` as a hidden-state index 1..num_layers (-1 handled by the caller)."""
        k = self.feature_layer
        index = k if k > 0 else self.num_layers + 1 + k
        if not 1 <= index <= self.num_layers:
            raise ValueError(f"model.vision_feature_layer = {k}: the tower has {self.num_layers} blocks; "
                             f"use -1..-{self.num_layers} or 1..{self.num_layers}")
        return index

    def matmul_params(self) -> int:
        """Parameters that multiply activations (position/class embeddings are lookups)."""
        raise NotImplementedError


class TimmVision(VisionEncoder):
    """A timm ViT-family model without its head; forward returns the patch tokens only."""

    def __init__(self, vit: nn.Module, feature_layer: int = -1, where: str = "timm model"):
        super().__init__()
        embed = getattr(vit, "patch_embed", None)
        if embed is None or not hasattr(embed, "grid_size") or not hasattr(vit, "forward_features"):
            raise ValueError(f"{where} ({type(vit).__name__}) does not yield patch tokens (no ViT-style "
                             f"patch_embed); pick a ViT-family model (vit_*, deit_*, eva02_*, ...)")
        self.vit = vit
        self.embed_dim = int(getattr(vit, "embed_dim", None) or vit.num_features)
        self.grid_size = tuple(int(g) for g in embed.grid_size)  # type: ignore[assignment]
        self.patch_size = int(embed.patch_size[0])
        self.image_size = tuple(int(s) for s in embed.img_size)  # type: ignore[assignment]
        self.num_layers = len(getattr(vit, "blocks", []))
        self.num_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 0))
        self.feature_layer = feature_layer
        if feature_layer != -1:
            if not hasattr(vit, "forward_intermediates"):
                raise ValueError(f"{where} cannot return intermediate blocks; use model.vision_feature_layer = -1")
            self.layer_index()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.feature_layer == -1:
            tokens = self.vit.forward_features(pixel_values)
            return tokens[:, self.num_prefix_tokens:]
        (out,) = self.vit.forward_intermediates(pixel_values, indices=[self.layer_index() - 1], norm=False,
                                                output_fmt="NLC", intermediates_only=True)
        return out

    def matmul_params(self) -> int:
        skip = {id(getattr(self.vit, n)) for n in ("pos_embed", "cls_token", "reg_token")
                if isinstance(getattr(self.vit, n, None), torch.Tensor)}
        return sum(p.numel() for p in self.vit.parameters() if id(p) not in skip)


class HFVision(VisionEncoder):
    """A transformers vision model (SigLIP, CLIP, ViT-style); forward returns the patch tokens only."""

    def __init__(self, tower: nn.Module, feature_layer: int = -1, where: str = "vision tower"):
        super().__init__()
        c = tower.config
        self.tower = tower
        self.embed_dim = int(c.hidden_size)
        self.patch_size = int(_side(c.patch_size))
        side = int(_side(c.image_size))
        self.image_size = (side, side)
        self.grid_size = (side // self.patch_size, side // self.patch_size)
        self.num_layers = int(c.num_hidden_layers)
        self.num_prefix_tokens = -1  # whatever precedes the last num_patches tokens (CLS, registers)
        self.feature_layer = feature_layer
        if feature_layer != -1:
            self.layer_index()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.feature_layer == -1:
            tokens = self.tower(pixel_values=pixel_values).last_hidden_state
        else:
            out = self.tower(pixel_values=pixel_values, output_hidden_states=True)
            tokens = out.hidden_states[self.layer_index()]
        return tokens[:, tokens.shape[1] - self.num_patches:]

    def matmul_params(self) -> int:
        lookups = {id(m.weight) for m in self.tower.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.tower.parameters() if id(p) not in lookups)


def _side(value) -> int:
    return value[0] if isinstance(value, (list, tuple)) else value


# -- timm -------------------------------------------------------------------------------------

def create_vit(scale: VisionScale, image_size: int) -> nn.Module:
    import timm
    return timm.create_model(scale.timm_name, pretrained=False, num_classes=0, img_size=image_size,
                             **scale.timm_kwargs)


def create_timm(name: str, image_size: int) -> nn.Module:
    """The architecture of timm model `name` at `image_size` (no weights are fetched)."""
    import timm
    if not timm.is_model(name):
        raise ValueError(f"model.vision_timm = {name!r} is not a timm model name; list them with "
                         f"`python -c \"import timm; print(timm.list_models('vit_*'))\"`")
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size)
    except TypeError:  # an architecture without a configurable input size
        return timm.create_model(name, pretrained=False, num_classes=0)


def _build_timm(cfg: ModelConfig, load_pretrained: bool) -> TimmVision:
    if cfg.vision_timm:
        vit, where = create_timm(cfg.vision_timm, cfg.image_size), f"model.vision_timm = {cfg.vision_timm!r}"
    else:
        scale, _ = resolve_scales(cfg)
        vit, where = create_vit(scale, cfg.image_size), f"vision scale {scale.timm_name}"
    encoder = TimmVision(vit, cfg.vision_feature_layer, where)
    patch = encoder.patch_size
    if cfg.image_size % patch or encoder.image_size != (cfg.image_size, cfg.image_size):
        raise ValueError(f"model.image_size = {cfg.image_size} does not fit {where}: its patch size is "
                         f"{patch} and it takes {encoder.image_size[0]} px; use a multiple of {patch} "
                         f"(e.g. {max(patch, cfg.image_size // patch * patch)}) the model accepts")
    if load_pretrained and cfg.vision_checkpoint:
        load_vit_checkpoint(vit, cfg.vision_checkpoint)
    return encoder


# -- Hugging Face -----------------------------------------------------------------------------

def load_vision_config(ref: str):
    """The vision config of a local HF directory (metadata only), or a ValueError naming the path."""
    from transformers import AutoConfig
    path = resolve_local_path(ref, what="model.vision_path")
    if not (path / "config.json").is_file():
        raise ValueError(f"model.vision_path {path}: not a Hugging Face model directory (no config.json); "
                         f"save the tower there with save_pretrained")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:
        raise ValueError(f"model.vision_path {path}: config.json is not a model transformers knows ({exc})") from None
    if config.model_type in COMPOSITE_TYPES and getattr(config, "vision_config", None) is not None:
        config = config.vision_config
    missing = [k for k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers")
               if not isinstance(getattr(config, k, None), (int, list, tuple))]
    if missing:
        raise ValueError(f"model.vision_path {path}: model_type {config.model_type!r} is not a supported "
                         f"vision tower (its config has no {', '.join(missing)}); medmix takes ViT-style "
                         f"towers such as SiglipVisionModel and CLIPVisionModel")
    return config


def vision_from_config(config_dict: dict) -> nn.Module:
    """An HF tower of the architecture a `config.to_dict()` describes (used when loading an export)."""
    from transformers import AutoConfig, AutoModel
    data = dict(config_dict)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    return AutoModel.from_config(config)


def _build_hf(cfg: ModelConfig, load_pretrained: bool) -> HFVision:
    from transformers import AutoModel
    path = resolve_local_path(cfg.vision_path, what="model.vision_path")
    config = load_vision_config(cfg.vision_path)
    try:
        tower = AutoModel.from_config(config)
    except ValueError as exc:
        raise ValueError(f"model.vision_path {path}: no transformers model for model_type "
                         f"{config.model_type!r} ({exc})") from None
    if load_pretrained:
        # a LLaVA directory holds the tower under vision_tower.*: key_mapping strips the prefix
        llava = is_llava_dir(path)
        try:
            tower, info = type(tower).from_pretrained(str(path), config=config, local_files_only=True,
                                                      dtype=torch.float32, output_loading_info=True,
                                                      key_mapping=VISION_KEYS if llava else None)
        except OSError as exc:
            raise ValueError(f"model.vision_path {path}: cannot read the tower's weights ({exc})") from None
        if llava and info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ValueError(f"model.vision_path {path}: the LLaVA's weights lack vision_tower tensors "
                             f"{missing[:5]}{'...' if len(missing) > 5 else ''}")
    side = int(_side(config.image_size))
    if side != cfg.image_size:
        raise ValueError(f"model.image_size = {cfg.image_size}, but the tower at {path} takes {side} px "
                         f"images; set model.image_size = {side}")
    return HFVision(tower, cfg.vision_feature_layer, f"model.vision_path {path}")


def build_vision(cfg: ModelConfig, *, load_pretrained: bool = True,
                 hf_config: dict | None = None) -> VisionEncoder:
    """The tower `cfg` names at `cfg.image_size`, with its weights loaded.

    Args:
        load_pretrained: False builds the architecture only (meta-device sizing, or when the
            weights come from an export).
        hf_config: an HF tower's `config.to_dict()` (an export's `vision_config`): build that
            architecture without reading `cfg.vision_path`.
    """
    if hf_config is not None:
        return HFVision(vision_from_config(hf_config), cfg.vision_feature_layer)
    if cfg.vision_path:
        return _build_hf(cfg, load_pretrained)
    return _build_timm(cfg, load_pretrained)


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
    """Load a local timm checkpoint into `vit`; every parameter must be present."""
    path = resolve_local_path(ref, what="model.vision_checkpoint")
    state = read_state_dict(path)
    state = {k.removeprefix("module.").removeprefix("vit."): v for k, v in state.items()}
    state = _timm_filter(vit, state)
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm.", "head_drop."))
             or k in vit.state_dict()}
    missing, unexpected = vit.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"model.vision_checkpoint {path}: does not match the "
            f"{type(vit).__name__} of this tower (embed_dim {getattr(vit, 'embed_dim', '?')}, "
            f"{len(getattr(vit, 'blocks', []))} blocks): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}; "
            f"pick the model.vision_scale / model.vision_timm the checkpoint was trained with")
    log.info("vision: loaded %d tensors from %s", len(state), path)


def _timm_filter(vit: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's own checkpoint filter for the model's family (resamples position embeddings to
    our grid, adapts old layouts); the ViT one when the family has none."""
    module = importlib.import_module(type(vit).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        from timm.models.vision_transformer import checkpoint_filter_fn as fn
    return fn(state, vit)


def is_hf_vision(encoder: nn.Module) -> bool:
    return isinstance(encoder, HFVision)


__all__ = ["VisionEncoder", "TimmVision", "HFVision", "build_vision", "create_vit", "create_timm",
           "load_vision_config", "load_vit_checkpoint", "read_state_dict"]
