"""The report (Markdown table, PNG chart, raw files), flat metric names, the polygenic baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from medmix.evaluate.metrics import compute_metrics
from medmix.evaluate.predict import Prediction
from medmix.evaluate.report import fmt, markdown_table, write_eval_report
from medmix.evaluate.runner import EvalResult, ModelSource, flat_metrics, polygenic_baseline, score_task
from medmix.tasks import get_task


def test_markdown_table_and_number_format():
    assert fmt(0.12345) == "0.123" and fmt(float("nan")) == "n/a" and fmt(100) == "100" and fmt(1.0) == "1.000"
    text = markdown_table(["task", "n", "accuracy"], [["derm_pad", 4, 0.5], ["medqa", 2, float("nan")]])
    assert text.splitlines() == ["| task | n | accuracy |", "| --- | ---: | ---: |",
                                 "| derm_pad | 4 | 0.500 |", "| medqa | 2 | n/a |"]


def test_flat_metrics_name_task_and_metric_and_average_over_tasks():
    flat = flat_metrics({"a": {"n": 4.0, "accuracy": 0.5, "bleu1": 0.2}, "b": {"n": 2.0, "accuracy": 1.0,
                                                                             "macro_auc": float("nan")}})
    assert flat["a/accuracy"] == 0.5 and flat["b/n"] == 2.0
    assert flat["mean/accuracy"] == 0.75 and flat["mean/bleu1"] == 0.2
    assert math.isnan(flat["mean/macro_auc"])  # no task defines it


def test_score_task_lines_up_predictions_with_rows():
    refs = [{"example_id": f"e{i}", "target": t, "label": DERM.index(t), "context": {}}
            for i, t in enumerate(["melanoma", "nevus", "melanoma", "basal cell carcinoma"])]
    probs = [[0, 0, 0, 0, 0.9, 0.1], [0, 0, 0, 0, 0.2, 0.8], [0.6, 0, 0, 0, 0.4, 0], [0.7, 0, 0, 0, 0, 0.3]]
    preds = [Prediction(r["example_id"], "derm_pad", DERM[int(np.argmax(p))], p) for r, p in zip(refs, probs)]
    metrics, records = score_task("derm_pad", refs, preds)
    # 3 of 4 right (e2 answered basal cell carcinoma for a melanoma)
    assert metrics["accuracy"] == 0.75 and metrics["n"] == 4
    assert metrics == compute_metrics(get_task("derm_pad"), [p.prediction for p in preds],
                                      [r["target"] for r in refs], option_probs=probs,
                                      labels=[r["label"] for r in refs], contexts=[{}] * 4)
    assert records[2] == {"example_id": "e2", "prediction": "basal cell carcinoma", "reference": "melanoma",
                          "option_probs": probs[2]}
    with pytest.raises(RuntimeError, match="lined up"):
        score_task("derm_pad", refs, list(reversed(preds)))


DERM = list(get_task("derm_pad").options)


def test_report_files(tmp_path):
    refs = [{"example_id": "e0", "target": "melanoma", "label": 4, "context": {}},
            {"example_id": "e1", "target": "nevus", "label": 5, "context": {}}]
    preds = [Prediction("e0", "derm_pad", "melanoma", [0, 0, 0, 0, 0.7, 0.3]),
             Prediction("e1", "derm_pad", "melanoma", [0, 0, 0, 0, 0.6, 0.4])]
    derm, derm_records = score_task("derm_pad", refs, preds)
    vqa_refs = [{"example_id": "v0", "target": "left lung", "label": None, "context": {}}]
    vqa, vqa_records = score_task("vqa_rad", vqa_refs, [Prediction("v0", "vqa_rad", "the left lung")])
    result = EvalResult(model=ModelSource("runs/x/step-000020", "/tmp/export", "x-step20", run_id="abc", step=20),
                        split="test", tasks=["derm_pad", "vqa_rad"], metrics=flat_metrics({"derm_pad": derm, "vqa_rad": vqa}),
                        per_task={"derm_pad": derm, "vqa_rad": vqa},
                        predictions={"derm_pad": derm_records, "vqa_rad": vqa_records},
                        notes=["trained on medqa too"])
    out = write_eval_report(result, tmp_path / "rep")
    md = (out / "report.md").read_text()
    assert "| derm_pad | classify | 2 | 0.500 |" in md      # accuracy 1/2; columns start with accuracy
    assert "| vqa_rad | vqa | 1 | 1.000 |" in md           # "the left lung" == "left lung" after normalising
    assert "![metrics](metrics.png)" in md and "trained on medqa too" in md and "abc" in md
    with Image.open(out / "metrics.png") as im:
        assert im.format == "PNG" and im.size[0] > 300
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["derm_pad/accuracy"] == 0.5 and saved["split"] == "test"
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x["example_id"] for x in lines] == ["e0", "e1", "v0"]


@pytest.fixture(scope="module")
def polygenic_store(tmp_path_factory):
    from medmix.data.genomics.polygenic import CohortConfig, PolygenicConfig, simulate_cohort
    from medmix.data.ingest.genotypes import ingest_genotypes
    from medmix.data.store import ShardStore
    tmp = tmp_path_factory.mktemp("prs")
    cohort = simulate_cohort(tmp / "cohort", CohortConfig(num_samples=160, num_snps=120, gwas_samples=800, seed=3))
    store = ShardStore(tmp / "store")
    ingest_genotypes(store, cohort["vcf"], cohort["weights"], cohort["phenotypes"],
                     cfg=PolygenicConfig(image_size=32))
    return store


def test_polygenic_model_auc_is_compared_with_the_linear_prs(polygenic_store):
    from sklearn.metrics import roc_auc_score

    from medmix.data.genomics.polygenic import linear_prs_auc
    store = polygenic_store
    rows = store.read_table("polygenic_risk", "test").to_pylist()
    refs = [{"example_id": r["example_id"], "target": r["target"], "label": r["label"],
             "context": json.loads(r["context"])} for r in rows]
    # a "model" whose P(yes) is the logistic of the all-SNP score: its AUC is that score's AUC
    p_yes = [1 / (1 + math.exp(-r["context"]["prs"]["1"])) for r in refs]
    preds = [Prediction(r["example_id"], "polygenic_risk", "yes" if p > 0.5 else "no", [p, 1 - p])
             for r, p in zip(refs, p_yes)]
    got = polygenic_baseline(store, "test", refs, preds)
    assert got["available"]
    linear = linear_prs_auc(list(store.iter_examples("polygenic_risk", "train")),
                            list(store.iter_examples("polygenic_risk", "test")))
    assert set(got["outcomes"]) == set(linear)
    for outcome, o in got["outcomes"].items():
        idx = [i for i, r in enumerate(refs) if r["context"]["outcome"] == outcome]
        assert o["model_auc"] == pytest.approx(roc_auc_score([refs[i]["label"] == 0 for i in idx],
                                                             [p_yes[i] for i in idx]))
        assert o["linear_prs_auc"] == pytest.approx(linear[outcome]["auc"]) and o["n"] == len(idx)
    assert got["model_auc"] == pytest.approx(np.mean([o["model_auc"] for o in got["outcomes"].values()]))
    # rows without the scores: said so, not computed
    bare = [{**r, "context": {k: v for k, v in r["context"].items() if k != "prs"}} for r in refs]
    missing = polygenic_baseline(store, "test", bare, preds)
    assert not missing["available"] and "prs" in missing["reason"]


def test_chance_is_the_majority_class_or_one_over_the_options():
    from medmix.evaluate.report import chance_accuracy
    recs = [{"reference": "yes"}, {"reference": "no"}, {"reference": "yes"}, {"reference": "yes"}]
    assert chance_accuracy("cxr_classify", recs) == 0.75
    mcq = [{"reference": "a", "option_probs": [0.25] * 4}, {"reference": "b", "option_probs": [0.5, 0.5]}]
    assert chance_accuracy("medqa", mcq) == pytest.approx((1 / 4 + 1 / 2) / 2)
    assert chance_accuracy("cxr_report", [{"reference": "x"}]) is None


def test_a_report_on_object_storage_is_uploaded_whole_from_the_cache(s3_env, tmp_path, monkeypatch):
    """eval.report_dir = s3://…: the files land in the bucket (report.md last), the local copy that
    MLflow logs is in the cache, and nothing is written to the working directory."""
    from medmix.evaluate.report import store_eval_report
    from medmix.storage import location
    monkeypatch.setenv("MEDMIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    refs = [{"example_id": "e0", "target": "melanoma", "label": 4, "context": {}}]
    derm, records = score_task("derm_pad", refs, [Prediction("e0", "derm_pad", "melanoma", [0, 0, 0, 0, 0.7, 0.3])])
    result = EvalResult(model=ModelSource("m", "/tmp/export", "m"), split="test", tasks=["derm_pad"],
                        metrics=flat_metrics({"derm_pad": derm}), per_task={"derm_pad": derm},
                        predictions={"derm_pad": records})
    root = f"s3://{s3_env.bucket()}/eval"
    where, local = store_eval_report(result, root, "m-test")
    assert where == f"{root}/m-test" and local.is_relative_to(tmp_path / "cache")
    remote = location(where)
    assert {f.name for f in remote.files()} == {"report.md", "metrics.png", "metrics.json", "predictions.jsonl"}
    assert remote.join("report.md").read_text() == (local / "report.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]
