"""One tracking URI per job: resolved on the driver, pinned into the config, checked reachable."""

from __future__ import annotations

import socket

import pytest

from medmix.commands.tracking_server import server_command
from medmix.lineage.backend import LineageError, check_tracking_server, pin_tracking_uri
from medmix.lineage.config import TrackerConfig


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_the_driver_pins_its_environment_uri_into_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    cfg = TrackerConfig(root=str(tmp_path))
    assert pin_tracking_uri(cfg) == f"sqlite:///{tmp_path}/env.db"
    assert cfg.tracking_uri == f"sqlite:///{tmp_path}/env.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")   # a worker without the variable still uses it
    assert pin_tracking_uri(cfg) == f"sqlite:///{tmp_path}/env.db"


def test_without_a_server_the_pinned_store_is_the_roots_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackerConfig(root=str(tmp_path / "runs"))
    assert pin_tracking_uri(cfg) == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"


def test_an_unreachable_server_is_one_error_naming_the_uri(tmp_path):
    url = dead_url()
    with pytest.raises(LineageError, match=rf"MLflow tracking server {url} is unreachable.*medmix tracking-server"):
        check_tracking_server(url, timeout=2)
    cfg = TrackerConfig(root=str(tmp_path), tracking_uri=url)
    with pytest.raises(LineageError, match=url):
        pin_tracking_uri(cfg)
    assert list(tmp_path.iterdir()) == []


def test_tracking_server_proxies_artifacts_to_the_given_destination(tmp_path):
    cmd = server_command(tmp_path / "t", "s3://bucket/mlflow", "0.0.0.0", 5001, 2)
    assert cmd[1] == "server" and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 't' / 'mlflow.db'}"
    assert "--allowed-hosts" in cmd           # reachable from other nodes by any name
    local = server_command(tmp_path / "t", None, "127.0.0.1", 5000, 1)
    assert local[local.index("--artifacts-destination") + 1] == (tmp_path / "t" / "artifacts").as_uri()


def test_tracking_server_starts_mlflows_job_runner_only_when_asked():
    from medmix.commands.tracking_server import server_env
    off = server_env({"PATH": "/bin"}, jobs=False)
    assert off["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and off["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert server_env({}, jobs=True)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
    # what the user set in the server's environment wins
    assert server_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}, jobs=False)["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"
