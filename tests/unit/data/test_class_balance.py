"""Class balancing in the mixture plan: minority classes / positives drawn `factor` times as
often within their task, deterministic, exact on resume (also onto another world size), the
realised class mix in the stats, and clear errors for tasks without classes (issue 16)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from medmix.data.config import MixtureConfig
from medmix.data.mixture import (BalancedOrder, MixturePlan, TaskOrder, balanced_labels, rank_slice,
                                 resolve_class_balance)
from medmix.data.schema import Example
from medmix.data.store import ShardStore, StoreConfig
from medmix.options import ConfigError

# VinDr-Mammo-like BI-RADS 1..5 (label = option index) and a CXR condition with 20% positives
MAMMO = [0] * 600 + [1] * 250 + [2] * 60 + [3] * 50 + [4] * 40
CXR = [0] * 100 + [1] * 400           # label 0 = "yes" (options ("yes", "no"))
ROWS = {"mammo_vindr": len(MAMMO), "cxr_classify": len(CXR), "medqa": 120}
WEIGHTS = {"mammo_vindr": 0.4, "cxr_classify": 0.4, "medqa": 0.2}


def shards_of(rows: dict[str, int], per_shard: int = 64) -> dict[str, list[tuple[str, int]]]:
    out = {}
    for task, n in rows.items():
        sizes = [per_shard] * (n // per_shard) + ([n % per_shard] if n % per_shard else [])
        out[task] = [(f"{task}/train/part-{i:05d}.parquet", k) for i, k in enumerate(sizes)]
    return out


def labels_for(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)  # labels scattered over the shards, as real data has them
    return {"mammo_vindr": rng.permutation(MAMMO), "cxr_classify": rng.permutation(CXR)}


def plan_for(balance=None, seed=0, batch=16, mode="stratified", weights=WEIGHTS, rows=ROWS, labels=None):
    return MixturePlan(weights, shards_of(rows), seed=seed, global_batch_size=batch, mode=mode,
                       shuffle_window=32, class_balance=balance, task_labels=labels or labels_for())


PAPER = {"mammo_vindr": 3.0, "cxr_classify": 2.0}


def ids(batches) -> list[list[tuple]]:
    return [[(r.task, r.example_index) for r in b] for b in batches]


def test_which_classes_are_balanced():
    birads = ("BI-RADS 1", "BI-RADS 2", "BI-RADS 3", "BI-RADS 4", "BI-RADS 5")
    counts = dict(Counter(MAMMO))
    assert balanced_labels(birads, counts) == [2, 3, 4]         # below 1/5 of the rows
    assert balanced_labels(("yes", "no"), {0: 400, 1: 100}) == [0]  # positives even when common
    assert balanced_labels(("yes", "no"), {1: 100}) == []


def test_realised_class_frequencies_match_the_factors():
    labels = labels_for()
    plan = plan_for(PAPER, labels=labels)
    drawn = {t: Counter() for t in PAPER}
    for batch in plan.batches(400):
        for r in batch:
            if r.task in drawn:
                drawn[r.task][int(labels[r.task][r.example_index])] += 1
    # mammo: 600, 250 once; 60, 50, 40 three times -> 1300 draws an epoch
    expect = {"mammo_vindr": {0: 600, 1: 250, 2: 180, 3: 150, 4: 120},
              "cxr_classify": {0: 200, 1: 400}}
    for task, per_class in expect.items():
        n = sum(drawn[task].values())
        assert n > 2000
        total = sum(per_class.values())
        for c, k in per_class.items():
            p = k / total
            sigma = (p * (1 - p) / n) ** 0.5
            assert abs(drawn[task][c] / n - p) < 4 * sigma, (task, c, drawn[task][c] / n, p)
    stats = plan.stats()["tasks"]
    cls = stats["cxr_classify"]["classes"]
    assert cls["yes"]["factor"] == 2.0 and cls["no"]["factor"] == 1.0
    assert cls["yes"]["target"] == pytest.approx(1 / 3) and cls["yes"]["row_share"] == pytest.approx(0.2)
    assert cls["yes"]["count"] == drawn["cxr_classify"][0]
    assert cls["yes"]["fraction"] == pytest.approx(drawn["cxr_classify"][0] / sum(drawn["cxr_classify"].values()))
    assert stats["mammo_vindr"]["classes"]["BI-RADS 5"]["factor"] == 3.0
    assert "classes" not in stats["medqa"]
    # the task shares are those of the weights: balancing acts within the task only
    plain = plan_for(None)
    plain.batches(400)
    assert {t: s["count"] for t, s in stats.items()} == {t: s["count"] for t, s in plain.stats()["tasks"].items()}


def test_every_row_of_a_balanced_class_appears_factor_times_an_epoch():
    labels = np.array(CXR)
    order = BalancedOrder("cxr_classify", shards_of({"c": 500})["c"], seed=3, shuffle_window=32,
                          labels=labels, factors={0: 2.0})
    assert order.epoch_length == 600 and order.num_rows == 500
    for epoch in (0, 1):
        refs = [order.ref(epoch, p) for p in range(600)]
        per_row = Counter(r.example_index for r in refs)
        assert all(per_row[i] == (2 if labels[i] == 0 else 1) for i in range(500))
        # each ref points at its row: shard + row is the manifest index
        assert all(r.row == r.example_index % 64 and r.shard.endswith(f"{r.example_index // 64:05d}.parquet")
                   for r in refs)
    assert order.ref(0, 600 + 5) == order.ref(1, 5)
    assert [order.ref(0, p).example_index for p in range(50)] != [order.ref(1, p).example_index for p in range(50)]
    # classes are spread through the epoch, not in blocks
    first_half = sum(labels[order.ref(0, p).example_index] == 0 for p in range(300))
    assert 70 < first_half < 130
    # skip mode rebuilds the unbalanced order from the spec
    assert TaskOrder(**order.spec()).num_rows == 500
    # a non-integer factor: round(rows x factor) draws of the class
    odd = BalancedOrder("cxr_classify", [("a", 500)], seed=0, shuffle_window=8, labels=labels, factors={0: 1.5})
    assert odd.slots == {0: 150, 1: 400}


def test_deterministic_and_changes_only_the_balanced_tasks():
    a, b, c = plan_for(PAPER, seed=5), plan_for(PAPER, seed=5), plan_for(PAPER, seed=6)
    sa, sb, sc = ids(a.batches(60)), ids(b.batches(60)), ids(c.batches(60))
    assert sa == sb and sa != sc
    plain = ids(plan_for(None, seed=5).batches(60))
    # same slots per task and the same medqa draws; the balanced tasks' rows differ
    assert [sorted(t for t, _ in x) for x in sa] == [sorted(t for t, _ in x) for x in plain]
    assert [[i for t, i in x if t == "medqa"] for x in sa] == [[i for t, i in x if t == "medqa"] for x in plain]
    assert [[i for t, i in x if t == "mammo_vindr"] for x in sa] != [[i for t, i in x if t == "mammo_vindr"] for x in plain]


@pytest.mark.parametrize("mode", ["stratified", "random"])
def test_resume_mid_epoch_equals_uninterrupted(mode):
    uninterrupted = ids(plan_for(PAPER, mode=mode).batches(200))
    first = plan_for(PAPER, mode=mode)
    first.batches(47)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    assert 0 < state["cursors"]["mammo_vindr"] < first.orders["mammo_vindr"].epoch_length
    assert len(json.dumps(state)) < 2000
    resumed = plan_for(PAPER, mode=mode)
    resumed.load_state_dict(state)
    assert resumed.stats()["tasks"]["mammo_vindr"]["classes"] == first.stats()["tasks"]["mammo_vindr"]["classes"]
    assert ids(resumed.batches(153)) == uninterrupted[47:]  # past the balanced epochs' ends too
    full = plan_for(PAPER, mode=mode)
    full.batches(200)
    assert resumed.state_dict() == full.state_dict()


def test_resume_onto_another_world_size():
    global_batches = ids(plan_for(PAPER).batches(60))
    run = plan_for(PAPER)
    run.batches(21)
    state = run.state_dict()
    ranks = [plan_for(PAPER) for _ in range(4)]
    for p in ranks:
        p.load_state_dict(state)
    for step in range(21, 60):
        slices = [rank_slice(p.batch(step), r, 4) for r, p in enumerate(ranks)]
        assert ids([sum(slices, [])])[0] == global_batches[step]


def test_a_state_from_another_balance_is_refused():
    state = plan_for(None).state_dict()
    with pytest.raises(ValueError, match="differs in: class_balance"):
        plan_for(PAPER).load_state_dict(state)
    state = plan_for({"mammo_vindr": 3.0}).state_dict()
    with pytest.raises(ValueError, match="differs in: class_balance"):
        plan_for(PAPER).load_state_dict(state)


@pytest.mark.parametrize("balance,match", [
    ({"medqa": 2.0}, r"mixture\.class_balance\.medqa = 2\.0: task 'medqa' \(mcq\) has no class labels"),
    ({"cxr_report": 2.0}, r"mixture\.class_balance\.cxr_report = 2\.0: task 'cxr_report' \(report\)"),
    ({"no_such_task": 2.0}, r"mixture\.class_balance: unknown task 'no_such_task'"),
    ({"mammo_vindr": 0.5}, r"mixture\.class_balance\.mammo_vindr = 0\.5 is not a factor >= 1"),
])
def test_bad_factors_name_the_key(balance, match):
    with pytest.raises(ConfigError, match=match):
        resolve_class_balance(balance, WEIGHTS)
    with pytest.raises(ConfigError, match=match):
        plan_for(balance)


def test_config_key_checked_when_the_config_loads():
    from medmix.config import load_config
    assert load_config("small").mixture.class_balance == PAPER  # the paper's, in the GPU presets
    with pytest.raises(ConfigError, match=r"mixture\.class_balance\.cxr_classify = 0\.0"):
        load_config("debug", ["mixture.class_balance.cxr_classify=0.0"])


# -- from a store: labels read from the rows -------------------------------------------------

def store_with(tmp_path, cxr_labels, extra=()) -> ShardStore:
    root = str(tmp_path / "store")
    store = ShardStore(root, StoreConfig(root=root, max_rows_per_shard=16, row_group_rows=4))
    with store.transaction(source={"kind": "test"}) as tx:
        for i, label in enumerate(cxr_labels):
            tx.add(Example(example_id=f"c{i}", task="cxr_classify", split="train", context={"condition": "edema"},
                           target=("yes", "no")[label] if label is not None else "no", label=label,
                           source=f"test:{i}"))
        for i in range(10):
            tx.add(Example(example_id=f"q{i}", task="medqa", split="train",
                           context={"question": "q", "options": ["a", "b"]}, target="a", label=0,
                           source=f"test:{i}"))
        for ex in extra:
            tx.add(ex)
    return store


def test_from_config_reads_labels_from_the_store(tmp_path):
    labels = [0 if i % 5 == 0 else 1 for i in range(40)]
    store = store_with(tmp_path, labels)
    cfg = MixtureConfig(strategy="explicit", weights={"cxr_classify": 1.0, "medqa": 1.0},
                        class_balance={"cxr_classify": 4.0}, global_batch_size=8)
    plan = MixturePlan.from_config(store, cfg, seed=0)
    order = plan.orders["cxr_classify"]
    assert isinstance(order, BalancedOrder) and order.slots == {0: 32, 1: 32}
    rows = {s.path: store.read_shard(s).to_pylist() for s in store.shards(task="cxr_classify")}
    for batch in plan.batches(20):
        for r in batch:
            if r.task == "cxr_classify":  # the label the plan counts is the row's own
                assert rows[r.shard][r.row]["label"] == order.label(r.example_index)
    cls = plan.stats()["tasks"]["cxr_classify"]["classes"]
    assert cls["yes"]["count"] + cls["no"]["count"] == plan.stats()["tasks"]["cxr_classify"]["count"]
    assert cls["yes"]["target"] == pytest.approx(0.5)


def test_rows_without_labels_are_a_config_error_naming_the_shard(tmp_path):
    store = store_with(tmp_path, [0, 1] * 10 + [None])
    cfg = MixtureConfig(strategy="explicit", weights={"cxr_classify": 1.0}, class_balance={"cxr_classify": 2.0})
    with pytest.raises(ConfigError, match=r"mixture\.class_balance\.cxr_classify: shard cxr_classify/train/"
                                          r"\S+ has 1 row\(s\) without a label \(first: row 4\)"):
        MixturePlan.from_config(store, cfg, seed=0)
    # a balanced task left out of the mixture needs no labels
    cfg = MixtureConfig(strategy="explicit", weights={"medqa": 1.0}, class_balance={"cxr_classify": 2.0})
    assert "cxr_classify" not in MixturePlan.from_config(store, cfg, seed=0).orders
