"""A sweep's directory and the objective: what the sweep driver, its trials, the champion and
`medmix sweep analyze` all read, without importing Ray Tune.

Under `<train.storage_path>/<name>/` (a local or shared path, or an `s3://` URI):
`sweep.json` (parent MLflow run id, resolved search space), `tune/` (Ray Tune's experiment
state), `trials/<trial_id>/` (each trial's Ray Train run), `trials.csv` (every evaluated trial
and step), `analysis/`, `champion/<trial>/`. Every file goes through `medmix.storage`, so the
same layout lives on a local disk or in a bucket.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from medmix.storage import Location, location

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


def read_json(path: str | os.PathLike | Location) -> dict:
    """A small JSON file of the sweep's directory, local or on object storage; {} if absent."""
    loc = location(path)
    return json.loads(loc.read_text()) if loc.is_file() else {}


def write_json(path: str | os.PathLike | Location, data: dict) -> None:
    """Written whole (temp file + rename locally, one PUT on object storage)."""
    location(path).write_text(json.dumps(data, indent=1, sort_keys=True))
