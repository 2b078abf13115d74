"""Configuration of the multimodal model: named scales, chosen for vision and language apart."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import ConfigError, option

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
    vision_checkpoint: str = option("", "local timm checkpoint file (.safetensors, or a .pth state dict read weights-only) for the ViT; pkg:<package>/<file> = inside an installed package; '' = random init")
    decoder_path: str = option("", "local Hugging Face model directory or .gguf file for the decoder (its shape overrides the language scale); pkg:<package>/<file> = inside an installed package; '' = random init from the scale")
    freeze_vision: bool = option(False, "keep the vision encoder's weights fixed during training")
    dropout: float = option(0.0, "dropout in the projector and the attention of a scale-built decoder (a pretrained one keeps its own)", ge=0, lt=1)

    def validate(self) -> None:
        patch = 16  # every ViT on the scale ladder uses 16 px patches
        if self.image_size % patch:
            raise ConfigError(f"model.image_size = {self.image_size} must be a multiple of the ViT "
                              f"patch size {patch} (e.g. {max(patch, self.image_size // patch * patch)})")
        patches = (self.image_size // patch) ** 2
        if self.num_image_tokens > patches:
            raise ConfigError(f"model.num_image_tokens = {self.num_image_tokens} is more than the "
                              f"{patches} patches a {self.image_size} px image has; lower it or raise "
                              f"model.image_size")
