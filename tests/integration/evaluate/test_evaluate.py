"""`medmix evaluate` end to end: a real Ray Train checkpoint, Ray Data actors, MLflow, the registry.

Proves: the CLI writes an MLflow evaluation run nested under the checkpoint's training run, with
`<task>/<metric>` metrics and report.md + metrics.png (also on disk); evaluating the same
checkpoint twice gives identical numbers and answers; a registered version is evaluated by
reference and tagged with its version; `evaluate_export` (the sweep's champion check) returns the
same metric names without recording anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import EVAL_SOURCE_TASKS

pytestmark = pytest.mark.slow(minutes=2)

TASKS = EVAL_SOURCE_TASKS


@pytest.fixture(scope="module")
def trained(trained_debug):
    return trained_debug


def _cli_args(cfg, tmp: Path) -> list[str]:
    return ["--set", f'data.root="{cfg.data.root}"', "--set", f'lineage.root="{cfg.lineage.root}"',
            "--set", f'eval.report_dir="{tmp}/eval"', "--set", "eval.max_new_tokens=8",
            "--set", "eval.batch_size=2"]


def test_evaluate_writes_the_run_report_and_chart_and_repeats_exactly(trained, capsys):
    from medmix.cli import main
    from medmix.lineage.backend import client, experiment_id
    cfg, res, tmp = trained
    for name in ("first", "second"):
        assert main(["evaluate", "--checkpoint", res.checkpoint, "--name", name, *_cli_args(cfg, tmp)]) == 0
    out = capsys.readouterr().out
    assert "evaluated evalsrc-step4 on test: 4 task(s)" in out and "derm_pad" in out

    first, second = Path(tmp, "eval", "first"), Path(tmp, "eval", "second")
    m1 = json.loads((first / "metrics.json").read_text())["metrics"]
    m2 = json.loads((second / "metrics.json").read_text())["metrics"]
    assert json.dumps(m1, sort_keys=True) == json.dumps(m2, sort_keys=True)  # NaN-safe equality
    assert (first / "predictions.jsonl").read_text() == (second / "predictions.jsonl").read_text()
    assert {f"{t}/n" for t in TASKS} <= set(m1)
    assert {"derm_pad/accuracy", "derm_pad/macro_auc", "cxr_report/rougeL", "cxr_report/clinical_f1_micro",
            "medqa/accuracy", "vqa_rad/token_f1", "mean/accuracy"} <= set(m1)
    assert m1["derm_pad/n"] == 3  # the tiny suite's whole test split
    md = (first / "report.md").read_text()
    assert all(f"| {t} |" in md for t in TASKS) and res.run_id in md

    mlflow = client(cfg.lineage)
    runs = mlflow.search_runs([experiment_id(cfg.lineage)], "tags.`medmix.kind` = 'evaluate'")
    assert len(runs) == 2
    for run in runs:
        assert run.data.tags["mlflow.parentRunId"] == res.run_id  # nested under the training run
        assert run.data.tags["medmix.checkpoint"] == res.checkpoint and run.data.tags["medmix.step"] == "4"
        assert run.data.params["eval.split"] == "test"
        arts = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
        assert {"report.md", "metrics.png", "metrics.json", "predictions.jsonl"} <= arts
    logged = {k: v for k, v in runs[0].data.metrics.items()}
    assert logged["derm_pad/accuracy"] == pytest.approx(m1["derm_pad/accuracy"])
    assert {r.data.metrics["medqa/accuracy"] for r in runs} == {m1["medqa/accuracy"]}


# export reads a DCP checkpoint in one process on purpose; torch's warning about it must stay quiet
@pytest.mark.filterwarnings("error:torch.distributed is:UserWarning")
def test_registered_version_and_evaluate_export(trained):
    from medmix.config import load_config
    from medmix.evaluate.runner import evaluate, evaluate_export
    from medmix.lineage.backend import client, experiment_id
    from medmix.train.export import export_checkpoint, register_checkpoint_export
    cfg, res, tmp = trained
    export = export_checkpoint(res.checkpoint, tmp / "export")
    version = register_checkpoint_export(cfg.lineage, res.checkpoint, export)
    ecfg = load_config("debug", [f'data.root="{cfg.data.root}"', f'lineage.root="{cfg.lineage.root}"',
                                 f'eval.report_dir="{tmp}/eval"', "eval.max_new_tokens=8"])
    by_ref = evaluate(ecfg, f"medmix/{version}", tasks=["derm_pad", "vqa_rad"], progress=False)
    assert by_ref.model.version == f"medmix/{version}" and by_ref.model.run_id == res.run_id
    mlflow = client(cfg.lineage)
    run = mlflow.get_run(by_ref.run_id)
    assert run.data.tags["medmix.model_version"] == f"medmix/{version}"
    assert run.data.tags["medmix.kind"] == "evaluate"
    assert Path(by_ref.report_dir, "report.md").is_file()

    before = len(mlflow.search_runs([experiment_id(cfg.lineage)]))
    ecfg.eval.use_ray = False  # the in-process path: same prediction function, no actors
    metrics = evaluate_export(str(export), ecfg, split="test", tasks=["derm_pad", "vqa_rad"])
    assert len(mlflow.search_runs([experiment_id(cfg.lineage)])) == before  # nothing recorded
    assert set(metrics) == set(by_ref.metrics)
    # the same model on the same rows: option choices agree across the Ray and in-process paths
    assert metrics["derm_pad/accuracy"] == by_ref.metrics["derm_pad/accuracy"]
    val = evaluate_export(str(export), ecfg, split="val", tasks=["derm_pad"])
    assert val["derm_pad/n"] == 3 and "derm_pad/macro_f1" in val
