"""The transfer report's table from given runs: both specialists per task, intervals, deltas."""

from __future__ import annotations

import csv

import pytest

from medmix.evaluate.transfer import (TASK_BUDGET, TransferResult, TransferRun, comparison_rows, task_budget_steps,
                                      write_transfer)


def run(role: str, name: str, trained_on: list[str], steps: int, values: dict[str, tuple[float, float, float]],
        examples: dict[str, int]) -> TransferRun:
    metric = {"cxr_classify": "accuracy", "cxr_report": "rougeL"}
    per_task = {t: {"n": 12.0, metric[t]: v, f"{metric[t]}/lo": lo, f"{metric[t]}/hi": hi}
                for t, (v, lo, hi) in values.items()}
    return TransferRun(role, name, trained_on, f"/ckpt/{name}", None, per_task, 1.0, 1.0, steps=steps,
                       examples=examples)


def test_task_budget_is_the_generalists_examples_of_the_task_at_its_batch_size():
    assert task_budget_steps(48, 8) == 6 and task_budget_steps(3, 8) == 1 and task_budget_steps(0, 8) == 1


def test_rows_markdown_and_csv_compare_the_generalist_with_both_specialists(tmp_path):
    tasks = ["cxr_classify", "cxr_report"]
    runs = [run("generalist", "g", tasks, 10, {"cxr_classify": (0.6, 0.4, 0.8), "cxr_report": (0.3, 0.2, 0.4)},
                {"cxr_classify": 48, "cxr_report": 32}),
            run("specialist", "s-c", ["cxr_classify"], 10, {"cxr_classify": (0.7, 0.5, 0.9)}, {"cxr_classify": 80}),
            run(TASK_BUDGET, "s-c-6", ["cxr_classify"], 6, {"cxr_classify": (0.5, 0.3, 0.7)}, {"cxr_classify": 48}),
            run("specialist", "s-r", ["cxr_report"], 10, {"cxr_report": (0.35, 0.3, 0.4)}, {"cxr_report": 80}),
            run(TASK_BUDGET, "s-r-4", ["cxr_report"], 4, {"cxr_report": (0.25, 0.2, 0.3)}, {"cxr_report": 32}),
            run("ablated", "a", ["cxr_report"], 10, {"cxr_classify": (0.5, 0.3, 0.7), "cxr_report": (0.2, 0.1, 0.3)},
                {"cxr_report": 80})]
    rows = comparison_rows(tasks, runs, "cxr_classify")
    c, r = rows
    assert c["transfer_delta"] == pytest.approx(-0.1) and c["transfer_delta_task_budget"] == pytest.approx(0.1)
    assert c["specialist_ci"] == [0.5, 0.9] and c["task_budget_steps"] == 6 and c["generalist_examples"] == 48
    assert r["transfer_delta_task_budget"] == pytest.approx(0.05) and r["ablation_delta"] == pytest.approx(-0.1)
    assert c["ablated_task"] and not r["ablated_task"]

    result = TransferResult(tasks, "cxr_classify", 10, 8, "test", rows, runs, str(tmp_path))
    md = write_transfer(result, tmp_path)
    line = next(x for x in md.splitlines() if x.startswith("| cxr_classify"))
    assert ("| 0.600 [0.400, 0.800] | 0.700 [0.500, 0.900] | -0.100 | 0.500 [0.300, 0.700] (6 steps) | +0.100 |"
            in line)
    assert line.endswith("| 0.500 [0.300, 0.700] | -0.100 (not trained on it) |")
    assert "same total budget (80 examples" in md and "95% bootstrap interval" in md
    written = list(csv.DictReader(open(tmp_path / "transfer.csv")))
    assert {(w["role"], w["steps"]) for w in written if w["task"] == "cxr_report" and w["metric"] == "rougeL/lo"} == {
        ("generalist", "10"), ("specialist", "10"), (TASK_BUDGET, "4"), ("ablated", "10")}
    assert (tmp_path / "transfer.png").stat().st_size > 5000
