"""Configuration of the multimodal model: named scales, chosen for vision and language apart."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.config import option

SCALES = ("debug", "tiny", "small", "base", "large")


@dataclass
class ModelConfig:
    """MultimodalLM: timm ViT -> projector -> causal LM decoder, image features at `<img>` slots."""

    scale: str = option("debug", "named size of both halves (see `medmix model info`)", choices=SCALES)
    vision_scale: str = option("", "vision encoder size when it differs from `scale`", choices=("",) + SCALES)
    language_scale: str = option("", "decoder size when it differs from `scale`", choices=("",) + SCALES)
    image_size: int = option(224, "side of the square image the ViT sees, px (the stream resizes to it)", ge=16, le=1024)
    num_image_tokens: int = option(16, "decoder positions each image occupies (ViT features pooled to this many)", ge=1, le=1024)
    projector: str = option("mlp", "vision -> language projector: linear or mlp (2 layers, GELU)", choices=("linear", "mlp"))
    vision_checkpoint: str = option("", "local timm checkpoint file (.safetensors/.pth state dict) for the ViT; '' = random init")
    decoder_path: str = option("", "local Hugging Face model directory or .gguf file for the decoder; '' = random init from the scale")
    freeze_vision: bool = option(False, "keep the vision encoder's weights fixed during training")
    dropout: float = option(0.0, "dropout in the decoder and projector", ge=0, lt=1)
