"""Make `import timm` work where torchvision's compiled ops cannot load.

PyPI's torchvision is a CUDA build; next to a CPU-only torch its `_C.so` fails to load, and
`import torchvision` then dies registering fake kernels for `torchvision::nms` ("operator
torchvision::nms does not exist"), which takes `import timm` down with it. medmix needs none
of torchvision's detection ops, so when (and only when) the library cannot load we define
the op schemas its fake-kernel registrations need (nms, qnms, roi_align) before torchvision is first imported.

`install_torchvision_hook()` runs from `medmix/__init__.py`, so every process that imports
medmix — Ray workers included, since they import medmix to unpickle our functions — gets a
meta-path hook that applies the fix the moment torchvision is first imported (by timm or
transformers), and costs nothing (no torch import) in processes that never import it. Where
torchvision is healthy the probe loads its own `_C.so`, which torchvision would have loaded
anyway.
"""

from __future__ import annotations

import importlib.util
import os
import sys

_DONE = False


class _TorchvisionHook:
    """Meta-path finder that fixes torchvision just before its first import, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TorchvisionHook)]
            ensure_torchvision_importable()
        return None  # let the normal finders import it


def install_torchvision_hook() -> None:
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionHook())


def ensure_torchvision_importable() -> None:
    global _DONE
    if _DONE or "torchvision" in sys.modules:
        _DONE = True
        return
    _DONE = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    folder = list(spec.submodule_search_locations)[0]
    lib = next((os.path.join(folder, n) for n in os.listdir(folder)
                if n.startswith("_C.") and n.endswith((".so", ".pyd"))), None)
    if lib is not None:
        try:
            torch.ops.load_library(lib)
            return  # healthy torchvision: nothing to do
        except (OSError, RuntimeError, ImportError):
            pass
    try:
        torch.ops.torchvision.nms  # registered by someone else already
        return
    except (AttributeError, RuntimeError):
        pass
    _define_fallback_ops(torch)


def _define_fallback_ops(torch) -> None:
    # Schemas only: torchvision's ops check `_has_ops()` themselves and raise a clear error
    # if called, and medmix never calls them; the schemas just let `register_fake` succeed.
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
               "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor")
    global _FALLBACK_LIBRARY
    _FALLBACK_LIBRARY = lib  # a Library object unregisters its ops when collected


_FALLBACK_LIBRARY = None
