"""One sizing rule for a local Ray: never fewer logical CPUs than asked for + 2, at least 4."""

from __future__ import annotations

import os

from medmix.runtime import joining_runtime_env, local_num_cpus


def test_local_cluster_leaves_two_slots_beside_what_was_asked_for():
    cores = os.cpu_count() or 1
    assert local_num_cpus(0) == max(cores, 4)
    assert local_num_cpus(2) == max(cores, 4)           # 2 train workers + 2 for Ray Data
    assert local_num_cpus(2.5) == max(cores, 5)         # fractions round up
    assert local_num_cpus(64) == max(cores, 66)


def test_a_joining_driver_hands_its_storage_variables_to_its_job_but_not_inside_a_submitted_job():
    environ = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
               "AWS_REGION": "", "HOME": "/home/u", "MLFLOW_TRACKING_URI": "http://t:5000"}
    assert joining_runtime_env(environ) == {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                                                         "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}
    assert joining_runtime_env({"HOME": "/home/u"}) is None
    # `ray job submit` fixed the job's runtime_env (what `medmix submit --env` named)
    assert joining_runtime_env({**environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}) is None


def test_open_run_starts_resumes_and_nests_runs_in_a_real_mlflow_store(tmp_path):
    """Train, sweep parent and trial child all open their run through `open_run`: tags, config
    params and store datasets on a new run; the same run (tagged resumed) on a re-submission;
    a new run when the old id is unknown to this store."""
    from medmix.config import load_config
    from medmix.data.schema import Example
    from medmix.data.store import ShardStore
    from medmix.lineage import backend
    from medmix.lineage.tracker import build_tracker
    from medmix.runtime import open_run

    store = ShardStore(tmp_path / "data")
    with store.transaction(source={"kind": "jsonl", "path": "/raw/medqa.jsonl"}) as tx:
        for i in range(3):
            tx.add(Example(example_id=f"q{i}", task="medqa", split="train", context={"question": f"q{i}"},
                           target="yes", source=f"medqa.jsonl:{i}"))
    root = tmp_path / "runs"
    cfg = load_config("debug", [f'data.root="{store.root}"', f'lineage.root="{root}"',
                                f'lineage.tracking_uri="sqlite:///{root}/mlflow.db"', 'name="opened"'])
    tracker, client = build_tracker(cfg.lineage), backend.client(cfg.lineage)

    parent_id, resumed = open_run(tracker, cfg, kind="sweep", name="opened", tags={"medmix.sweep": "opened"})
    assert parent_id and not resumed
    child_id, resumed = open_run(tracker, cfg, kind="sweep-trial", name="opened/t0", parent_run_id=parent_id)
    assert child_id and not resumed
    tracker.end_run("FINISHED")
    tracker.end_run("FINISHED")
    child = client.get_run(child_id)
    assert child.data.tags["medmix.kind"] == "sweep-trial"
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.data.params["train.steps"] == str(cfg.train.steps)
    assert [d.dataset.name for d in child.inputs.dataset_inputs] == ["medqa"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["medmix.kind"] == "sweep" and parent.data.tags["medmix.sweep"] == "opened"
    assert "mlflow.parentRunId" not in parent.data.tags
    assert parent.data.params["train.steps"] == str(cfg.train.steps)

    again, resumed = open_run(tracker, cfg, kind="sweep-trial", name="opened/t0", resume_run_id=child_id)
    tracker.end_run("FINISHED")
    assert (again, resumed) == (child_id, True)
    assert client.get_run(child_id).data.tags["medmix.resumed"] == "true"

    fresh, resumed = open_run(tracker, cfg, kind="train", name="opened", resume_run_id="0" * 32)
    tracker.end_run("FINISHED")
    assert fresh not in (None, child_id, parent_id) and not resumed
