"""The named scale ladder: one size for the vision encoder, one for the decoder.

    vision, language = resolve_scales(cfg)          # cfg.vision_scale / language_scale win
    timm.create_model(vision.timm_name, **vision.timm_kwargs, ...)
    LlamaForCausalLM(language.llama_config(vocab_size=4096))

| scale | vision (timm)                     | decoder (Llama-style)                      |
|-------|-----------------------------------|--------------------------------------------|
| debug | ViT patch 16, dim 64, depth 2     | hidden 64, 2 layers, 2 heads               |
| tiny  | ViT-Ti/16 (5.5M)                  | hidden 384, 6 layers (~10M + embeddings)   |
| small | ViT-S/16 (22M)                    | SmolLM2-135M shape: 576 x 30, GQA 9/3      |
| base  | ViT-B/16 (86M)                    | Llama-3.2-1B shape: 2048 x 16, GQA 32/8    |
| large | ViT-L/16 (303M)                   | Llama-3-8B shape: 4096 x 32, GQA 32/8      |

The decoder's vocabulary is not part of a scale: it is the tokenizer's (`len(tok)`), so the
decoder's parameter count depends on it (`medmix model info` prints both). A decoder loaded
from `model.decoder_path` takes its shape from that checkpoint; `language_scale` is then only
a label. Vision scales are timm model names plus keyword overrides, so a scale can be any
`VisionTransformer` shape without registering a timm model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medmix.model.config import SCALES, ModelConfig


@dataclass(frozen=True)
class VisionScale:
    """A timm ViT: registered model name plus keyword overrides of its architecture."""

    timm_name: str
    """timm model name whose architecture is the starting point (no weights are fetched)"""
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    """VisionTransformer keyword overrides (embed_dim, depth, num_heads, ...)"""


@dataclass(frozen=True)
class LanguageScale:
    """A Llama-style decoder shape (RMSNorm, SwiGLU MLP, rotary positions, GQA)."""

    hidden_size: int
    """width of the residual stream"""
    num_layers: int
    """decoder layers"""
    num_heads: int
    """query heads; head dim = hidden_size / num_heads"""
    num_kv_heads: int
    """key/value heads (grouped-query attention when < num_heads)"""
    intermediate_size: int
    """SwiGLU hidden width"""
    rope_theta: float = 10_000.0
    """rotary embedding base"""
    max_position_embeddings: int = 4096
    """longest sequence the rotary table is sized for, tokens"""
    tie_embeddings: bool = False
    """share the input embedding matrix with the output head"""

    def llama_config(self, vocab_size: int, *, pad_token_id: int | None = None,
                     dropout: float = 0.0, max_position_embeddings: int | None = None):
        """A transformers `LlamaConfig` of this shape for a `vocab_size` tokenizer."""
        from transformers import LlamaConfig
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads,
            intermediate_size=self.intermediate_size, rope_theta=self.rope_theta,
            max_position_embeddings=max_position_embeddings or self.max_position_embeddings,
            tie_word_embeddings=self.tie_embeddings, attention_dropout=dropout,
            pad_token_id=pad_token_id, bos_token_id=None, eos_token_id=None,
            use_cache=False,  # training default; generate() asks for the cache explicitly
        )

    def num_params(self, vocab_size: int) -> int:
        """Parameter count from the shape alone (matches the built model exactly)."""
        h, f = self.hidden_size, self.intermediate_size
        kv = self.num_kv_heads * (h // self.num_heads)
        per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h  # q,o + k,v + SwiGLU + 2 norms
        embed = vocab_size * h * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embed + h  # + final norm


VISION_SCALES: dict[str, VisionScale] = {
    "debug": VisionScale("vit_tiny_patch16_224", {"embed_dim": 64, "depth": 2, "num_heads": 2}),
    "tiny": VisionScale("vit_tiny_patch16_224"),
    "small": VisionScale("vit_small_patch16_224"),
    "base": VisionScale("vit_base_patch16_224"),
    "large": VisionScale("vit_large_patch16_224"),
}

LANGUAGE_SCALES: dict[str, LanguageScale] = {
    "debug": LanguageScale(64, 2, 2, 2, 256, max_position_embeddings=2048),
    "tiny": LanguageScale(384, 6, 6, 2, 1024, max_position_embeddings=2048),
    "small": LanguageScale(576, 30, 9, 3, 1536, rope_theta=100_000.0, max_position_embeddings=8192,
                           tie_embeddings=True),
    "base": LanguageScale(2048, 16, 32, 8, 8192, rope_theta=500_000.0, max_position_embeddings=8192,
                          tie_embeddings=True),
    "large": LanguageScale(4096, 32, 32, 8, 14336, rope_theta=500_000.0, max_position_embeddings=8192),
}

assert tuple(VISION_SCALES) == SCALES and tuple(LANGUAGE_SCALES) == SCALES


def vision_scale_name(cfg: ModelConfig) -> str:
    return cfg.vision_scale or cfg.scale


def language_scale_name(cfg: ModelConfig) -> str:
    return cfg.language_scale or cfg.scale


def resolve_scales(cfg: ModelConfig) -> tuple[VisionScale, LanguageScale]:
    """The (vision, language) shapes the config asks for; `*_scale` overrides `scale`."""
    v, lang = vision_scale_name(cfg), language_scale_name(cfg)
    for key, name in (("model.vision_scale", v), ("model.language_scale", lang)):
        if name not in VISION_SCALES:
            raise ValueError(f"{key} = {name!r} is not a scale; choose one of {', '.join(SCALES)}")
    return VISION_SCALES[v], LANGUAGE_SCALES[lang]
