"""Shard store: bounded atomic part files, manifest last, verify catches damage, rollback is exact —
each on a local folder and on a real S3 server (moto), where there is no rename."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from medmix.data.schema import Example, RowError
from medmix.data.store import ShardStore, StoreConfig, StoreError, read_rows


def make(i: int, task: str = "medqa", split: str = "train") -> Example:
    return Example(example_id=f"{task}-{i:04d}", task=task, split=split,
                   context={"question": f"q{i}", "options": ["a", "b"]}, target="a", label=0,
                   source=f"test:{i}")


@pytest.fixture(params=["local", "s3"])
def backend(request):
    """Where the test's store lives: a local folder, or a fresh bucket on the S3 server."""
    if request.param == "local":
        return None
    server = request.getfixturevalue("s3_env")
    return f"s3://{server.bucket('store')}"


def small_store(tmp_path, rows_per_shard=4, root: str | None = None) -> ShardStore:
    root = f"{root}/store" if root else str(tmp_path / "store")
    return ShardStore(root, StoreConfig(root=root, max_rows_per_shard=rows_per_shard, row_group_rows=2))


def all_files(store: ShardStore) -> list[str]:
    """Every file or object under the store root, relative to it."""
    return sorted(f.relative_to(store.loc) for f in store.loc.files())


def test_transaction_writes_bounded_shards_and_manifest(tmp_path, backend):
    store = small_store(tmp_path, root=backend)
    with store.transaction(source={"kind": "test", "path": "x"}) as tx:
        for i in range(10):
            tx.add(make(i))
        tx.add(make(99, split="test"))
    shards = store.shards(task="medqa", split="train")
    assert [s.rows for s in shards] == [4, 4, 2]
    assert store.counts() == {"medqa": {"train": 10, "test": 1}}
    with store.path(shards[0]).open_input() as f:
        assert pq.ParquetFile(f).metadata.num_row_groups == 2
    assert store.verify() == []
    rows = read_rows(store.root, shards[1].path, [3, 0])
    assert [r["example_id"] for r in rows] == ["medqa-0007", "medqa-0004"]
    assert store.manifest()["sources"][0]["rows"] == 11


def test_failed_transaction_leaves_store_exactly_as_it_was(tmp_path, backend):
    store = small_store(tmp_path, root=backend)
    with store.transaction() as tx:
        for i in range(5):
            tx.add(make(i))
    before = store.manifest_path.read_bytes()
    files_before = all_files(store)
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as tx:
            for i in range(100, 111):  # flushes two part files before failing
                tx.add(make(i))
            raise RuntimeError("boom")
    assert store.manifest_path.read_bytes() == before
    assert all_files(store) == files_before


def test_duplicate_ids_rejected_within_and_across_transactions(tmp_path):
    store = small_store(tmp_path)
    with store.transaction() as tx:
        tx.add(make(1))
    with pytest.raises(RowError, match="duplicate example_id 'medqa-0001'"):
        with store.transaction() as tx:
            tx.add(make(1))
    with pytest.raises(RowError, match="duplicate"):
        with store.transaction() as tx:
            tx.add(make(2))
            tx.add(make(2))


def test_unknown_task_and_bad_split_name_the_field(tmp_path):
    store = small_store(tmp_path)
    with pytest.raises(RowError, match="field task = 'nope'"):
        with store.transaction(known_tasks={"medqa"}) as tx:
            tx.add(make(1, task="nope"))
    with pytest.raises(RowError, match="field split = 'dev'"):
        with store.transaction() as tx:
            tx.add(make(1, split="dev"))


@pytest.mark.parametrize("damage, word", [("truncate", "truncated"), ("modify", "sha256"), ("delete", "missing")])
def test_verify_names_the_damaged_shard(tmp_path, backend, damage, word):
    store = small_store(tmp_path, root=backend)
    with store.transaction() as tx:
        for i in range(8):
            tx.add(make(i))
    victim = store.path(store.shards()[1])
    data = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "modify":
        victim.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        victim.delete()
    problems = store.verify()
    assert len(problems) == 1 and str(victim) in problems[0] and word in problems[0]


def test_replace_tasks_swaps_shards_atomically(tmp_path, backend):
    store = small_store(tmp_path, root=backend)
    with store.transaction() as tx:
        for i in range(6):
            tx.add(make(i))
    old = {s.path for s in store.shards()}
    with store.transaction(replace_tasks={"medqa"}) as tx:
        for i in range(3):
            tx.add(make(i))  # same ids are fine: the old rows go away
    assert store.counts() == {"medqa": {"train": 3}}
    assert store.verify() == []
    assert not any(store.path(p).exists() for p in old - {s.path for s in store.shards()})


def test_missing_and_damaged_manifest_errors(tmp_path):
    store = small_store(tmp_path)
    with pytest.raises(StoreError, match="manifest.json is missing"):
        store.manifest()
    store.loc.mkdirs()
    store.manifest_path.write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.manifest()
    store.manifest_path.write_text(json.dumps({"schema_version": 99, "shards": []}))
    with pytest.raises(StoreError, match="schema_version 99"):
        store.manifest()


def test_rewriting_the_same_rows_keeps_names_and_digest(tmp_path, backend):
    store = small_store(tmp_path, root=backend)

    def write(ids):
        with store.transaction(replace_tasks={"medqa"}) as tx:
            for i in ids:
                tx.add(make(i))

    write(range(10))
    first, digest = [s.path for s in store.shards()], store.digest()
    write(range(10))  # a re-run synth: identical rows
    assert [s.path for s in store.shards()] == first and store.digest() == digest
    assert [f for f in all_files(store) if f.endswith(".parquet")] == sorted(first)
    write(range(1, 11))  # different rows: new names, new digest, old files gone
    assert store.digest() != digest and not set(first) & {s.path for s in store.shards()}
    assert len([f for f in all_files(store) if f.endswith(".parquet")]) == 3 and store.verify() == []


def test_failed_rewrite_of_identical_rows_keeps_the_listed_files(tmp_path, backend):
    store = small_store(tmp_path, root=backend)
    with store.transaction(replace_tasks={"medqa"}) as tx:
        for i in range(10):
            tx.add(make(i))
    before = store.manifest_path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction(replace_tasks={"medqa"}) as tx:
            for i in range(10):  # the first two parts come out byte-identical to the listed ones
                tx.add(make(i))
            raise RuntimeError("boom")
    assert store.manifest_path.read_bytes() == before and store.verify() == []


KILLED_WRITER = """
import os, sys
sys.path.insert(0, {tests!r})
from medmix.data.store import ShardStore, StoreConfig
from test_store import make
root = {root!r}
store = ShardStore(root, StoreConfig(root=root, max_rows_per_shard=4, row_group_rows=2))
tx = store.transaction(replace_tasks={{"medqa"}})
tx.__enter__()
for i in range(100, 111):  # flushes two part files, then the process dies before its commit
    tx.add(make(i))
os._exit(9)
"""


def test_writer_killed_mid_commit_leaves_the_manifest_and_a_rerun_completes(tmp_path, backend):
    """A process that dies between its part files and its manifest (SIGKILL, power loss) leaves
    the committed manifest as it was: readers see the old rows only; a re-run commits."""
    import subprocess
    import sys
    from pathlib import Path
    store = small_store(tmp_path, root=backend)
    with store.transaction() as tx:
        for i in range(5):
            tx.add(make(i))
    before, rows_before = store.manifest_path.read_bytes(), store.counts()
    script = KILLED_WRITER.format(tests=str(Path(__file__).parent), root=store.root)
    proc = subprocess.run([sys.executable, "-c", script], env=dict(__import__("os").environ))
    assert proc.returncode == 9
    assert len(all_files(store)) > len(store.shards()) + 1  # the dead writer's parts are there…
    assert store.manifest_path.read_bytes() == before        # …but nothing lists them
    assert store.counts() == rows_before and store.verify() == []
    with store.transaction(replace_tasks={"medqa"}) as tx:   # the re-run
        for i in range(100, 111):
            tx.add(make(i))
    assert store.counts() == {"medqa": {"train": 11}} and store.verify() == []
