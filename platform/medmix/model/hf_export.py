"""Export a MultimodalLM in Hugging Face format: what plain `transformers` (and `peft`) load.

    plan = hf_plan(model)                      # HFExportError naming the part that cannot map
    save_hf(model, "out/", tok, prep)          # LlavaForConditionalGeneration + AutoProcessor
    save_hf_adapter(model, "adapter/", base_dir, tok, prep, lora_cfg)   # LoRA only, for peft

    # elsewhere, without medmix:
    model = LlavaForConditionalGeneration.from_pretrained("out/")
    processor = AutoProcessor.from_pretrained("out/")
    tuned = PeftModel.from_pretrained(LlavaForConditionalGeneration.from_pretrained(base_dir), "adapter/")

The parts map one to one onto LLaVA's when the tower is a Hugging Face CLIP or SigLIP
(`model.vision_path` / `model.llava_path`), the projector is `model.projector = "llava"` with
one image token per patch (no pooling), and the decoder's transformers architecture is one
LLaVA's language model can be (Llama, Mistral, Qwen2/3, Gemma 1-3 text; from a directory, a
GGUF file or a scale alike). Anything else — a timm tower, medmix's linear/mlp projector,
pooled image tokens, SigLIP's final-norm output (`vision_feature_layer = -1`), another decoder
family — raises `HFExportError` naming the part and the config key, before a file is written;
the medmix format (`medmix export` without `--format`) takes every combination.

Tensor names: medmix's `vision.tower.*`, `projector.*`, `decoder.model.*`, `decoder.lm_head.*`
are LLaVA's `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`,
`lm_head.*`; the modules are the same transformers classes, so the weights are copied as they are.

The processor is built from what medmix feeds the model: the tower's image size, mean and std
(`medmix.model.preprocess`), patch size and prefix tokens, the tokenizer (its image, BOS, EOS
and pad tokens) and its chat template when it has one. `generation_config.json` suppresses the
image and pad tokens, as medmix's own decoding does, so greedy generation matches.

The adapter export holds the LoRA matrices (peft's `adapter_config.json` +
`adapter_model.safetensors`, targets named by their full LLaVA module path) plus, under peft's
`modules_to_save`, full copies of every module that trained without an adapter (the projector
in stage 2). Its base is the Hugging Face model the run started from; every frozen tensor of
the run is checked equal to the base's, so the adapter on that base is the trained model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import peft
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from medmix.model.llava import PREFIX_TOKENS, STRATEGY_FOR_PREFIX, llava_feature_layer
from medmix.model.preprocess import ImagePreprocess
from medmix.model.projector import LlavaProjector
from medmix.model.trainable import LORA_MARKERS
from medmix.model.vision import HFVision

DECODER_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
"""Decoder architectures LLaVA's language model (`AutoModel.from_config(text_config)`) takes."""

# medmix prefix -> LlavaForConditionalGeneration prefix (longest first)
NAME_MAP = (("vision.tower.", "model.vision_tower."), ("projector.", "model.multi_modal_projector."),
            ("decoder.model.", "model.language_model."), ("decoder.lm_head.", "lm_head."))


class HFExportError(ValueError):
    """The model has a part LlavaForConditionalGeneration cannot express; names it."""


@dataclass(frozen=True)
class HFPlan:
    """How the model's parts map onto a LlavaConfig."""

    feature_layer: int
    """LLaVA's vision_feature_layer (hidden-state index)."""
    select_strategy: str
    """LLaVA's vision_feature_select_strategy."""
    prefix_tokens: int
    """Tokens before the tower's patch grid (the processor's num_additional_image_tokens)."""


def hf_name(name: str) -> str:
    """A medmix tensor or module name -> its LlavaForConditionalGeneration name."""
    for ours, theirs in NAME_MAP:
        if name.startswith(ours):
            return theirs + name[len(ours):]
        if name + "." == ours:
            return theirs[:-1]
    raise KeyError(f"{name!r} is in no part that maps to LLaVA")


def hf_plan(model: nn.Module) -> HFPlan:
    """Check that every part of `model` (a MultimodalLM, possibly on the meta device) maps onto
    LlavaForConditionalGeneration; raises HFExportError naming the first that does not."""
    vision, projector, decoder = model.vision, model.projector, model.decoder
    if not isinstance(vision, HFVision):
        raise HFExportError(f"cannot export in Hugging Face format: the vision tower is a timm model "
                            f"({type(getattr(vision, 'vit', vision)).__name__}; model.vision_timm / the vision "
                            f"scale), and LlavaForConditionalGeneration needs a transformers tower "
                            f"(model.vision_path = a CLIP or SigLIP directory); export with --format medmix")
    tower_type = vision.tower.config.model_type
    if tower_type not in PREFIX_TOKENS:
        raise HFExportError(f"cannot export in Hugging Face format: vision tower {tower_type!r} "
                            f"(model.vision_path) is not one LLaVA's processor handles ({', '.join(PREFIX_TOKENS)}); "
                            f"export with --format medmix")
    layer = llava_feature_layer(vision.feature_layer, vision.num_layers)
    if vision.feature_layer == -1 and PREFIX_TOKENS[tower_type] == 0:
        raise HFExportError("cannot export in Hugging Face format: model.vision_feature_layer = -1 takes the "
                            "SigLIP tower's output after its final layer norm, which LLaVA cannot select; "
                            "train with -2 (LLaVA's choice) or a block number, or export with --format medmix")
    if not isinstance(projector, LlavaProjector):
        raise HFExportError(f"cannot export in Hugging Face format: model.projector = "
                            f"{getattr(projector, 'kind', type(projector).__name__)!r} is medmix's own; LLaVA's "
                            f"multi_modal_projector is model.projector = \"llava\"; export with --format medmix")
    if model.num_image_tokens != vision.num_patches:
        raise HFExportError(f"cannot export in Hugging Face format: model.num_image_tokens = {model.num_image_tokens} "
                            f"pools the tower's {vision.num_patches} patches, and LLaVA gives every patch its own "
                            f"token; train with num_image_tokens = {vision.num_patches}, or export with --format medmix")
    decoder_type = decoder.config.model_type
    if decoder_type not in DECODER_TYPES or not hasattr(decoder, "model") or not hasattr(decoder, "lm_head"):
        raise HFExportError(f"cannot export in Hugging Face format: the decoder is a {decoder_type!r} model "
                            f"(model.decoder_path); LLaVA's language model is one of {', '.join(DECODER_TYPES)}; "
                            f"export with --format medmix")
    prefix = PREFIX_TOKENS[tower_type]
    return HFPlan(feature_layer=layer, select_strategy=STRATEGY_FOR_PREFIX[prefix], prefix_tokens=prefix)


def llava_config(model: nn.Module, plan: HFPlan):
    """The LlavaConfig of `model`'s parts."""
    from transformers import LlavaConfig
    text = type(model.decoder.config).from_dict(model.decoder.config.to_dict())
    text.use_cache = True  # medmix switches it off for training; generation wants it
    return LlavaConfig(vision_config=model.vision.tower.config.to_dict(), text_config=text.to_dict(),
                       image_token_index=model.image_token_id, image_seq_length=model.num_image_tokens,
                       vision_feature_layer=plan.feature_layer, vision_feature_select_strategy=plan.select_strategy,
                       projector_hidden_act="gelu", multimodal_projector_bias=True,
                       tie_word_embeddings=bool(text.tie_word_embeddings))


def _to_llava(model: nn.Module, plan: HFPlan, dtype: torch.dtype | None = None):
    """A LlavaForConditionalGeneration holding `model`'s tensors (no copy of the weights is
    initialised: it is built on the meta device and the tensors are assigned)."""
    from transformers import LlavaForConditionalGeneration
    config = llava_config(model, plan)
    with torch.device("meta"):
        hf = LlavaForConditionalGeneration(config)
    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t
    missing, unexpected = hf.load_state_dict({hf_name(n): cast(t) for n, t in model.state_dict().items()},
                                             strict=False, assign=True)
    for name, buf in model.named_buffers():  # non-persistent ones too (rotary tables, position ids)
        owner, _, leaf = hf_name(name).rpartition(".")
        hf.get_submodule(owner)._buffers[leaf] = buf
    if config.tie_word_embeddings:
        hf.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    left = [n for n, t in list(hf.named_parameters()) + list(hf.named_buffers()) if t.is_meta]
    if missing or unexpected or left:
        raise HFExportError(f"the model's tensors do not fill a LlavaForConditionalGeneration: missing "
                            f"{sorted(set(missing) | set(left))[:5]}, unexpected {sorted(unexpected)[:5]}")
    return hf.eval()


def generation_config(model: nn.Module, tok):
    """Greedy decoding as medmix's: stop at the tokenizer's EOS, never emit the image or pad token."""
    from transformers import GenerationConfig
    return GenerationConfig(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=model.pad_token_id,
                            suppress_tokens=sorted({tok.image_token_id, tok.pad_id} - {tok.eos_id}))


def build_processor(model: nn.Module, plan: HFPlan, tok, prep: ImagePreprocess):
    """The LlavaProcessor that feeds the exported model what medmix feeds it."""
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessor, LlavaProcessor, PreTrainedTokenizerFast, SiglipImageProcessor
    backend = Tokenizer.from_str(tok.to_str())
    name = backend.id_to_token
    image_token = name(tok.image_token_id)
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=name(tok.bos_id),
                                   eos_token=name(tok.eos_id), pad_token=name(tok.pad_id),
                                   extra_special_tokens={"image_token": image_token})
    side = {"height": prep.size, "width": prep.size}
    stats = {"image_mean": list(prep.mean), "image_std": list(prep.std)}
    if plan.prefix_tokens:  # CLIP-style: shortest edge, then the centre crop (a square resize on square images)
        images = CLIPImageProcessor(size={"shortest_edge": prep.size}, crop_size=side, **stats)
    else:
        images = SiglipImageProcessor(size=side, **stats)
    return LlavaProcessor(image_processor=images, tokenizer=fast, patch_size=model.vision.patch_size,
                          vision_feature_select_strategy=plan.select_strategy,
                          num_additional_image_tokens=plan.prefix_tokens, image_token=image_token,
                          chat_template=getattr(tok, "chat_template", None))


def save_hf(model: nn.Module, out_dir: str | os.PathLike, tok, prep: ImagePreprocess, *,
            dtype: torch.dtype | None = None) -> Path:
    """Write `model` (LoRA merged) as a LlavaForConditionalGeneration directory with its processor."""
    plan = hf_plan(model)
    if any(any(m in n for m in LORA_MARKERS) for n, _ in model.named_parameters()):
        raise HFExportError("the model still holds LoRA adapters: merge them (merge_lora) before save_hf, "
                            "or write them alone with save_hf_adapter")
    processor = build_processor(model, plan, tok, prep)
    hf = _to_llava(model, plan, dtype)
    hf.generation_config = generation_config(model, tok)
    out = Path(out_dir)
    hf.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _owner(name: str) -> str:
    return name.rpartition(".")[0]


def save_hf_adapter(model: nn.Module, out_dir: str | os.PathLike, base_dir: str | os.PathLike, tok,
                    prep: ImagePreprocess, lora) -> Path:
    """Write the LoRA adapters of `model` (not merged; `requires_grad` marking what trained) as a
    peft adapter of the Hugging Face model at `base_dir`, with the processor beside it.

    Args:
        base_dir: a LlavaForConditionalGeneration directory holding the weights the run started
            from; a frozen tensor that differs from the base's is an HFExportError naming it.
        lora: the run's `train.lora` (rank, alpha, dropout).
    """
    from transformers import LlavaForConditionalGeneration

    plan = hf_plan(model)
    adapted = [n for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    if not adapted:
        raise HFExportError("the run trained no LoRA adapters (train.trainable has no `lora`): export the whole "
                            "model with --format hf")
    params = dict(model.named_parameters())
    lora_params = {n for n in params if any(m in "." + n for m in LORA_MARKERS)}
    trained = {n for n, p in params.items() if p.requires_grad and n not in lora_params}
    save_modules = sorted({_owner(n) for n in trained})
    clash = [m for m in save_modules if m.removesuffix(".base_layer") in adapted]
    if clash:
        raise HFExportError(f"{clash[0]} trained both its own weights and a LoRA adapter; an adapter export "
                            f"cannot hold that: export the merged model with --format hf")
    base_path = Path(base_dir)
    base = LlavaForConditionalGeneration.from_pretrained(str(base_path), dtype=torch.float32).eval()
    theirs = base.state_dict()
    for name, tensor in model.state_dict().items():
        if name in lora_params or name in trained:
            continue
        key = hf_name(name.replace(".base_layer.", "."))
        if key not in theirs or theirs[key].shape != tensor.shape or not torch.equal(theirs[key], tensor):
            what = "has no" if key not in theirs else "differs in"
            raise HFExportError(f"--base {base_path}: {what} {key} (medmix {name}), which the run kept frozen; the "
                                f"adapter's base must be the model the run started from")
    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                             target_modules=[hf_name(n) for n in adapted],
                             modules_to_save=[hf_name(m) for m in save_modules] or None)
    tuned = peft.get_peft_model(base, config)
    slots = dict(tuned.named_parameters())
    with torch.no_grad():
        for name in sorted(lora_params | trained):
            hf = hf_name(name)
            if name in trained:
                owner, _, leaf = hf.rpartition(".")
                hf = f"{owner}.modules_to_save.default.{leaf}"
            slot = slots.get("base_model.model." + hf)
            if slot is None or slot.shape != params[name].shape:
                raise HFExportError(f"peft built no {hf} of shape {tuple(params[name].shape)} for medmix {name}")
            slot.copy_(params[name])
    out = Path(out_dir)
    tuned.save_pretrained(str(out))
    adapter_config = out / "adapter_config.json"
    data = json.loads(adapter_config.read_text())
    data["base_model_name_or_path"] = str(base_path.resolve())
    adapter_config.write_text(json.dumps(data, indent=2))
    build_processor(model, plan, tok, prep).save_pretrained(out)
    generation_config(model, tok).save_pretrained(out)
    return out


__all__ = ["HFExportError", "HFPlan", "hf_name", "hf_plan", "llava_config",
           "build_processor", "generation_config", "save_hf", "save_hf_adapter"]
