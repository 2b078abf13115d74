"""A sweep's directory and the objective: what the sweep driver, its trials, the champion and
`medmix sweep analyze` all read, without importing Ray Tune.

Under `<train.storage_path>/<name>/`: `sweep.json` (parent MLflow run id, resolved search
space), `tune/` (Ray Tune's experiment state), `trials/<trial_id>/` (each trial's Ray Train
run), `trials.csv` (every evaluated trial and step), `analysis/`, `champion/<trial>/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

SWEEP_INFO = "sweep.json"
TUNE_DIR = "tune"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
OBJECTIVE = "objective"


def objective_value(metrics: Mapping[str, Any], weights: Mapping[str, float]) -> float | None:
    """The sweep's objective from one report: `val_loss`, or the weighted mean of `weights`' metrics.

    None when the report lacks a metric it needs (a training-only report).
    """
    if not weights:
        value = metrics.get("val_loss")
        return None if value is None else float(value)
    if any(metrics.get(k) is None for k in weights):
        return None
    total = sum(weights.values())
    return sum(float(metrics[k]) * w for k, w in weights.items()) / total


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
