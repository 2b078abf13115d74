"""What medmix keeps of a GGUF file so that it is converted once, not on every load.

Reading a GGUF file through transformers converts it on every call: SmolLM2-135M takes ~6 s for
its config, ~20 s to dequantise its weights and ~5 s to convert its vocabulary, on one core —
and every Ray Train worker, restart and Serve replica reads the decoder and the tokenizer again.
The first reader therefore keeps the results as plain Hugging Face files in the medmix cache:

    <cache_root()>/gguf/<file stem>-<key>/
        config.json           the decoder's config (always; a few KB)
        model.safetensors     its fp32 weights (unless model.gguf_cache = false: 4 bytes a parameter)
        tokenizer/            the tokenizer directory save_pretrained writes

`key` hashes the file's resolved path, size and mtime and the transformers version, so an
edited or replaced file, or a transformers upgrade, converts afresh. Every file lands by an
atomic rename: concurrent workers may both convert, and neither ever reads half a file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medmix.storage import cache_root


def gguf_cache_dir(path: Path) -> Path:
    """Where the converted forms of the GGUF file `path` are kept."""
    import transformers
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{transformers.__version__}"
                         .encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{path.stem}-{key}"


def write_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """`write(tmp)` to a sibling temporary name, then rename it to `target`: a reader sees all of
    it or nothing. `tmp` may be a file or a directory; an existing `target` directory is kept
    (another process converted the same thing first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():   # a directory another writer renamed into place first
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def load_gguf_tokenizer(path: Path):
    """transformers' tokenizer for the GGUF file `path`, converted once and then read from the cache."""
    from transformers import AutoTokenizer
    cached = gguf_cache_dir(path) / "tokenizer"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached), local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    write_atomically(cached, lambda tmp: tok.save_pretrained(str(tmp)))
    return tok
