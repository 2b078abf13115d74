"""Configuration of the multimodal model: named scales, chosen for vision and language apart."""

from __future__ import annotations

import re
from dataclasses import dataclass

from medmix.model.llava import is_llava_dir, llava_settings
from medmix.options import ConfigError, option

SCALES = ("debug", "tiny", "small", "base", "large")

TRAINABLE_GROUPS = ("all", "projector", "vision", "decoder", "lora")
"""Named parts `train.trainable` may list; any other term is a glob over parameter/module names."""


def parse_trainable(spec: str, key: str = "train.trainable") -> list[str]:
    """`"projector+lora"` -> ["projector", "lora"]; terms split on `+` or `,`.

    A term is a named group (TRAINABLE_GROUPS) or a glob over parameter and module names
    (`decoder.model.layers.1*`, `*.norm*`). Raises ConfigError naming `key` for an empty term or
    `all` combined with anything (it already includes everything)."""
    terms = [t.strip() for t in re.split(r"[+,]", spec)]
    if not spec.strip() or any(not t for t in terms):
        raise ConfigError(f"{key} = {spec!r} has an empty term; write e.g. all, projector, "
                          f"projector+lora, or module globs such as projector,decoder.model.layers.1.*")
    if "all" in terms and len(terms) > 1:
        raise ConfigError(f"{key} = {spec!r}: `all` already trains every parameter; drop the other terms")
    for t in terms:
        if t not in TRAINABLE_GROUPS and not re.fullmatch(r"[A-Za-z0-9_.*?\[\]!-]+", t):
            raise ConfigError(f"{key}: term {t!r} is neither one of {', '.join(TRAINABLE_GROUPS)} nor a "
                              f"glob over module names (letters, digits, _ . * ? [ ])")
    return list(dict.fromkeys(terms))


@dataclass
class LoraConfig:
    """LoRA adapters (through `peft`) that `train.trainable` = `...+lora` adds and trains."""

    rank: int = option(8, "rank r of each adapter's low-rank update", ge=1, le=1024)
    alpha: float = option(16.0, "scaling numerator: the update is scaled by alpha / rank", gt=0)
    dropout: float = option(0.05, "dropout on the adapter's input during training", ge=0, lt=1)
    target_modules: list[str] = option(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                       help="decoder Linear layers that get an adapter, by name or "
                                            "name suffix (peft's target_modules); empty = none")
    vision_target_modules: list[str] = option(default_factory=list,
                                              help="vision-tower Linear layers that get an adapter "
                                                   "(e.g. qkv, proj for a timm ViT); empty = the tower "
                                                   "gets none")


@dataclass
class ModelConfig:
    """MultimodalLM: vision tower (timm or Hugging Face) -> projector -> causal LM decoder, image features at `<img>` slots."""

    scale: str = option("debug", "named size of both halves (see `medmix model info`)", choices=SCALES)
    vision_scale: str = option("", "vision encoder size when it differs from `scale`", choices=("",) + SCALES)
    language_scale: str = option("", "decoder size when it differs from `scale`", choices=("",) + SCALES)
    image_size: int = option(224, "side of the square image the ViT sees, px (the stream resizes to it)", ge=16, le=1024)
    num_image_tokens: int = option(16, "decoder positions each image occupies (ViT features pooled to this many)", ge=1, le=1024)
    projector: str = option("mlp", "vision -> language projector: linear, mlp (2 layers, GELU, dropout), or llava "
                                   "(LLaVA's multi_modal_projector: linear_1, GELU, linear_2; weights map to and from "
                                   "LLaVA checkpoints)", choices=("linear", "mlp", "llava"))
    projector_path: str = option("", "local weights for the projector: a .safetensors file or a directory of them "
                                     "(a LLaVA model's multi_modal_projector.* tensors are found by name); '' = "
                                     "random init")
    vision_checkpoint: str = option("", "local timm checkpoint file (.safetensors, or a .pth state dict read weights-only) for the ViT; pkg:<package>/<file> = inside an installed package; '' = random init")
    decoder_path: str = option("", "local Hugging Face model directory or .gguf file for the decoder (its shape overrides the language scale; a LLaVA directory gives its language model); pkg:<package>/<file> = inside an installed package; '' = random init from the scale")
    gguf_cache: bool = option(True, "keep the fp32 weights dequantised from a .gguf decoder_path in the medmix cache "
                                     "(<cache>/gguf, 4 bytes a parameter; $MEDMIX_CACHE_DIR else ~/.cache/medmix): "
                                     "every later load (each worker, restart, replica) reads them in seconds "
                                     "instead of dequantising again; false = dequantise on every load")
    vision_timm: str = option("", "timm model name whose architecture is the vision tower (any ViT-family model "
                                  "that yields patch tokens; patch size and grid from the model, weights from "
                                  "model.vision_checkpoint); '' = the vision scale's ViT")
    vision_path: str = option("", "local Hugging Face vision model directory (SigLIP, CLIP, a LLaVA's tower, or a "
                                  "vision config AutoModel resolves) with its image processor config; its shape and "
                                  "preprocessing replace the vision scale's; pkg:<package>/<dir> = inside an "
                                  "installed package")
    vision_feature_layer: int = option(-1, "tower layer whose patch tokens go to the projector: -1 = the final "
                                           "output (with the tower's last norm), -2 = the second-to-last "
                                           "block's output (LLaVA), k >= 1 = after block k", ge=-64, le=64)
    llava_path: str = option("", "local LlavaForConditionalGeneration directory (weights, config, processor, "
                                 "tokenizer) to start from: sets model.vision_path, decoder_path and "
                                 "projector_path to it, projector = llava, and image_size, num_image_tokens "
                                 "(one per patch) and vision_feature_layer from its config.json, so the model "
                                 "computes what the LLaVA does; pkg:<package>/<dir> = inside an installed package")
    freeze_vision: bool = option(False, "keep the vision encoder's weights fixed during training")
    dropout: float = option(0.0, "dropout in the projector and the attention of a scale-built decoder (a pretrained one keeps its own)", ge=0, lt=1)

    def validate(self) -> None:
        if self.llava_path:
            self._apply_llava()
        if self.vision_feature_layer == 0:
            raise ConfigError("model.vision_feature_layer = 0 is the patch embeddings, before any block; "
                              "use -1 (final output), -2 (LLaVA) or a block number >= 1")
        if self.vision_timm and self.vision_path:
            raise ConfigError(f"model.vision_timm = {self.vision_timm!r} and model.vision_path = "
                              f"{self.vision_path!r} both name a tower; keep one")
        if self.vision_timm or self.vision_path:
            return  # patch size and grid come from the tower: checked when it is built
        patch = 16  # every ViT on the scale ladder uses 16 px patches
        if self.image_size % patch:
            raise ConfigError(f"model.image_size = {self.image_size} must be a multiple of the ViT "
                              f"patch size {patch} (e.g. {max(patch, self.image_size // patch * patch)})")
        patches = (self.image_size // patch) ** 2
        if self.num_image_tokens > patches:
            raise ConfigError(f"model.num_image_tokens = {self.num_image_tokens} is more than the "
                              f"{patches} patches a {self.image_size} px image has; lower it or raise "
                              f"model.image_size")

    def _apply_llava(self) -> None:
        """Fill the keys `llava_path` sets (see medmix.model.llava); a key that names another
        source for the same part is an error naming both."""
        for key in ("vision_path", "decoder_path", "projector_path"):
            value = getattr(self, key)
            if value and value != self.llava_path:
                raise ConfigError(f"model.llava_path = {self.llava_path!r} supplies the {key.split('_')[0]}, "
                                  f"but model.{key} = {value!r} names another; drop one of them")
        for key in ("vision_timm", "vision_checkpoint"):
            if getattr(self, key):
                raise ConfigError(f"model.llava_path = {self.llava_path!r} supplies the vision tower, but "
                                  f"model.{key} = {getattr(self, key)!r} names a timm one; drop one of them")
        if self.vision_path == self.decoder_path == self.projector_path == self.llava_path \
                and not is_llava_dir(self.llava_path):
            return  # filled in already (an export's or checkpoint's config, read where the LLaVA is not)
        for key, value in llava_settings(self.llava_path).items():
            setattr(self, key, value)
