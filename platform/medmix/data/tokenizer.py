"""Tokenizer config (the implementation lands with `medmix tokenizer train`)."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.config import option


@dataclass
class TokenizerConfig:
    """The text tokenizer: trained BPE on the store's text, or the decoder's own."""

    path: str = option("", "tokenizer.json to use; '' = <store root>/tokenizer/tokenizer.json (trained on the store)")
    vocab_size: int = option(4096, "BPE vocabulary size when training on the store's text", ge=64, le=1_000_000)
    min_frequency: int = option(2, "minimum pair frequency for a BPE merge", ge=1)
