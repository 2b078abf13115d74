"""`medmix report transfer` at debug scale on two tasks plus the ablation: six real training
runs (generalist, two specialists per task, the ablated generalist) and their evaluations,
shared by two tests.

Proves: each task's specialists trained with the generalist's total budget (steps x global
batch) and with the generalist's budget on that task (its examples of the task, read back from
the checkpoints' data cursors); specialists saw only their task and the ablated generalist
never saw the ablated one; every headline value carries a bootstrap interval that holds it;
the table's deltas are generalist − specialist (both) and ablated − generalist of the
evaluated metrics; transfer.md/.csv/.png are written and logged to MLflow; a finished run is
reused rather than retrained (found again and only re-evaluated, with the same numbers).
"""

from __future__ import annotations

import contextlib
import csv
import io

import pytest

pytestmark = pytest.mark.slow(minutes=3)

TASKS = ["cxr_classify", "cxr_report"]   # + the ablation without cxr_classify: six runs
STEPS, BATCH = 10, 8


def _overrides(tmp_path, suite: str) -> list[str]:
    return [f'data.root="{suite}"', f'lineage.root="{tmp_path}/runs"', "name=tr",
            f"train.steps={STEPS}", f"mixture.global_batch_size={BATCH}", "train.num_workers=1",
            "train.eval_every=0", "train.log_every=5", "eval.max_examples_per_task=10",
            "eval.max_new_tokens=10", "eval.use_ray=false"]


@pytest.fixture(scope="module")
def transfer(tmp_path_factory, small_suite, ray_local):
    """One `medmix report transfer` (six trainings, six evaluations) that both tests read."""
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


def test_transfer_report_at_matched_compute_with_intervals(transfer):
    from medmix.lineage.backend import client, experiment_id
    from medmix.train.checkpoint import read_meta
    tmp_path, out, printed = transfer
    assert "# Generalist vs specialist per task (matched compute)" in printed

    # what each run trained on, read back from its final checkpoint
    seen = {}
    for c in sorted((out / "checkpoints").glob("*/step-*")):
        meta = read_meta(c)
        seen[c.parent.name] = (meta["step"], {t: n for t, n in meta["data_state"]["counts"].items() if n})
    generalist = seen.pop("tr-generalist")
    assert generalist[0] == STEPS and set(generalist[1]) == set(TASKS) and sum(generalist[1].values()) == STEPS * BATCH
    assert seen.pop("tr-without-cxr_classify") == (STEPS, {"cxr_report": STEPS * BATCH})
    budget = {}
    for t in TASKS:
        assert seen.pop(f"tr-specialist-{t}") == (STEPS, {t: STEPS * BATCH})       # the same total budget
        budget[t] = round(generalist[1][t] / BATCH)                                  # the task's budget
        assert 1 <= budget[t] < STEPS
        assert seen.pop(f"tr-specialist-{t}-{budget[t]}steps") == (budget[t], {t: budget[t] * BATCH})
    assert not seen, f"runs the report should not have trained: {sorted(seen)}"

    md = (out / "transfer.md").read_text()
    table = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.splitlines() if line.startswith("| cxr")]
    assert [row[0] for row in table[:2]] == TASKS
    runs_csv = list(csv.DictReader(open(out / "transfer.csv")))
    by = {(r["role"], r["trained_on"], r["task"], r["metric"]): float(r["value"]) for r in runs_csv}

    def cell(text: str) -> tuple[float, float, float]:
        """'0.500 [0.250, 0.750] ...' -> value, lo, hi."""
        value, rest = text.split(" [", 1)
        lo, hi = rest.split("]", 1)[0].split(", ")
        return float(value), float(lo), float(hi)

    for row in table[:2]:
        task, metric = row[0], row[1]
        models = {"generalist": ("generalist", "+".join(TASKS), row[3]), "specialist": ("specialist", task, row[4]),
                  "task budget": ("specialist_task_budget", task, row[6]), "ablated": ("ablated", "cxr_report", row[8])}
        values = {}
        for name, (role, trained_on, text) in models.items():
            value, lo, hi = cell(text)
            assert value == pytest.approx(by[(role, trained_on, task, metric)], abs=6e-4), (name, text)
            assert lo == pytest.approx(by[(role, trained_on, task, f"{metric}/lo")], abs=6e-4)
            assert hi == pytest.approx(by[(role, trained_on, task, f"{metric}/hi")], abs=6e-4)
            assert lo - 6e-4 <= value <= hi + 6e-4, (name, text)   # a percentile interval holds the value
            values[name] = by[(role, trained_on, task, metric)]
        assert f"({budget[task]} steps)" in row[6]
        assert float(row[5]) == pytest.approx(values["generalist"] - values["specialist"], abs=1.2e-3)
        assert float(row[7]) == pytest.approx(values["generalist"] - values["task budget"], abs=1.2e-3)
        assert float(row[9].split()[0]) == pytest.approx(values["ablated"] - values["generalist"], abs=1.2e-3)
    assert "(not trained on it)" in table[0][9]           # the ablated task itself
    assert {m for (_, _, t, m) in by if t == "cxr_report"} >= {"bleu1", "rougeL", "clinical_f1_macro"}
    assert (out / "transfer.png").stat().st_size > 5000

    mlflow = client(_lineage(tmp_path))
    runs = mlflow.search_runs([experiment_id(_lineage(tmp_path))], "tags.`medmix.kind` = 'transfer'")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {f"transfer_delta/{t}" for t in TASKS} | {f"transfer_delta_task_budget/{t}" for t in TASKS} <= set(metrics)
    assert {"specialist/cxr_report/cxr_report/rougeL", "specialist_task_budget/cxr_report/cxr_report/rougeL",
            "ablated/cxr_report/rougeL"} <= set(metrics)
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
