"""How pixels are normalised for the configured vision tower: size, mean and std, from the tower itself.

    prep = image_preprocess(cfg.model)     # ImagePreprocess(size=224, mean=(...), std=(...))
    to_model_input(array, prep.size, prep.mean, prep.std)     # medmix.data.images

A scale-ladder or timm tower takes ImageNet statistics at `model.image_size` (what medmix has
always fed its ViTs). A Hugging Face tower (`model.vision_path`) takes its own processor's:
`preprocessor_config.json`'s `image_mean`, `image_std` and size (`size.height` /
`size.shortest_edge` / `crop_size`), as SigLIP, CLIP and LLaVA processors write them (a
LLaVA processor saved by transformers 5 keeps them under `image_processor` in
`processor_config.json`). The same
three numbers reach training (the stream's BatchSpec), evaluation and serving (the export
records them as `meta.image_mean` / `meta.image_std`), so a model sees identical inputs in all
three. medmix's images are square (ingest pads and resizes them), on which CLIP's
shortest-edge resize + centre crop is the same square resize.

Standard library only: the data stream and the serve ingress import it without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from medmix.model.config import ModelConfig
from medmix.model.paths import resolve_local_path
from medmix.options import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSOR_FILE = "preprocessor_config.json"
PROCESSOR_FILE = "processor_config.json"


@dataclass(frozen=True)
class ImagePreprocess:
    """Square side in px, and the per-channel mean/std pixels in [0, 1] are normalised with."""

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def read_preprocessor(directory: Path) -> ImagePreprocess:
    """The size/mean/std a Hugging Face `preprocessor_config.json` in `directory` describes."""
    path = directory / PREPROCESSOR_FILE
    if not path.is_file() and (directory / PROCESSOR_FILE).is_file():
        path = directory / PROCESSOR_FILE  # a multimodal processor (LLaVA) holds its image processor
    if not path.is_file():
        raise ConfigError(f"model.vision_path {directory}: no {PREPROCESSOR_FILE}; the tower's own "
                          f"preprocessing (size, image_mean, image_std) must come with it (save the "
                          f"model's image processor there with save_pretrained)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if path.name == PROCESSOR_FILE:
        if not isinstance(data.get("image_processor"), dict):
            raise ConfigError(f"{path}: holds no image_processor; save the model's processor with "
                              f"save_pretrained")
        data = data["image_processor"]
    size = data.get("crop_size") if data.get("do_center_crop") else data.get("size")
    if isinstance(size, dict):
        side = size.get("height") or size.get("shortest_edge") or size.get("width")
    else:
        side = size
    if not isinstance(side, int) or side < 1:
        raise ConfigError(f"{path}: cannot read the input size from size/crop_size = {size!r}")
    if data.get("do_rescale", True) and abs(float(data.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ConfigError(f"{path}: rescale_factor {data['rescale_factor']} is not 1/255; medmix feeds "
                          f"8-bit pixels scaled to [0, 1]")
    if not data.get("do_normalize", True):
        return ImagePreprocess(side, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    mean, std = data.get("image_mean", IMAGENET_MEAN), data.get("image_std", IMAGENET_STD)
    mean = tuple(float(v) for v in (mean if isinstance(mean, list) else [mean] * 3))
    std = tuple(float(v) for v in (std if isinstance(std, list) else [std] * 3))
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{path}: image_mean/image_std must have 3 channels, got {mean} / {std}")
    return ImagePreprocess(side, mean, std)  # type: ignore[arg-type]


def image_preprocess(cfg: ModelConfig) -> ImagePreprocess:
    """The preprocessing of `cfg`'s vision tower; a size that disagrees with model.image_size
    is a ConfigError naming both (the stream resizes to model.image_size)."""
    if not cfg.vision_path:
        return ImagePreprocess(cfg.image_size)
    directory = resolve_local_path(cfg.vision_path, what="model.vision_path")
    prep = read_preprocessor(directory)
    if prep.size != cfg.image_size:
        raise ConfigError(f"model.image_size = {cfg.image_size}, but the tower at {directory} takes "
                          f"{prep.size} px images ({PREPROCESSOR_FILE}); set model.image_size = {prep.size}")
    return prep
