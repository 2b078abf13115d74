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


VAL_OBJECTIVE = "val_objective"
"""The report key of a scored objective (`medmix.tune.objective`); `/lo`, `/hi` its interval."""


def objective_spec(sweep: Any) -> dict[str, Any]:
    """What `objective_value` needs of a `[sweep]` section (also what runs and sweep.json record)."""
    return {"kind": sweep.objective, "metrics": dict(sweep.objective_metrics)}


def objective_value(metrics: Mapping[str, Any], spec: Mapping[str, Any]) -> float | None:
    """The sweep's objective from one report.

    `spec` is `objective_spec(cfg.sweep)`: for kind `loss`, `val_loss` or the weighted mean of
    `spec["metrics"]`' report metrics; for a scored kind, the report's `val_objective` (the
    aggregate the trial computed over its per-task scores). A spec without `kind` (what sweeps
    recorded before scored objectives) is the loss objective's metric weights. None when the
    report lacks what it needs (a training-only report).
    """
    kind = spec.get("kind", "loss") if "kind" in spec else "loss"
    if kind != "loss":
        value = metrics.get(VAL_OBJECTIVE)
        return None if value is None else float(value)
    weights = spec.get("metrics", {}) if "kind" in spec else spec
    if not weights:
        value = metrics.get("val_loss")
        return None if value is None else float(value)
    if any(metrics.get(k) is None for k in weights):
        return None
    total = sum(weights.values())
    return sum(float(metrics[k]) * w for k, w in weights.items()) / total


def objective_interval(metrics: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[float, float] | None:
    """The objective's confidence interval from one report (scored kinds only), else None."""
    if spec.get("kind", "loss") == "loss":
        return None
    lo, hi = metrics.get(f"{VAL_OBJECTIVE}/lo"), metrics.get(f"{VAL_OBJECTIVE}/hi")
    if lo is None or hi is None or lo != lo or hi != hi:
        return None
    return float(lo), float(hi)


def read_json(path: str | os.PathLike | Location) -> dict:
    """A small JSON file of the sweep's directory, local or on object storage; {} if absent."""
    loc = location(path)
    return json.loads(loc.read_text()) if loc.is_file() else {}


def write_json(path: str | os.PathLike | Location, data: dict) -> None:
    """Written whole (temp file + rename locally, one PUT on object storage)."""
    location(path).write_text(json.dumps(data, indent=1, sort_keys=True))
