"""Config: presets load and validate, overrides apply in order, bad values name their key path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medmix.config import (ConfigError, config_from_toml_text, flatten, list_presets, load_config,
                           read_preset, to_dict, to_toml)


@pytest.mark.parametrize("preset", list_presets())
def test_every_shipped_preset_loads_and_validates(preset):
    cfg = load_config(preset)
    assert cfg.name


def test_precedence_defaults_then_preset_then_overrides():
    default = load_config(None)
    debug = load_config("debug")
    assert default.model.num_image_tokens != debug.model.num_image_tokens  # preset wins over default
    over = load_config("debug", ["model.num_image_tokens=7", "model.num_image_tokens=9"])
    assert over.model.num_image_tokens == 9  # later --set wins


@pytest.mark.parametrize("override, fragment", [
    ("train.stepz=3", "unknown key train.stepz"),
    ("bogus.x=1", "unknown key bogus"),
    ('train.steps="ten"', "train.steps must be an integer"),
    ("train.lr=-0.1", "train.lr = -0.1 is out of range"),
    ("mixture.mode=sorted", "mixture.mode = 'sorted' is not one of"),
    ("mixture.weights={medqa=-1.0}", "weights.medqa"),
    ("train.warmup_steps=500", "warmup_steps"),
    ("train.use_gpu=maybe", "train.use_gpu"),
    ("model.freeze_vision=1", "model.freeze_vision must be true or false"),
])
def test_bad_values_are_rejected_with_key_path(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        load_config("debug", [override])


def test_unknown_preset_lists_shipped_ones():
    with pytest.raises(ConfigError, match="shipped presets: .*debug"):
        load_config("nope")


def test_preset_file_with_extends(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('extends = "debug"\nname = "mine"\n[train]\nsteps = 3\n')
    cfg = load_config(str(p))
    assert (cfg.name, cfg.train.steps, cfg.model.scale) == ("mine", 3, "debug")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps=")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        read_preset(str(bad))


def test_dry_run_toml_round_trips_exactly():
    cfg = load_config("debug", ["mixture.weights={medqa=2.0, cxr_report=1.0}", "train.steps=7"])
    text = to_toml(cfg)
    assert "# optimizer steps to train" in text  # every field carries its meaning
    again = config_from_toml_text(text)
    assert flatten(again) == flatten(cfg)


def test_cli_dry_run_prints_resolved_toml_and_rejects_bad_keys():
    out = subprocess.run([sys.executable, "-m", "medmix.cli", "tasks", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--prompt" in out.stdout


def test_a_child_preset_replaces_a_map_field_whole_and_merges_sections(tmp_path):
    """`merge="replace"` in the field's metadata, not the key's name, decides: the parent's
    `mixture.weights` do not leak into the child's, while other mixture keys still merge."""
    parent = tmp_path / "parent.toml"
    parent.write_text('[mixture]\nmode = "random"\nweights = { medqa = 1.0, cxr_report = 0.6 }\n'
                      '[sweep]\nobjective_metrics = { val_loss = 1.0 }\n')
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{parent}"\n[mixture]\nweights = {{ vqa_rad = 2.0 }}\n'
                     '[sweep]\nobjective_metrics = { "auc/cxr_classify" = 1.0 }\n')
    cfg = load_config(str(child))
    assert cfg.mixture.weights == {"vqa_rad": 2.0}
    assert cfg.mixture.mode == "random"
    assert cfg.sweep.objective_metrics == {"auc/cxr_classify": 1.0}


def test_every_map_field_declares_it_is_replaced_whole():
    """A free-form table added to any section must say how presets combine it (map_option)."""
    import dataclasses
    import typing

    from medmix.config import MedmixConfig
    from medmix.options import replaces_whole

    loose = []
    for section in dataclasses.fields(MedmixConfig):
        cls = typing.get_type_hints(MedmixConfig)[section.name]
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if typing.get_origin(hints[f.name]) is dict and not replaces_whole(f):
                loose.append(f"{section.name}.{f.name}")
    assert not loose, f"map fields without map_option: {loose}"


def test_flatten_keeps_a_map_field_as_one_param():
    cfg = load_config("debug", ["mixture.weights={medqa=1.0}"])
    flat = flatten(cfg)
    assert flat["mixture.weights"] == {"medqa": 1.0}
    assert flatten(to_dict(cfg)) == flat  # the dict form (a checkpoint's medmix.json) reads the same
