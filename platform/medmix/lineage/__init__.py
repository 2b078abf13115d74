"""medmix.lineage: what every job records in MLflow, and the walk back from a model to its data.

    tracker.py    `Tracker` (MLflow behind it, or NullTracker): runs, params, metrics, datasets
    backend.py    tracking URI, client and experiment for a `TrackerConfig`
    registry.py   the model registry: exports as versions of `medmix`, aliases such as champion
    query.py      `medmix lineage`: model version / checkpoint -> run -> shards -> ingest sources
    config.py     `[lineage]`
"""
