"""`medmix report transfer` at debug scale on three tasks: five real training runs, five evaluations.

Proves: the generalist and every specialist trained with exactly the same compute (steps x
global batch, read back from their checkpoints' data cursors); specialists saw only their task
and the ablated generalist never saw the ablated one; the table's deltas are generalist −
specialist and ablated − generalist of the evaluated metrics; transfer.md/.csv/.png are written
and logged to MLflow; a finished run is reused rather than retrained.
"""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import suite_config

pytestmark = pytest.mark.slow

TASKS = ["cxr_classify", "cxr_report", "mammo_cbis_mass"]
STEPS, BATCH = 20, 8


def test_transfer_report_at_equal_compute(tmp_path, small_suite, ray_local, capsys):
    from medmix.cli import main
    from medmix.lineage.backend import client, experiment_id
    from medmix.train.checkpoint import read_meta
    out = tmp_path / "transfer"
    overrides = [f'data.root="{small_suite}"', f'lineage.root="{tmp_path}/runs"', "name=tr",
                 f"train.steps={STEPS}", f"mixture.global_batch_size={BATCH}", "train.num_workers=1",
                 "train.eval_every=0", "train.log_every=10", "eval.max_examples_per_task=20",
                 "eval.max_new_tokens=24", "eval.use_ray=false"]
    args = ["report", "transfer", "--tasks", ",".join(TASKS), "--ablate", "cxr_classify", "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "# Generalist vs specialist per task (equal compute)" in printed

    md = (out / "transfer.md").read_text()
    table = [line.split(" | ") for line in md.splitlines() if line.startswith("| cxr") or line.startswith("| mammo")]
    assert [row[0].strip("| ") for row in table[:3]] == TASKS
    runs_csv = list(csv.DictReader(open(out / "transfer.csv")))
    by = {(r["role"], r["trained_on"], r["task"], r["metric"]): float(r["value"]) for r in runs_csv}
    for row in table[:3]:
        task, metric = row[0].strip("| "), row[1]
        gen = by[("generalist", "+".join(TASKS), task, metric)]
        spec = by[("specialist", task, task, metric)]
        abl = by[("ablated", "cxr_report+mammo_cbis_mass", task, metric)]
        assert float(row[3]) == pytest.approx(gen, abs=6e-4) and float(row[4]) == pytest.approx(spec, abs=6e-4)
        assert float(row[5]) == pytest.approx(gen - spec, abs=1.2e-3)
        assert float(row[6]) == pytest.approx(abl, abs=6e-4)
        assert float(row[7].split()[0].strip(" |")) == pytest.approx(abl - gen, abs=1.2e-3)
    assert "(not trained on it)" in table[0][7]           # the ablated task itself
    assert {m for (_, _, t, m) in by if t == "cxr_report"} >= {"bleu1", "rougeL", "clinical_f1_macro"}
    assert (out / "transfer.png").stat().st_size > 5000

    # equal compute, read back from each run's final checkpoint
    ckpts = sorted((out / "checkpoints").glob(f"*/step-{STEPS:06d}"))
    assert [c.parent.name for c in ckpts] == ["tr-generalist", "tr-specialist-cxr_classify",
                                               "tr-specialist-cxr_report", "tr-specialist-mammo_cbis_mass",
                                               "tr-without-cxr_classify"]
    for c in ckpts:
        meta = read_meta(c)
        counts = {t: n for t, n in meta["data_state"]["counts"].items() if n}
        assert meta["step"] == STEPS and sum(counts.values()) == STEPS * BATCH, (c, counts)
        name = c.parent.name
        if "specialist" in name:
            assert set(counts) == {name.split("specialist-")[1]}
        elif "without" in name:
            assert set(counts) == {"cxr_report", "mammo_cbis_mass"}
        else:
            assert set(counts) == set(TASKS)

    mlflow = client(_lineage(tmp_path))
    runs = mlflow.search_runs([experiment_id(_lineage(tmp_path))], "tags.`medmix.kind` = 'transfer'")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {f"transfer_delta/{t}" for t in TASKS} <= set(metrics)
    assert "specialist/cxr_report/cxr_report/rougeL" in metrics and "ablated/cxr_report/rougeL" in metrics
    assert {a.path for a in mlflow.list_artifacts(runs[0].info.run_id)} >= {"transfer.md", "transfer.csv",
                                                                            "transfer.png"}


def test_finished_runs_are_reused(tmp_path, small_suite, ray_local):
    """One specialist: trained once, then found and only re-evaluated."""
    from medmix.evaluate.transfer import train_and_evaluate
    cfg = suite_config(tmp_path, small_suite, "name=re", "train.steps=4", "mixture.global_batch_size=4",
                       "train.num_workers=1", "train.eval_every=0", "eval.max_examples_per_task=5",
                       "eval.use_ray=false", "lineage.enabled=false")
    mixture = {"strategy": "explicit", "weights": {"mammo_cbis_mass": 1.0}, "tasks": ["mammo_cbis_mass"]}
    args = (cfg, "specialist", "re-spec", tmp_path / "ck", mixture, ["mammo_cbis_mass"], ["mammo_cbis_mass"],
            tmp_path / "eval")
    first = train_and_evaluate(*args)
    again = train_and_evaluate(*args)
    assert not first.reused and again.reused and again.checkpoint == first.checkpoint
    assert json.dumps(again.per_task) == json.dumps(first.per_task)


def _lineage(tmp_path):
    from medmix.lineage.config import TrackerConfig
    return TrackerConfig(root=str(tmp_path / "runs"))
