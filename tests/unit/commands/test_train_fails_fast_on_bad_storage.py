"""`medmix train` with storage or a tracking server it cannot use: one line naming the URI and
what to check, exit code 1, before anything is written — no run folder, no sqlite store, no
worker started."""

from __future__ import annotations

import os
import socket

from medmix.cli import main
from tests.conftest import start_s3_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_in_empty_dir(tmp_path, monkeypatch, capsys, *sets: str) -> tuple[int, str]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = ["train", "--preset", "debug", "--set", f'lineage.root="{tmp_path}/runs"']
    for s in sets:
        args += ["--set", s]
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert os.listdir(cwd) == [] and not (tmp_path / "runs").exists(), "something was written"
    return rc, err


def test_a_missing_bucket_names_the_uri(s3_env, tmp_path, monkeypatch, capsys):
    rc, err = train_in_empty_dir(tmp_path, monkeypatch, capsys, 'train.storage_path="s3://no-such-bucket/ckpt"')
    assert rc == 1 and len(err.splitlines()) == 1
    assert "s3://no-such-bucket/ckpt" in err and "bucket" in err, err


def test_an_unreachable_endpoint_names_it(tmp_path, monkeypatch, capsys):
    endpoint = f"http://127.0.0.1:{free_port()}"
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}.items():
        monkeypatch.setenv(k, v)
    rc, err = train_in_empty_dir(tmp_path, monkeypatch, capsys, 'train.storage_path="s3://bucket/ckpt"')
    assert rc == 1 and len(err.splitlines()) == 1
    assert "s3://bucket/ckpt" in err and endpoint in err and "AWS_ENDPOINT_URL" in err, err


def test_refused_credentials_name_the_uri(tmp_path, monkeypatch, capsys):
    server = start_s3_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})   # moto checks keys from now on
    try:
        for k, v in {**server.env, "AWS_SECRET_ACCESS_KEY": "wrong"}.items():
            monkeypatch.setenv(k, v)
        rc, err = train_in_empty_dir(tmp_path, monkeypatch, capsys, 'data.root="s3://medmix/data"',
                                     'train.storage_path="s3://medmix/ckpt"')
    finally:
        server.proc.kill()
        server.proc.wait()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "s3://medmix/ckpt" in err and "credentials" in err.lower(), err


def test_an_unreachable_tracking_server_names_it(tmp_path, monkeypatch, capsys):
    uri = f"http://127.0.0.1:{free_port()}"
    rc, err = train_in_empty_dir(tmp_path, monkeypatch, capsys, f'lineage.tracking_uri="{uri}"')
    assert rc == 1 and len(err.splitlines()) == 1
    assert uri in err and "medmix tracking-server" in err, err


def test_a_lineage_root_on_object_storage_needs_a_tracking_server(s3_env, tmp_path, monkeypatch, capsys):
    root = "s3://bucket/runs"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    assert main(["train", "--preset", "debug", "--set", f'lineage.root="{root}"']) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and root in err and "mlflow server" in err, err
    assert os.listdir(cwd) == []
