"""A tiny LLaVA directory, as `LlavaForConditionalGeneration.save_pretrained` + its processor write
it (built from config: nothing downloads): a CLIP or SigLIP tower at 32 px with 8 px patches
(16 image tokens), a 2-layer Llama, a byte-level BPE tokenizer with `<image>`, and a chat
template.

    path = save_tiny_llava(tmp_path / "llava", tower="clip")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TEXT = ("USER: what does the chest x-ray show? ASSISTANT: a small left pleural effusion. "
        "question: which finding is present? options: effusion, nodule, normal. answer: normal. "
        "the lesion is benign melanoma nevus dermatoscopy image patient history age sex")
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% if m['content'] is string %}"
                 "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
                 "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
                 "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %} {% endfor %}"
                 "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
IMAGE_SIZE, PATCH = 32, 8
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT] * 8, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   extra_special_tokens={"image_token": "<image>"})


def save_tiny_llava(path: Path, tower: str = "clip", seed: int = 0, feature_layer: int = -2) -> Path:
    """Write a tiny LLaVA (weights, config, processor, tokenizer, chat template) into `path`."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, SiglipImageProcessor,
                              SiglipVisionConfig)
    tokenizer = tiny_tokenizer()
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                 image_size=IMAGE_SIZE, patch_size=PATCH)
    if tower == "clip":
        vision, strategy, extra = CLIPVisionConfig(**shape), "default", 1
        images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                    crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    else:
        vision, strategy, extra = SiglipVisionConfig(**shape), "full", 0
        images = SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    text = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=feature_layer,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy=strategy, image_seq_length=NUM_IMAGE_TOKENS)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=PATCH,
                   vision_feature_select_strategy=strategy, num_additional_image_tokens=extra,
                   chat_template=CHAT_TEMPLATE).save_pretrained(path)
    return Path(path)


def sample_image(seed: int = 0) -> np.ndarray:
    """A 32x32 RGB uint8 image (the tower's size: no resampling on either side)."""
    return (np.random.default_rng(seed).random((IMAGE_SIZE, IMAGE_SIZE, 3)) * 255).astype(np.uint8)
