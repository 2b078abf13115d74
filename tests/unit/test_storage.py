"""medmix.storage: one layer for local paths and s3:// URIs, tried on a real S3 server (moto)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from medmix.storage import StorageError, check_reachable, is_uri, location, normalize


def test_local_paths_become_absolute_and_writes_leave_no_temp_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = location("data")
    assert loc.is_local and loc.uri == str(tmp_path / "data") and normalize("data") == loc.uri
    f = loc.join("a", "b.txt")
    f.write_text("hello")
    assert f.read_text() == "hello" and Path(f) == tmp_path / "data" / "a" / "b.txt"
    assert [p.name for p in loc.join("a").children()] == ["b.txt"]  # no .tmp left behind
    assert f.size() == 5 and f.parent.join("b.txt") == f
    f.delete()
    assert not f.exists() and loc.join("missing").children() == []


def test_uris_are_checked_for_scheme_bucket_and_query():
    assert is_uri("s3://b/k") and not is_uri("/tmp/x")
    with pytest.raises(StorageError, match="unsupported storage scheme 'gs'"):
        location("gs://b/k")
    with pytest.raises(StorageError, match="no bucket"):
        location("s3:///k")
    with pytest.raises(StorageError, match="AWS_ENDPOINT_URL"):
        location("s3://b/k?endpoint_override=x")
    with pytest.raises(StorageError, match="needs a local path"):
        location("s3://b/k").local_path()


def test_objects_round_trip_on_s3(s3_env):
    bucket = s3_env.bucket()
    root = location(f"s3://{bucket}/prefix")
    assert not root.is_local and root.uri == f"s3://{bucket}/prefix"
    obj = root.join("x", "y.json")
    obj.write_text('{"a": 1}')
    assert obj.read_text() == '{"a": 1}' and obj.is_file() and obj.uri == f"s3://{bucket}/prefix/x/y.json"
    assert [p.uri for p in root.files()] == [obj.uri]
    assert obj.sha256() == location_sha(b'{"a": 1}')
    obj.delete()
    assert not obj.exists() and root.files() == []
    assert check_reachable(root.uri) == root


def location_sha(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()


def test_missing_bucket_is_one_line_naming_the_uri(s3_env):
    with pytest.raises(StorageError) as err:
        check_reachable("s3://no-such-bucket/data")
    msg = str(err.value)
    assert msg.startswith("s3://no-such-bucket/data: the bucket 'no-such-bucket' does not exist")
    assert s3_env.endpoint in msg and "\n" not in msg


def test_unreachable_endpoint_fails_fast_naming_it(monkeypatch):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    t0 = time.time()
    with pytest.raises(StorageError) as err:
        check_reachable("s3://bucket/data")
    assert time.time() - t0 < 20
    msg = str(err.value)
    assert msg.startswith("s3://bucket/data: cannot reach the S3 endpoint") and f"127.0.0.1:{port}" in msg
    assert "\n" not in msg


def test_refused_credentials_name_the_uri_and_what_to_check(monkeypatch):
    from tests.conftest import start_s3_server
    server = start_s3_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # moto checks keys from now on
    try:
        for k, v in server.env.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(StorageError) as err:
            check_reachable("s3://bucket/data")
        msg = str(err.value)
        assert msg.startswith("s3://bucket/data: the S3 endpoint") and "refused the credentials" in msg
        assert "AWS_ACCESS_KEY_ID" in msg and "medmix-test-secret" not in msg
    finally:
        server.proc.kill()
        server.proc.wait()


def test_local_paths_always_pass_the_reachability_check(tmp_path):
    assert check_reachable(tmp_path / "not-yet").uri == str(tmp_path / "not-yet")
    assert not (tmp_path / "not-yet").exists()  # checking creates nothing


def test_local_copy_downloads_a_folder_and_removes_it_afterwards(s3_env):
    from medmix.storage import local_copy
    root = location(f"s3://{s3_env.bucket()}/ckpt")
    root.join("medmix.json").write_text("{}")
    root.join("shards", "0.distcp").write_bytes(b"\x00\x01")
    with local_copy(root.uri) as local:
        assert (local / "medmix.json").read_text() == "{}"
        assert (local / "shards" / "0.distcp").read_bytes() == b"\x00\x01"
    assert not local.exists()
