"""The bundled synthetic suite: a learnable, deterministic counterpart of MultiMedBench.

    medmix synth --preset debug --set synth.size=small      # or: build_suite(cfg, store, 224)

Images carry the answer (lesion colour and shape decide the dermatology class, an opacity's
side and size decide the CXR findings, VQA answers are about what is drawn); reports,
classification labels and impressions come from one findings vocabulary; MCQ text comes
from one fact base. One module per family: `cxr`, `derm`, `mammo`, `slake`, `pathology`,
`facts`, `pubmed`; `suite` builds them into the store.

Only `SynthConfig` is imported eagerly: the root config imports this package, and loading a
config should not pull in numpy, PIL and pyarrow.
"""

import importlib

from medmix.data.synth.config import SynthConfig

_LAZY = {"GENERATORS": "base", "SIZES": "base", "Key": "base", "Sample": "base", "generator": "base",
         "build_suite": "suite", "build_bundled": "suite", "load_generators": "suite", "suite_tasks": "suite"}

__all__ = ["SynthConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"medmix.data.synth.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
