"""Read a sweep back from MLflow: its parent run, its child runs, their validation histories.

`medmix sweep analyze NAME` works from what the sweep recorded in the tracking store, so it
runs anywhere that store is reachable (no Tune state, no checkpoints needed):

    parent = find_parent_run(cfg.lineage, "sweep_debug")          # run id or None
    table = trials_from_mlflow(cfg.lineage, parent)               # a law.TrialTable

Each child run contributes one record per step its validation losses were logged at:
shares (`sweep.share.<task>` params), scale, lr, `val_loss`, `val_loss/<task>`, the per-task
scores (`val_score/<task>`, with `/lo`, `/hi`) and the sweep's objective (its definition is a
param of the parent run: the loss objective is computed from the losses, a scored one is the
trial's own `val_objective`).
Only `medmix.lineage.backend` touches MLflow; what comes back here is plain data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medmix.lineage import backend
from medmix.tune.law import SHARE_PREFIX, TrialTable, normalise_records
from medmix.tune.layout import objective_value

if TYPE_CHECKING:
    from medmix.config import MedmixConfig

OBJECTIVE_PARAM = "sweep.objective_def"


def find_parent_run(cfg: MedmixConfig, name: str) -> str | None:
    """The newest parent run of the sweep called `name` in the tracking store, if any."""
    client = backend.client(cfg)
    runs = client.search_runs([backend.experiment_id(cfg)],
                              filter_string=f"tags.`medmix.kind` = 'sweep' and tags.`medmix.sweep` = '{name}'",
                              order_by=["attribute.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def trials_from_mlflow(cfg: MedmixConfig, parent_run_id: str) -> TrialTable:
    """Every (child run, evaluated step) of the sweep whose parent run is `parent_run_id`."""
    client = backend.client(cfg)
    parent = client.get_run(parent_run_id)
    spec = json.loads(parent.data.params.get(OBJECTIVE_PARAM, "{}") or "{}")
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=5000)
    records = []
    for run in children:
        if run.data.tags.get("medmix.sweep.status") == "orphaned":   # not part of the sweep Tune resumed
            continue
        params = run.data.params
        shares = {k[len("sweep."):]: float(v) for k, v in params.items() if k.startswith("sweep." + SHARE_PREFIX)}
        if not shares:
            continue
        by_step: dict[int, dict[str, float]] = {}
        for key in run.data.metrics:
            if not key.startswith(("val_loss", "val_objective", "val_score")):
                continue
            for m in client.get_metric_history(run.info.run_id, key):
                by_step.setdefault(int(m.step), {})[key] = float(m.value)
        trial = run.data.tags.get("medmix.trial", run.info.run_id)
        for step, metrics in sorted(by_step.items()):
            value = objective_value(metrics, spec)
            if value is None:
                continue
            records.append({"trial": trial, "step": step, "scale": params.get("sweep.scale"),
                            "lr": float(params.get("sweep.lr", "nan")), "run_id": run.info.run_id,
                            **shares, **metrics, "objective": value})
    return TrialTable(normalise_records(records, where=f"child runs of {parent_run_id}"))


def child_runs(cfg: MedmixConfig, parent_run_id: str) -> list[dict[str, str]]:
    """The sweep's child runs: run id, trial id and MLflow status of each."""
    client = backend.client(cfg)
    runs = client.search_runs([backend.experiment_id(cfg)],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000)
    return [{"run_id": r.info.run_id, "trial": r.data.tags.get("medmix.trial", ""), "status": r.info.status}
            for r in runs]


def run_artifacts(cfg: MedmixConfig, run_id: str, folder: str) -> list[str]:
    """Artifact paths directly under `folder` of a run."""
    return [a.path for a in backend.client(cfg).list_artifacts(run_id, folder)]


def log_artifacts(cfg: MedmixConfig, run_id: str, path: str | Path, artifact_path: str) -> None:
    """Attach a directory to a run without re-opening it (its status stays what it was)."""
    backend.client(cfg).log_artifacts(run_id, str(path), artifact_path)
