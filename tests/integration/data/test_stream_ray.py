"""The per-rank stream on a real local Ray: plan ids, tensors, exact resume, corrupt shards."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from medmix.data.encode import IGNORE_INDEX
from medmix.data.images import encode_npy, encode_png
from medmix.data.collate import build_batch
from medmix.data.mixture import ExampleRef, MixturePlan, rank_slice
from medmix.data.schema import Example
from medmix.data.store import ShardStore, StoreConfig
from medmix.data.stream import (LocalStream, RayStream, StreamError, build_stream, iter_split,
                                make_batch_spec)
from medmix.data.config import StreamConfig
from medmix.data.tokenizer import MedmixTokenizer, TokenizerConfig, train_tokenizer

WEIGHTS = {"derm_pad": 2.0, "mimic3_summary": 1.0, "medqa": 1.0, "volume_report": 1.0, "pubmedqa": 0.0}
IMAGE_SIZE, IMAGE_TOKENS = 32, 4
WORDS = "heart lung clear effusion opacity left right small large normal no acute process".split()


def build_store(root) -> ShardStore:
    """Four trained tasks (one multi-image) + a weight-0 one, small shards and row groups."""
    store = ShardStore(root, StoreConfig(root=str(root), max_rows_per_shard=12, row_group_rows=4))
    rng = np.random.default_rng(0)
    with store.transaction() as tx:
        for i in range(40):
            img = (rng.random((30 + i % 9, 44, 3)) * 255).astype(np.uint8)  # odd aspect ratios
            tx.add(Example(f"derm-{i}", "derm_pad", "train", {"age": 20 + i, "region": "arm"},
                           ["melanoma", "nevus"][i % 2], f"t:{i}", images=[encode_png(img)],
                           image_format="png", label=i % 2))
        for i in range(30):
            words = [WORDS[(i + k * 5) % len(WORDS)] for k in range(15)]
            tx.add(Example(f"sum-{i}", "mimic3_summary", "train", {"findings": " ".join(words)},
                           " ".join(words[:4]), f"t:{i}"))
        for i in range(14):
            tx.add(Example(f"qa-{i}", "medqa", "train", {"question": f"Which finding {WORDS[i % 13]}?",
                                                         "options": ["edema", "opacity", "normal"]},
                           "opacity", f"t:{i}"))
            tx.add(Example(f"vol-{i}", "volume_report", "train", {"modality": "CT"}, "No focal lesion.",
                           f"t:{i}", images=[encode_npy(rng.random((20, 20)).astype(np.float32))
                                             for _ in range(2 + i % 2)], image_format="npy"))
            tx.add(Example(f"pm-{i}", "pubmedqa", "train", {"abstract": "x", "question": "y?"}, "yes", f"t:{i}"))
        for i in range(5):
            tx.add(Example(f"sum-val-{i}", "mimic3_summary", "val", {"findings": "normal heart"}, "normal", "v"))
    return store


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    store = build_store(tmp_path_factory.mktemp("stream") / "store")
    tok = MedmixTokenizer.from_file(train_tokenizer(store, TokenizerConfig(vocab_size=512)))
    ids = {}
    for s in store.shards():
        for row, eid in enumerate(pq.read_table(store.path(s), columns=["example_id"]).column(0).to_pylist()):
            ids[(s.path, row)] = eid
    return store, tok, ids


def new_plan(store, batch=8, seed=0) -> MixturePlan:
    return MixturePlan.from_store(store, WEIGHTS, seed=seed, global_batch_size=batch, shuffle_window=8)


def plan_ids(store, ids, steps, rank=0, world=1, seed=0) -> list[list[str]]:
    plan = new_plan(store, seed=seed)
    return [[ids[(r.shard, r.row)] for r in rank_slice(plan.batch(), rank, world)] for _ in range(steps)]


CFG = StreamConfig(max_seq_len=512, steps_per_block=4, prefetch_batches=2)


def test_ray_stream_yields_the_plans_examples_as_tensors(ray_local, data):
    store, tok, ids = data
    for rank in (0, 1):
        stream = build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG,
                              rank=rank, world_size=2, end_step=10)
        assert isinstance(stream, RayStream)
        batches = list(stream)
        assert [b["example_ids"] for b in batches] == plan_ids(store, ids, 10, rank, 2)
        assert [b.step for b in batches] == list(range(10))
        for b in batches:
            n, width = b["input_ids"].shape
            assert n == 4 and b["labels"].shape == b["attention_mask"].shape == (n, width)
            assert b["input_ids"].dtype == torch.int64
            assert b["pixel_values"].shape == (int(b["image_counts"].sum()), 3, IMAGE_SIZE, IMAGE_SIZE)
            assert "pubmedqa" not in b["tasks"]
            assert [stream.task_names[i] for i in b["task_ids"].tolist()] == b["tasks"]
            for i in range(n):
                length = int(b["attention_mask"][i].sum())
                ids_i, labels_i = b["input_ids"][i], b["labels"][i]
                assert (b["attention_mask"][i, :length] == 1).all() and (ids_i[length:] == tok.pad_id).all()
                assert ids_i[0] == tok.bos_id and ids_i[length - 1] == tok.eos_id
                target = labels_i != IGNORE_INDEX
                assert target[length - 1] and not target[:length // 4].any() and not target[length:].any()
                assert (labels_i[target] == ids_i[target]).all()
                assert int((ids_i == tok.image_token_id).sum()) == IMAGE_TOKENS * int(b["image_counts"][i])
        stats = stream.stats()
        assert stats["step"] == 10 and stats["batches"] == 10 and stats["skipped"] == 0
        assert 0 <= stats["data_wait_fraction"] <= 1 and stats["data_wait_s"] > 0
        assert stream.state_dict() == _state_after(store, 10)


def _state_after(store, steps):
    plan = new_plan(store)
    plan.batches(steps)
    return plan.state_dict()


def test_local_stream_builds_identical_batches(ray_local, data):
    store, tok, _ = data
    ray_batches = list(build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG, end_step=5))
    local = build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG, end_step=5, use_ray=False)
    assert isinstance(local, LocalStream)
    for a, b in zip(ray_batches, local, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]


def test_resume_with_another_world_size_sees_the_uninterrupted_ids(ray_local, data):
    store, tok, ids = data
    uninterrupted = plan_ids(store, ids, 14)
    # 2 ranks for 6 steps; the checkpoint holds rank 0's stream state
    first = build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG, rank=0, world_size=2)
    seen = [next(first)["example_ids"] for _ in range(6)]
    state = first.state_dict()
    first.close()
    assert state["step"] == 6 and first.plan.step == 6  # close() rewinds the prepared-ahead plan
    assert seen == [rank_slice(b, 0, 2) for b in uninterrupted[:6]]
    # resume on 4 ranks from that state: together they see exactly the rest of the run
    per_rank = []
    for rank in range(4):
        plan = new_plan(store)
        plan.load_state_dict(state)
        stream = build_stream(plan, store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG, rank=rank, world_size=4,
                              end_step=14, use_ray=rank == 0)  # rank 0 through Ray, the rest in-process
        per_rank.append([b["example_ids"] for b in stream])
    assert [sum(parts, []) for parts in zip(*per_rank)] == uninterrupted[6:]


def test_seed_changes_the_sequence(data):
    store, _, ids = data
    assert plan_ids(store, ids, 5, seed=0) == plan_ids(store, ids, 5, seed=0)
    assert plan_ids(store, ids, 5, seed=0) != plan_ids(store, ids, 5, seed=1)


def _corrupt_copy(store, tok, tmp_path) -> tuple[ShardStore, str, list[int]]:
    root = tmp_path / "corrupt"
    shutil.copytree(store.root, root)
    copy = ShardStore(root)
    shard = copy.shards(task="derm_pad")[1]
    path = copy.path(shard)
    data = bytearray(path.read_bytes())
    mid = len(data) // 3
    data[mid:mid + 1500] = np.random.default_rng(1).integers(0, 256, 1500, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    # which rows are now unusable (an unreadable page, or image bytes whose PNG checksum fails)
    spec = make_batch_spec(new_plan(copy), copy.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG)
    bad = []
    for row in range(shard.rows):
        try:
            build_batch(spec, [ExampleRef("derm_pad", shard.path, row, 0, 0, 0)])
        except StreamError:
            bad.append(row)
    assert bad, "the overwrite must damage at least one row"
    return copy, shard.path, bad


def test_corrupt_shard_fails_naming_shard_and_row(ray_local, data, tmp_path):
    store, tok, _ = data
    copy, shard, bad = _corrupt_copy(store, tok, tmp_path)
    stream = build_stream(new_plan(copy), copy.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG, end_step=30)
    good = 0
    with pytest.raises(StreamError) as info:
        for b in stream:
            assert len(b["example_ids"]) == 8  # every batch before the failure is whole
            good += 1
    msg = str(info.value)
    assert str(Path(copy.root) / shard) in msg
    assert any(f"row {r} " in msg for r in bad), msg
    assert f"step {good}:" in msg and "task derm_pad" in msg


def test_skip_mode_counts_replaces_and_reports(ray_local, data, tmp_path):
    store, tok, ids = data
    copy, shard, bad = _corrupt_copy(store, tok, tmp_path)
    cfg = StreamConfig(max_seq_len=512, steps_per_block=4, prefetch_batches=2, on_error="skip")
    stream = build_stream(new_plan(copy), copy.root, tok, IMAGE_SIZE, IMAGE_TOKENS, cfg, end_step=30)
    batches = list(stream)
    assert len(batches) == 30 and all(len(b["example_ids"]) == 8 for b in batches)
    bad_ids = {ids[(shard, r)] for r in bad}
    assert not bad_ids & {e for b in batches for e in b["example_ids"]}
    stats = stream.stats()
    assert stats["skipped"] >= len(bad)  # every bad row the plan drew (30 steps cover derm's epoch)
    assert {(s["shard"], s["row"]) for s in stats["skipped_rows"]} == {(shard, r) for r in bad}
    # the replacement is deterministic: the same run again gives the same batches
    again = list(build_stream(new_plan(copy), copy.root, tok, IMAGE_SIZE, IMAGE_TOKENS, cfg, end_step=30,
                              use_ray=False))
    assert [b["example_ids"] for b in again] == [b["example_ids"] for b in batches]


def test_ray_failures_on_good_data_heal_but_never_silently(ray_local, data, monkeypatch):
    """Actors engine: a failed call's step and every step in flight (concurrency 2 +
    prefetch 2 = 4) are built in-process, in order; three failures in a row fail the stream."""
    store, tok, ids = data

    def broken(call):
        raise RuntimeError("object store lost")
    monkeypatch.setattr(RayStream, "_fetch", staticmethod(broken))
    stream = build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG, end_step=8)
    assert [b["example_ids"] for b in stream] == plan_ids(store, ids, 8)  # 2 x 4 in flight, built in-process
    assert stream.stats()["ray_failures"] == 2
    stream = build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG, end_step=20)
    got = []
    with pytest.raises(RuntimeError, match="object store lost"):
        for b in stream:
            got.append(b["example_ids"])
    assert got == plan_ids(store, ids, 12)  # three failures in a row: the stream fails


def test_dataset_engine_failures_heal_but_never_silently(ray_local, data, monkeypatch):
    store, tok, ids = data
    cfg = dataclasses.replace(CFG, engine="dataset")

    def broken(self, block):
        raise RuntimeError("object store lost")
    monkeypatch.setattr(RayStream, "_dataset_block", broken)
    stream = build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, cfg, end_step=8)
    assert [b["example_ids"] for b in stream] == plan_ids(store, ids, 8)  # 2 blocks, built in-process
    assert stream.stats()["ray_failures"] == 2
    stream = build_stream(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, cfg, end_step=20)
    got = []
    with pytest.raises(RuntimeError, match="object store lost"):
        for b in stream:
            got.append(b["example_ids"])
    assert got == plan_ids(store, ids, 12)  # three blocks in a row: the stream fails


def test_iter_split_reads_a_split_in_manifest_order(data):
    store, tok, _ = data
    spec = make_batch_spec(new_plan(store), store.root, tok, IMAGE_SIZE, IMAGE_TOKENS, CFG)
    val = list(iter_split(spec, store, "mimic3_summary", "val", batch_size=2))
    assert [len(b["example_ids"]) for b in val] == [2, 2, 1]
    assert val[0]["example_ids"] == ["sum-val-0", "sum-val-1"]
    assert os.cpu_count() is not None
