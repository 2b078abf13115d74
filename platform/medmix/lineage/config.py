"""Configuration of the lineage tracker (MLflow behind the `Tracker` interface)."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import option


@dataclass
class TrackerConfig:
    """Where runs, checkpoints' lineage and registered models are recorded."""

    enabled: bool = option(True, "record runs in MLflow")
    tracking_uri: str = option("", "MLflow tracking URI; '' = $MLFLOW_TRACKING_URI, else sqlite:///<root>/mlflow.db")
    root: str = option("medmix-runs", "folder or s3:// URI: the default sqlite store and artifacts (a local "
                       "folder only), default exports; local copies of a URI root go to the cache "
                       "($MEDMIX_CACHE_DIR, else ~/.cache/medmix)")
    experiment: str = option("medmix", "MLflow experiment name")
    registered_model: str = option("medmix", "model registry name that `medmix export` registers versions under")
