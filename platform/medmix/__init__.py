"""medmix: train, sweep and serve a generalist biomedical multimodal model on Ray."""

from medmix._compat import install_torchvision_hook as _install_torchvision_hook

__version__ = "0.1.0"

_install_torchvision_hook()
