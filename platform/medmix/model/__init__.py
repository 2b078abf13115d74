"""medmix.model: timm ViT -> projector -> transformers causal LM, image features at `<img>` slots.

    from medmix.model import build_model, generate, score_options, save_exported, load_exported

Attributes load lazily (PEP 562) so that `medmix.config`, which imports `model.config`, does
not pull torch, timm and transformers into every `medmix --help`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "medmix.model.config",
    "SCALES": "medmix.model.config",
    "MultimodalLM": "medmix.model.multimodal",
    "MultimodalOutput": "medmix.model.multimodal",
    "build_model": "medmix.model.multimodal",
    "generate": "medmix.model.generation",
    "score_options": "medmix.model.generation",
    "OptionScores": "medmix.model.generation",
    "save_exported": "medmix.model.export",
    "load_exported": "medmix.model.export",
    "resolve_scales": "medmix.model.scales",
    "resolve_local_path": "medmix.model.paths",
    "export_gguf_tokenizer": "medmix.model.decoder",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'medmix.model' has no attribute {name!r}")
