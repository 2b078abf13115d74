"""medmix: train, sweep and serve a generalist biomedical multimodal model on Ray."""

from medmix._compat import ensure_torchvision_importable as _ensure_torchvision_importable

__version__ = "0.1.0"

_ensure_torchvision_importable()
