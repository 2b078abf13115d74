"""The mixture plan: weights, deterministic global batches, exact resume, per-task epochs."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from medmix.options import ConfigError
from medmix.data.mixture import (MixturePlan, TaskOrder, apply_floor_cap, rank_slice, resolve_weights,
                                 stratified_counts)
from medmix.data.config import MixtureConfig

ROWS = {"cxr_report": 900, "cxr_classify": 300, "medqa": 120, "derm_pad": 60, "vqa_rad": 25, "pubmedqa": 40}


def shards_of(rows: dict[str, int], per_shard: int = 32) -> dict[str, list[tuple[str, int]]]:
    out = {}
    for task, n in rows.items():
        sizes = [per_shard] * (n // per_shard) + ([n % per_shard] if n % per_shard else [])
        out[task] = [(f"{task}/train/part-{i:05d}.parquet", k) for i, k in enumerate(sizes)]
    return out


def plan_for(weights=None, seed=0, batch=16, mode="stratified", window=16, rows=ROWS) -> MixturePlan:
    weights = weights or resolve_weights(MixtureConfig(), rows)
    return MixturePlan(weights, shards_of(rows), seed=seed, global_batch_size=batch, mode=mode,
                       shuffle_window=window)


def ids(batches) -> list[list[tuple]]:
    return [[(r.task, r.example_index) for r in b] for b in batches]


# -- weights -------------------------------------------------------------------------------

def test_medpalm_weights_normalised_over_tasks_with_rows():
    w = resolve_weights(MixtureConfig(), ROWS)
    assert set(w) == set(ROWS)
    assert w["pubmedqa"] == 0.0  # evaluation-only in the paper
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["cxr_report"] / w["medqa"] == pytest.approx(59.90 / 3.13)


def test_proportional_temperature_floor_and_cap():
    cfg = MixtureConfig(strategy="proportional")
    w = resolve_weights(cfg, ROWS)
    assert w["cxr_report"] == pytest.approx(900 / sum(ROWS.values()))
    flat = resolve_weights(MixtureConfig(strategy="proportional", temperature=1e6), ROWS)
    assert max(flat.values()) - min(flat.values()) < 1e-3  # temperature -> inf: uniform
    clamped = resolve_weights(MixtureConfig(strategy="proportional", floor=0.05, cap=0.4), ROWS)
    assert sum(clamped.values()) == pytest.approx(1.0)
    assert min(clamped.values()) == pytest.approx(0.05) and max(clamped.values()) == pytest.approx(0.4)
    # free tasks keep their relative sizes
    assert clamped["cxr_classify"] / clamped["medqa"] == pytest.approx(300 / 120)


def test_explicit_weights_replacements_tasks_and_exclude():
    w = resolve_weights(MixtureConfig(strategy="explicit", weights={"medqa": 1, "derm_pad": 3}), ROWS)
    assert w == {"derm_pad": 0.75, "medqa": 0.25}
    w = resolve_weights(MixtureConfig(weights={"pubmedqa": 10.0}, exclude=["cxr_report"]), ROWS)
    assert "cxr_report" not in w and w["pubmedqa"] > 0.3
    w = resolve_weights(MixtureConfig(strategy="proportional", tasks=["medqa", "derm_pad"]), ROWS)
    assert w == pytest.approx({"medqa": 120 / 180, "derm_pad": 60 / 180})


@pytest.mark.parametrize("cfg,match", [
    (MixtureConfig(weights={"no_such_task": 1.0}), r"mixture\.weights: unknown task 'no_such_task'"),
    (MixtureConfig(tasks=["medqa", "nope"]), r"mixture\.tasks: unknown task 'nope'"),
    (MixtureConfig(weights={"medqa": -1.0}), r"mixture\.weights\.medqa = -1\.0"),
    (MixtureConfig(strategy="explicit", weights={"medqa": 0.0}), r"every weight is zero"),
    (MixtureConfig(weights={"slake_vqa": 2.0}), r"mixture\.weights\.slake_vqa = 2\.0 but task 'slake_vqa' has no train rows"),
    (MixtureConfig(tasks=["slake_vqa"]), r"mixture\.tasks: task 'slake_vqa' has no train rows"),
    (MixtureConfig(floor=0.3), r"mixture\.floor = 0\.3 x 5 tasks"),
])
def test_weight_errors_name_the_key_and_task(cfg, match):
    with pytest.raises(ConfigError, match=match):
        resolve_weights(cfg, ROWS)


def test_floor_cap_water_filling():
    w = apply_floor_cap({"a": 0.9, "b": 0.08, "c": 0.02, "z": 0.0}, floor=0.1, cap=0.6)
    assert w["z"] == 0.0 and sum(w.values()) == pytest.approx(1.0)
    assert w["a"] == pytest.approx(0.6) and w["c"] == pytest.approx(0.1)
    assert w["b"] == pytest.approx(0.3)


# -- determinism ---------------------------------------------------------------------------

def test_same_seed_same_sequence_other_seed_different():
    a, b, c = plan_for(seed=7), plan_for(seed=7), plan_for(seed=8)
    seq_a, seq_b, seq_c = ids(a.batches(50)), ids(b.batches(50)), ids(c.batches(50))
    assert seq_a == seq_b
    assert seq_a != seq_c
    assert Counter(t for batch in seq_a for t, _ in batch) == Counter(t for batch in seq_c for t, _ in batch)


def test_batches_are_drawn_in_order():
    plan = plan_for()
    plan.batch(0)
    with pytest.raises(ValueError, match="plan is at step 1, asked for step 5"):
        plan.batch(5)


def test_random_mode_fractions_within_one_percent():
    weights = resolve_weights(MixtureConfig(), ROWS)
    for seed in (0, 1):
        plan = plan_for(weights, seed=seed, batch=32, mode="random")
        plan.batches(1000)
        stats = plan.stats()
        assert stats["examples"] == 32_000
        for task, s in stats["tasks"].items():
            assert abs(s["fraction"] - weights[task]) < 0.01, (task, s)
    # the shares really are random per batch: the cxr_report count varies
    plan = plan_for(weights, batch=32, mode="random")
    assert len({sum(r.task == "cxr_report" for r in b) for b in plan.batches(50)}) > 3


def test_stratified_every_batch_matches_the_allocation():
    weights = resolve_weights(MixtureConfig(floor=0.0), ROWS)
    active = sorted(t for t, w in weights.items() if w > 0)
    plan = plan_for(weights, batch=16)
    carry: dict[str, float] = {}
    quota_total = Counter()
    for _ in range(300):
        expected = stratified_counts({t: weights[t] for t in active}, carry, 16)
        got = Counter(r.task for r in plan.batch())
        assert dict(got) == {t: n for t, n in expected.items() if n}
        assert set(got) == set(active)  # the paper's rule: every task in every batch
        quota_total.update(got)
    # realised mix: small tasks are lifted to one slot per batch, the rest tracks its quota
    per_batch = {t: quota_total[t] / 300 for t in active}
    assert per_batch["vqa_rad"] == 1.0
    assert per_batch["cxr_report"] > per_batch["cxr_classify"] > per_batch["derm_pad"]


def test_stratified_small_batches_track_the_target_with_carry():
    weights = {"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05}
    plan = MixturePlan(weights, shards_of({"a": 100, "b": 100, "c": 100, "d": 100}), seed=0,
                       global_batch_size=3, shuffle_window=8)
    counts = Counter()
    for step in range(1, 401):
        counts.update(r.task for r in plan.batch())
        for t, w in weights.items():  # cumulative count within one example of its quota
            assert abs(counts[t] - w * 3 * step) < 1.0 + 1e-9, (t, step)


# -- epochs and order ----------------------------------------------------------------------

def test_no_repeat_within_a_task_epoch_and_epochs_cover_every_row():
    plan = plan_for(batch=16)
    seen: dict[tuple[str, int], list[int]] = {}
    for batch in plan.batches(200):
        for r in batch:
            seen.setdefault((r.task, r.epoch), []).append(r.example_index)
    for (task, epoch), idx in seen.items():
        assert len(idx) == len(set(idx)), (task, epoch)
        if plan.epochs[task] > epoch:  # a finished epoch saw every row exactly once
            assert sorted(idx) == list(range(ROWS[task]))
    stats = plan.stats()["tasks"]
    assert stats["vqa_rad"]["epoch"] >= 7 and stats["vqa_rad"]["repeats"] > 0
    assert stats["cxr_report"]["repeats"] == stats["cxr_report"]["count"] - ROWS["cxr_report"]


def test_weight_zero_task_never_appears():
    plan = plan_for(batch=16, mode="random")
    assert all(r.task != "pubmedqa" for b in plan.batches(300) for r in b)
    assert "pubmedqa" not in plan.orders and "pubmedqa" in plan.task_names


def test_task_order_permutes_shards_per_epoch_and_shuffles_within_windows():
    shards = [(f"s{i}", 10) for i in range(8)]
    order = TaskOrder("t", shards, seed=3, shuffle_window=5)
    epoch0 = [order.ref(0, p) for p in range(80)]
    epoch1 = [order.ref(1, p) for p in range(80)]
    assert sorted(r.example_index for r in epoch0) == list(range(80))
    assert [r.shard for r in epoch0[::10]] != [r.shard for r in epoch1[::10]]  # shard order differs
    assert [r.example_index for r in epoch0] != sorted(r.example_index for r in epoch0)
    # a window of 5 positions stays inside 5 consecutive rows of the epoch's shard sequence
    for w in range(16):
        rows = epoch0[w * 5:(w + 1) * 5]
        assert len({r.shard for r in rows}) <= 2
    assert order.ref(0, 80 + 7) == order.ref(1, 7)  # positions roll into the next epoch


# -- state and resume ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["stratified", "random"])
def test_resume_from_saved_state_equals_uninterrupted(mode):
    full = plan_for(mode=mode, batch=16)
    uninterrupted = ids(full.batches(120))
    first = plan_for(mode=mode, batch=16)
    first.batches(47)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    assert len(json.dumps(state)) < 2000
    resumed = plan_for(mode=mode, batch=16)
    resumed.load_state_dict(state)
    assert ids(resumed.batches(73)) == uninterrupted[47:]


def test_resume_with_a_different_world_size_sees_the_same_global_batches():
    before = plan_for(batch=16)
    global_batches = ids(before.batches(40))
    run = plan_for(batch=16)  # 2 ranks until step 15 ...
    for _ in range(15):
        b = run.batch()
        assert rank_slice(b, 0, 2) + rank_slice(b, 1, 2) == b
    state = run.state_dict()
    resumed = [plan_for(batch=16) for _ in range(4)]  # ... then 4 ranks, each with its own plan copy
    for p in resumed:
        p.load_state_dict(state)
    for step in range(15, 40):
        slices = [rank_slice(p.batch(step), r, 4) for r, p in enumerate(resumed)]
        assert ids([sum(slices, [])])[0] == global_batches[step]


def test_rank_slice_rules():
    assert rank_slice(list(range(8)), 1, 4) == [2, 3]
    with pytest.raises(ConfigError, match="not divisible by 3 ranks"):
        rank_slice(list(range(8)), 0, 3)
    with pytest.raises(ValueError, match="rank 4"):
        rank_slice(list(range(8)), 4, 4)


def test_state_from_another_plan_is_refused():
    state = plan_for(seed=1).state_dict()
    with pytest.raises(ValueError, match="differs in: seed"):
        plan_for(seed=2).load_state_dict(state)
    plan_for(seed=2).load_state_dict(state, strict=False)


def test_stratified_share_shift_is_measured_and_warned(caplog):
    from medmix.data.mixture import share_shifts, stratified_shares
    weights = resolve_weights(MixtureConfig(floor=0.0), ROWS)
    shares = stratified_shares(weights, 16)
    plan = plan_for(weights, batch=16)
    drawn = Counter(r.task for _ in range(400) for r in plan.batch())
    for t, share in shares.items():  # the analytic share is the realised one
        assert drawn[t] / (400 * 16) == pytest.approx(share, abs=0.01)
    moved = share_shifts(weights, 16)
    assert "vqa_rad" in moved and moved["vqa_rad"][1] == pytest.approx(1 / 16)
    with caplog.at_level("WARNING", logger="medmix.data.mixture"):
        plan_for(weights, batch=16)
    assert "stratified batches of 16 move" in caplog.text and "vqa_rad" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="medmix.data.mixture"):
        plan_for({"cxr_report": 0.5, "medqa": 0.5}, batch=16)
    assert caplog.text == ""  # shares equal to the weights: no warning
