"""The debug preset on the bundled suite: `medmix tokenizer train`, and each rank's stream."""

from __future__ import annotations

import json

import pytest

from medmix.cli import main
from medmix.config import load_config
from medmix.data.mixture import MixturePlan, rank_slice
from medmix.data.store import ShardStore
from medmix.data.stream import RankStream, build_rank_stream
from medmix.data.tokenizer import META_FILE, ensure_tokenizer, load_tokenizer, resolve_path


@pytest.fixture(scope="module")
def suite_cfg(tmp_path_factory):
    from medmix.data.synth import SynthConfig, build_suite
    tmp = tmp_path_factory.mktemp("suite")
    cfg = load_config("debug", [f'data.root="{tmp}/data"', f'train.storage_path="{tmp}/runs"',
                                f'lineage.root="{tmp}/runs"'])
    build_suite(SynthConfig(size="tiny"), ShardStore(cfg.data.root), image_size=cfg.model.image_size,
                progress=False)
    return cfg


def test_tokenizer_train_verb(suite_cfg, capsys):
    root = f'data.root="{suite_cfg.data.root}"'
    assert main(["tokenizer", "train", "--set", root]) == 0
    out = capsys.readouterr().out
    path = resolve_path(suite_cfg.tokenizer, suite_cfg.data.root, suite_cfg.model.decoder_path)
    assert str(path) in out and "digest" in out
    meta = json.loads(path.with_name(META_FILE).read_text())
    assert meta["store_digest"] == ShardStore(suite_cfg.data.root).digest()
    assert main(["tokenizer", "show", "--set", root, "--text", "Given <img>."]) == 0
    assert "tokens:" in capsys.readouterr().out
    assert ensure_tokenizer(suite_cfg.tokenizer, suite_cfg.data.root, suite_cfg.model.decoder_path) == path  # up to date: reused, not retrained
    assert load_tokenizer(suite_cfg.tokenizer, suite_cfg.data.root, suite_cfg.model.decoder_path).digest == meta["sha256"]


def test_each_rank_streams_its_slice_of_the_debug_mixture(ray_local, suite_cfg):
    ensure_tokenizer(suite_cfg.tokenizer, suite_cfg.data.root, suite_cfg.model.decoder_path)
    tok = load_tokenizer(suite_cfg.tokenizer, suite_cfg.data.root, suite_cfg.model.decoder_path)
    ranks = [build_rank_stream(suite_cfg, tok, rank=r, world_size=2, use_ray=(r == 0)) for r in range(2)]
    assert isinstance(ranks[0], RankStream)
    store = ShardStore(suite_cfg.data.root)
    plan = MixturePlan.from_config(store, suite_cfg.mixture, seed=suite_cfg.seed)
    active = set(plan.active)
    assert len(active) == 12  # every suite task but PubMedQA (weight 0 in the paper's mixture)
    streams = [rs.batches(start_step=0, end_step=6) for rs in ranks]
    for step in range(6):
        global_batch = plan.batch()
        parts = [next(s) for s in streams]
        for r, b in enumerate(parts):
            assert b["tasks"] == [x.task for x in rank_slice(global_batch, r, 2)]
            assert b["input_ids"].shape[1] <= suite_cfg.stream.max_seq_len
            assert b["pixel_values"].shape[1:] == (3, 64, 64)
        # stratified debug mixture: every task with weight > 0 in every global batch of 16
        assert {t for b in parts for t in b["tasks"]} == active
    assert ranks[0].state_dict() == plan.state_dict()
    mix = ranks[0].realised_mixture()
    assert set(mix) == active and sum(mix.values()) == pytest.approx(1.0)
    # validation: the same number of batches on every rank (FSDP forwards stay in step)
    val = [rs.validation_batches(2) for rs in ranks]
    assert len(val[0]) == len(val[1]) == 2 * 12
    assert val[0][0]["example_ids"] != val[1][0]["example_ids"]
    # resume: the trainer's step must match the loaded state
    fresh = build_rank_stream(suite_cfg, tok, rank=0, world_size=2, use_ray=False)
    with pytest.raises(ValueError, match="load the checkpoint's data state"):
        fresh.batches(start_step=6)
    fresh.load_state_dict(ranks[0].state_dict())
    assert next(iter(fresh.batches(start_step=6))).step == 6
    for rs in ranks + [fresh]:
        rs.close()


def test_augmented_stream_changes_only_allowed_tasks_and_repeats_exactly(suite_cfg):
    from dataclasses import replace
    ensure_tokenizer(suite_cfg.tokenizer, suite_cfg.data.root, suite_cfg.model.decoder_path)
    tok = load_tokenizer(suite_cfg.tokenizer, suite_cfg.data.root, suite_cfg.model.decoder_path)
    aug_cfg = replace(suite_cfg, stream=replace(suite_cfg.stream, augment=True))

    def first_batches(cfg, n=4):
        rs = build_rank_stream(cfg, tok, rank=0, world_size=1, use_ray=False)
        s = rs.batches(start_step=0, end_step=n)
        out = [next(s) for _ in range(n)]
        val = rs.validation_batches(1)
        rs.close()
        return out, val

    plain, plain_val = first_batches(suite_cfg)
    aug, aug_val = first_batches(aug_cfg)
    again, _ = first_batches(aug_cfg)
    changed, kept = set(), set()
    for p, a, b in zip(plain, aug, again):
        assert p["example_ids"] == a["example_ids"]  # augmentation never changes what is drawn
        assert (a["pixel_values"] == b["pixel_values"]).all()  # seeded: a rerun sees the same pixels
        img = 0
        for task, n in zip(a["tasks"], a["image_counts"].tolist()):
            same = bool((p["pixel_values"][img:img + n] == a["pixel_values"][img:img + n]).all())
            (kept if same else changed).add(task)
            img += n
    from medmix.tasks import get_task
    assert changed and all(get_task(t).augment for t in changed)
    assert all((x["pixel_values"] == y["pixel_values"]).all() for x, y in zip(plain_val, aug_val))
