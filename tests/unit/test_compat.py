"""The torchvision fix: importing medmix is cheap, and timm imports in a fresh process."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_import_medmix_does_not_import_torch():
    assert run("import medmix, sys; print('torch' in sys.modules)") == "False"


def test_timm_and_transformers_import_after_medmix_in_a_fresh_process():
    code = ("import medmix, timm, torch\n"
            "from transformers import LlamaForCausalLM\n"
            "m = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0)\n"
            "print(tuple(m(torch.zeros(1, 3, 224, 224)).shape))")
    assert run(code) == "(1, 192)"
