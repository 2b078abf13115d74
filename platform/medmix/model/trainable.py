"""What trains: LoRA adapters (through `peft`) and the trainable set of a MultimodalLM.

    report = apply_trainable(model, "projector+lora", lora_cfg)   # before FSDP and the optimizer
    report.trainable, report.frozen                              # parameter counts
    merge_lora(model)                                            # before export: plain Linears again

`train.trainable` lists the parts that train; every other parameter gets
`requires_grad=False`, so the optimizer (built from trainable parameters only) keeps no state
for it and FSDP2 reduces no gradient for it. The named parts are `projector`, `vision`,
`decoder`, `lora` (the adapters' own matrices) and `all`; any other term is a glob matched
against parameter names and every module name above them, so `decoder.model.layers.1*` trains
that layer's parameters. The usual two stages (LLaVA's recipe): `projector` first, then
`projector+lora`.

LoRA is injected in place with `peft.inject_adapter_in_model` into the decoder (and the vision
tower when `vision_target_modules` is set), so the model keeps its own class and forward; each
adapted Linear becomes a peft `lora.Linear` whose `base_layer` holds the original weight. The
same injection runs when a checkpoint is loaded (export, resume), so DCP finds the adapter
tensors under the same names; `merge_lora` folds them back into the base weights for export,
which then has the architecture of a model without adapters.

Everything here fails before training starts, naming what matched nothing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import peft
from peft.tuners.lora import LoraLayer
from torch import nn

from medmix.model.config import LoraConfig, parse_trainable
from medmix.options import ConfigError

LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.")
PARTS = ("vision", "projector", "decoder")


@dataclass
class TrainableReport:
    """Parameter counts after `apply_trainable` (shared tensors counted once)."""

    trainable: int
    frozen: int
    per_part: dict[str, tuple[int, int]]
    """part -> (trainable, frozen) for vision, projector, decoder"""
    lora_modules: int
    """Linear layers that received an adapter"""


def _adaptable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding))


def _matches(name: str, target: str) -> bool:
    """peft's rule for a string target: the module's name is it, or ends in `.target`."""
    return name == target or name.endswith("." + target)


def check_lora_targets(part: nn.Module, targets: list[str], key: str, what: str) -> None:
    """Every target names at least one Linear/Conv/Embedding module of `part`, else ConfigError."""
    names = {n: m for n, m in part.named_modules() if n}
    for target in targets:
        hits = [n for n, m in names.items() if _matches(n, target)]
        if not hits:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in names.items() if _adaptable(m)})
            raise ConfigError(f"{key}: {target!r} matches no module of the {what} "
                              f"({type(part).__name__}); its Linear/Embedding layers are named "
                              f"{', '.join(leaves[:20])}{' ...' if len(leaves) > 20 else ''}")
        bad = [n for n in hits if not _adaptable(names[n])]
        if len(bad) == len(hits):
            raise ConfigError(f"{key}: {target!r} matches {bad[0]} ({type(names[bad[0]]).__name__}), "
                              f"which LoRA cannot adapt; name Linear layers instead")


def apply_lora(model: nn.Module, cfg: LoraConfig) -> int:
    """Inject LoRA adapters into `model.decoder` (and `model.vision`); returns how many layers."""
    parts = [(model.decoder, cfg.target_modules, "train.lora.target_modules", "decoder"),
             (model.vision, cfg.vision_target_modules, "train.lora.vision_target_modules", "vision tower")]
    for part, targets, key, what in parts:
        if not targets:
            continue
        check_lora_targets(part, targets, key, what)
        config = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                 target_modules=list(targets), bias="none")
        peft.inject_adapter_in_model(config, part)
    return sum(isinstance(m, LoraLayer) for m in model.modules())


def has_lora(model: nn.Module) -> bool:
    return any(any(mark in name for mark in LORA_MARKERS) for name, _ in model.named_parameters())


def _selected(name: str, term: str, model: nn.Module) -> bool:
    if term == "all":
        return not (getattr(model, "freeze_vision", False) and name.startswith("vision."))
    if term in PARTS:
        return name.startswith(term + ".")
    if term == "lora":
        return any(mark in "." + name for mark in LORA_MARKERS)
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), term) for i in range(1, len(parts) + 1))


def select_trainable(model: nn.Module, spec: str) -> TrainableReport:
    """Set `requires_grad` from `spec` (train.trainable); a term that selects nothing is an error."""
    terms = parse_trainable(spec)
    named = list(model.named_parameters())
    chosen: set[str] = set()
    for term in terms:
        hits = {n for n, _ in named if _selected(n, term, model)}
        if not hits and term != "all":
            if term == "lora":
                raise ConfigError("train.trainable names `lora` but the model has no LoRA adapters; "
                                  "set train.lora.target_modules")
            modules = sorted({n.rsplit(".", 1)[0] for n, _ in named})
            raise ConfigError(f"train.trainable: {term!r} matches no parameter or module of the model; "
                              f"module names look like {', '.join(modules[:6])} ... (`medmix model info "
                              f"--modules` lists them all)")
        chosen |= hits
    for name, p in named:
        p.requires_grad_(name in chosen)
    return trainable_report(model)


def trainable_report(model: nn.Module) -> TrainableReport:
    per_part = {}
    for part in PARTS:
        params = list(getattr(model, part).parameters())
        t = sum(p.numel() for p in params if p.requires_grad)
        per_part[part] = (t, sum(p.numel() for p in params) - t)
    params = list(model.parameters())  # deduplicated (tied head counted once)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return TrainableReport(trainable=trainable, frozen=sum(p.numel() for p in params) - trainable,
                           per_part=per_part, lora_modules=sum(isinstance(m, LoraLayer) for m in model.modules()))


def apply_trainable(model: nn.Module, spec: str, lora: LoraConfig) -> TrainableReport:
    """LoRA when `spec` asks for it, then the trainable set. Call before FSDP and the optimizer."""
    if "lora" in parse_trainable(spec):
        apply_lora(model, lora)
    return select_trainable(model, spec)


def apply_lora_structure(model: nn.Module, spec: str, lora: LoraConfig) -> None:
    """The adapters a run with `spec` trained, without touching requires_grad (loading a checkpoint)."""
    if "lora" in parse_trainable(spec):
        apply_lora(model, lora)


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and put the base layer back; returns how many.

    The model then has exactly the architecture (and parameter names) of one built without
    adapters, which is what an export records."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf, module.get_base_layer())
            merged += 1
    return merged
