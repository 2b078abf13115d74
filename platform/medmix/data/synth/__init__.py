"""The bundled synthetic suite: a learnable, deterministic counterpart of MultiMedBench."""

from medmix.data.synth.config import SynthConfig

__all__ = ["SynthConfig"]
