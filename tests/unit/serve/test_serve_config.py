"""ServeConfig validation, the emitted Ray Serve YAML, the app builder, and token checks."""

from __future__ import annotations

import pytest
import yaml

from medmix.config import ConfigError, load_config
from medmix.serve.auth import check_header, token_digest
from medmix.serve.config import ServeConfig


def test_serve_config_validates_and_derives_batching():
    cfg = load_config("debug", ["serve.max_batch_size=24"])
    assert cfg.serve.host == "127.0.0.1"  # never exposed unless asked
    assert cfg.serve.ongoing_requests == 48 and cfg.serve.autoscale_target == 24
    with pytest.raises(ConfigError, match="serve: max_replicas = 1 is below min_replicas = 2"):
        load_config("debug", ["serve.min_replicas=2"])
    with pytest.raises(ConfigError, match="batches could never fill"):
        load_config("debug", ["serve.max_batch_size=16", "serve.max_ongoing_requests=5"])
    with pytest.raises(ConfigError, match="serve.port"):
        load_config("debug", ["serve.port=70000"])
    assert ServeConfig().num_gpus == -1
    assert ServeConfig().batching == "continuous"
    assert load_config("debug", ['serve.batching="static"']).serve.batching == "static"
    with pytest.raises(ConfigError, match="serve.batching = 'dynamic' is not one of continuous, static"):
        load_config("debug", ['serve.batching="dynamic"'])


def test_emitted_config_is_a_valid_serve_deploy_file(tmp_path, monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    from medmix.serve.server import emit_config
    monkeypatch.setenv("MEDMIX_API_TOKEN", "do-not-write-me")
    cfg = load_config("debug", ["serve.max_replicas=4", "serve.num_gpus=1", "serve.port=9000",
                                "serve.max_batch_size=8"])
    (tmp_path / "export").mkdir()
    text = emit_config(cfg, ["medmix@champion", str(tmp_path / "export")], tmp_path / "serve.yaml")
    assert "do-not-write-me" not in text and (tmp_path / "serve.yaml").read_text() == text
    data = yaml.safe_load(text)
    ServeDeploySchema.model_validate(data)
    assert data["http_options"] == {"host": "127.0.0.1", "port": 9000, "request_timeout_s": 120.0}
    (app,) = data["applications"]
    assert app["import_path"] == "medmix.serve.app:build_app"
    assert app["args"]["models"] == ["medmix@champion", str((tmp_path / "export").resolve())]
    deps = {d["name"]: d for d in app["deployments"]}
    model = deps["MedmixModel"]
    assert model["ray_actor_options"]["num_gpus"] == 1.0
    assert model["max_ongoing_requests"] == 16  # 2 x max_batch_size: batches fill
    assert model["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in model
    assert "num_gpus" not in deps["MedmixIngress"]["ray_actor_options"]
    # auto GPUs stay out of the file: the cluster decides when it builds the app
    auto = yaml.safe_load(emit_config(load_config("debug"), ["medmix@champion"]))
    assert "num_gpus" not in auto["applications"][0]["deployments"][0]["ray_actor_options"]
    assert auto["applications"][0]["deployments"][0]["num_replicas"] == 1


def test_build_app_from_yaml_args(tmp_path, monkeypatch):
    """What `serve deploy` calls: the YAML's args -> an application of the two deployments."""
    import dataclasses

    import torch

    from medmix.model import build_model, save_exported
    from medmix.serve.app import build_app
    from medmix.serve.server import serve_config
    monkeypatch.setenv("MEDMIX_API_TOKEN", "zq-Secret-9x")
    cfg = load_config("debug", ["serve.max_batch_size=4"])
    model_cfg = dataclasses.replace(cfg.model, image_size=32)
    torch.manual_seed(0)
    export = save_exported(build_model(model_cfg, vocab_size=64, image_token_id=63, pad_token_id=0),
                           tmp_path / "export", meta={"eos_id": 2, "max_seq_len": 64, "image_size": 32,
                                                      "num_image_tokens": 4})
    args = serve_config(cfg, [str(export)])["applications"][0]["args"]
    app = build_app(args)
    ingress = app._bound_deployment
    assert ingress.name == "MedmixIngress"
    model_app, entries, sections, token_sha = ingress.init_args
    assert token_sha == token_digest("zq-Secret-9x") and "zq-Secret-9x" not in str(ingress.init_args)
    assert entries[0]["id"].startswith("export-") and entries[0]["path"] == str(export.resolve())
    model = model_app._bound_deployment
    assert model.name == "MedmixModel" and model.max_ongoing_requests == 8
    assert sections["serve"]["max_batch_size"] == 4
    with pytest.raises(ValueError, match="unknown key 'bogus'"):
        build_app({**args, "bogus": 1})


def test_bearer_check():
    digest = token_digest("s3cret")
    assert token_digest("") is None
    assert check_header("Bearer s3cret", digest) is None
    assert check_header("bearer  s3cret ", digest) is None
    assert "missing" in check_header(None, digest)
    assert "Bearer <token>" in check_header("Basic czNjcmV0", digest)
    assert check_header("Bearer s3cre", digest) == "invalid API token"
    assert check_header("Bearer ", digest) is not None


def test_cli_emit_config_flags_override_the_preset(tmp_path, capsys):
    from medmix.cli import main
    out = tmp_path / "serve.yaml"
    assert main(["serve", "--model", "medmix/3", "--host", "0.0.0.0", "--port", "8123", "--gpus", "1",
                 "--set", "serve.max_batch_size=64", "--emit-config", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert data["http_options"]["host"] == "0.0.0.0" and data["http_options"]["port"] == 8123
    model = data["applications"][0]["deployments"][0]
    assert model["ray_actor_options"]["num_gpus"] == 1.0 and model["max_ongoing_requests"] == 128
    assert "serve deploy" in capsys.readouterr().out
    assert main(["serve", "--port", "0", "--emit-config", str(out)]) == 2  # out of range: a config error
