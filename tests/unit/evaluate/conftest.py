"""An untrained debug model exported next to the tiny suite: what the prediction tests load."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def random_export(tmp_path_factory, tiny_suite):
    """(export dir, store root): the debug model at its random init, saved like `medmix export`."""
    import torch

    from medmix.config import load_config
    from medmix.data.tokenizer import load_tokenizer
    from medmix.model import build_model, save_exported
    cfg = load_config("debug", [f'data.root="{tiny_suite}"'])
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    torch.manual_seed(0)
    model = build_model(cfg.model, vocab_size=len(tok), image_token_id=tok.image_token_id, pad_token_id=tok.pad_id)
    out = tmp_path_factory.mktemp("export") / "random"
    save_exported(model, out, meta={"bos_id": tok.bos_id, "eos_id": tok.eos_id, "pad_id": tok.pad_id,
                                    "image_token_id": tok.image_token_id, "max_seq_len": cfg.stream.max_seq_len,
                                    "exemplar": cfg.stream.exemplar, "image_size": cfg.model.image_size,
                                    "num_image_tokens": cfg.model.num_image_tokens})
    tok.save(out / "tokenizer.json")
    return str(out), tiny_suite
