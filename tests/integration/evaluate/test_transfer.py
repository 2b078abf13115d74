"""`medmix report transfer` at debug scale on two tasks plus the ablation: four real
training runs and four evaluations, shared by two tests.

Proves: the generalist and every specialist trained with exactly the same compute (steps x
global batch, read back from their checkpoints' data cursors); specialists saw only their task
and the ablated generalist never saw the ablated one; the table's deltas are generalist −
specialist and ablated − generalist of the evaluated metrics; transfer.md/.csv/.png are written
and logged to MLflow; a finished run is reused rather than retrained (found again and only
re-evaluated, with the same numbers).
"""

from __future__ import annotations

import contextlib
import csv
import io

import pytest

pytestmark = pytest.mark.slow(minutes=2.5)

TASKS = ["cxr_classify", "cxr_report"]   # + the ablation without cxr_classify: four runs
STEPS, BATCH = 10, 8


def _overrides(tmp_path, suite: str) -> list[str]:
    return [f'data.root="{suite}"', f'lineage.root="{tmp_path}/runs"', "name=tr",
            f"train.steps={STEPS}", f"mixture.global_batch_size={BATCH}", "train.num_workers=1",
            "train.eval_every=0", "train.log_every=5", "eval.max_examples_per_task=12",
            "eval.max_new_tokens=16", "eval.use_ray=false"]


@pytest.fixture(scope="module")
def transfer(tmp_path_factory, small_suite, ray_local):
    """One `medmix report transfer` (five trainings, five evaluations) that both tests read."""
    from medmix.cli import main
    tmp_path = tmp_path_factory.mktemp("transfer")
    out = tmp_path / "transfer"
    args = ["report", "transfer", "--tasks", ",".join(TASKS), "--ablate", "cxr_classify", "--out", str(out)]
    for o in _overrides(tmp_path, small_suite):
        args += ["--set", o]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    print(printed.getvalue())
    return tmp_path, out, printed.getvalue()


def test_transfer_report_at_equal_compute(transfer):
    from medmix.lineage.backend import client, experiment_id
    from medmix.train.checkpoint import read_meta
    tmp_path, out, printed = transfer
    assert "# Generalist vs specialist per task (equal compute)" in printed

    md = (out / "transfer.md").read_text()
    table = [line.split(" | ") for line in md.splitlines() if line.startswith("| cxr")]
    assert [row[0].strip("| ") for row in table[:2]] == TASKS
    runs_csv = list(csv.DictReader(open(out / "transfer.csv")))
    by = {(r["role"], r["trained_on"], r["task"], r["metric"]): float(r["value"]) for r in runs_csv}
    for row in table[:2]:
        task, metric = row[0].strip("| "), row[1]
        gen = by[("generalist", "+".join(TASKS), task, metric)]
        spec = by[("specialist", task, task, metric)]
        abl = by[("ablated", "cxr_report", task, metric)]
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
                                               "tr-specialist-cxr_report",
                                               "tr-without-cxr_classify"]
    for c in ckpts:
        meta = read_meta(c)
        counts = {t: n for t, n in meta["data_state"]["counts"].items() if n}
        assert meta["step"] == STEPS and sum(counts.values()) == STEPS * BATCH, (c, counts)
        name = c.parent.name
        if "specialist" in name:
            assert set(counts) == {name.split("specialist-")[1]}
        elif "without" in name:
            assert set(counts) == {"cxr_report"}
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


def test_finished_runs_are_reused(transfer, small_suite):
    """A specialist the report trained is found again: not retrained, only re-evaluated, same numbers."""
    from medmix.config import load_config
    from medmix.evaluate.transfer import train_and_evaluate
    tmp_path, out, _ = transfer
    runs_table = (out / "transfer.md").read_text().split("## Runs")[1]
    assert "specialist-cxr_report" in runs_table and "(reused)" not in runs_table  # all trained fresh
    cfg = load_config("debug", _overrides(tmp_path, small_suite))
    mixture = {"strategy": "explicit", "weights": {"cxr_report": 1.0}, "tasks": ["cxr_report"],
               "exclude": []}
    storage = (out / "checkpoints").resolve()
    trained = read_rows(out, "specialist", "cxr_report")
    again = train_and_evaluate(cfg, "specialist", "tr-specialist-cxr_report", storage, mixture,
                               ["cxr_report"], ["cxr_report"], tmp_path / "eval-again")
    assert again.reused and again.checkpoint == str(storage / "tr-specialist-cxr_report" / f"step-{STEPS:06d}")
    assert {k: pytest.approx(v, nan_ok=True) for k, v in trained.items()} == again.per_task["cxr_report"]
    assert not list((storage / "tr-specialist-cxr_report").glob(f"step-{2 * STEPS:06d}"))


def read_rows(out, role: str, task: str) -> dict[str, float]:
    """One run's metrics on `task` from transfer.csv."""
    return {r["metric"]: float(r["value"]) for r in csv.DictReader(open(out / "transfer.csv"))
            if r["role"] == role and r["task"] == task}


def _lineage(tmp_path):
    from medmix.lineage.config import TrackerConfig
    return TrackerConfig(root=str(tmp_path / "runs"))
