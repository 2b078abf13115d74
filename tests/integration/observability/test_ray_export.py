"""`record_*` inside a Ray actor comes out of the node's metrics endpoint under the names and
tags the dashboards query, and `medmix.observability.query` reads it back (no Prometheus here).

Uses the session's Ray (`ray_local`): every node runs Ray's metrics agent, whose export port
`ray.nodes()` reports. Ray ships values to the agent every 10 s by default, so this waits.
"""

from __future__ import annotations

import time
import uuid

import pytest

from medmix.observability.query import scrape, summarize

pytestmark = pytest.mark.slow(minutes=0.6)


@pytest.fixture(scope="module")
def recorder(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Recorder:
        """A Ray process making the train loop's and the Serve app's calls."""

        def train(self, run, reports, rank=0):
            from medmix.observability.metrics import record_train_metrics
            written = []
            for m in reports:
                written.append(record_train_metrics(run, m, rank=rank))
                time.sleep(0.2)
            return written

        def serve(self, versions, batches):
            from medmix.observability.metrics import record_batch, record_request, set_served_model
            set_served_model("2")
            set_served_model(versions)  # a redeploy: version 2 drops to 0
            for batch in batches:
                record_batch(len(batch))  # the default version: the first one served
                for endpoint, task, status, latency, version in batch:
                    record_request(endpoint, task, status, latency, version)

    actor = Recorder.remote()
    yield ray, actor
    ray.kill(actor)


def read_back(ray, want, timeout=60.0):
    """Rows from every node's endpoint, once `want(rows)` holds (Ray exports every few seconds)."""
    targets = [f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in ray.nodes() if n["Alive"]]
    deadline = time.time() + timeout
    while True:
        samples, failed = scrape(targets)
        assert len(failed) < len(targets), failed
        rows = summarize(samples)
        if want(rows) or time.time() > deadline:
            return rows
        time.sleep(1)


def pick(rows, metric, **labels):
    return [r for r in rows if r.metric == metric and all(r.labels.get(k) == v for k, v in labels.items())]


def test_training_reports_export_per_run_and_task(recorder):
    ray, actor = recorder
    run, other = f"export-{uuid.uuid4().hex[:8]}", f"rank1-{uuid.uuid4().hex[:8]}"
    reports = [
        {"step": 1, "loss": 3.0, "loss/medqa": 2.5, "loss/cxr_report": 3.5, "samples_per_s": 10.0,
         "tokens_per_s": 2000.0, "data_wait_frac": 0.25, "mix/medqa": 0.5, "mix/cxr_report": 0.5, "lr": 1e-3,
         "grad_norm": 1.5, "mfu": 0.31},
        {"step": 2, "loss": 2.0, "val_loss": 2.2, "val_loss/medqa": 2.1, "checkpoint_save_s": 0.7},
        {"step": 3, "loss": 1.5, "gpu_mem_gib": 3.0},
        {"step": 4, "loss": 1.2, "val_loss": 1.9, "checkpoint_save_s": 12.0},
    ]
    written = ray.get(actor.train.remote(run, reports))
    assert "medmix_train_mfu" in written[0] and "medmix_train_checkpoint_save_seconds" in written[1]
    assert ray.get(actor.train.remote(other, reports[:1], rank=1)) == [[]]  # only rank 0 records
    rows = read_back(ray, lambda rows: pick(rows, "ray_medmix_train_step", run=run)
                     and pick(rows, "ray_medmix_train_step", run=run)[0].value == 4.0
                     and pick(rows, "ray_medmix_train_checkpoint_save_seconds", run=run)
                     and pick(rows, "ray_medmix_train_checkpoint_save_seconds", run=run)[0].count == 2)

    def value(metric, **labels):
        (row,) = pick(rows, metric, run=run, **labels)
        return row.value

    assert value("ray_medmix_train_step") == 4.0
    assert value("ray_medmix_train_loss") == 1.2
    assert value("ray_medmix_train_task_loss", task="medqa") == 2.5
    assert value("ray_medmix_train_task_val_loss", task="medqa") == 2.1
    assert value("ray_medmix_train_val_loss") == 1.9
    assert value("ray_medmix_train_mixture_fraction", task="cxr_report") == 0.5
    assert value("ray_medmix_train_tokens_per_second") == 2000.0
    assert value("ray_medmix_train_data_wait_fraction") == 0.25
    assert value("ray_medmix_train_mfu") == pytest.approx(0.31)
    assert value("ray_medmix_train_checkpoint_age_seconds") == 0.0  # the last report saved one
    (hist,) = pick(rows, "ray_medmix_train_checkpoint_save_seconds", run=run)
    assert hist.count == 2 and 0.5 <= hist.quantiles["p50"] <= 1.0 and 10.0 <= hist.quantiles["p95"] <= 30.0
    assert not [r for r in rows if r.labels.get("run") == other]
    assert not [r for r in rows if "gpu_mem" in r.metric]  # unknown keys are not exported


def test_checkpoint_age_grows_between_checkpoints(recorder):
    ray, actor = recorder
    run = f"age-{uuid.uuid4().hex[:8]}"
    ray.get(actor.train.remote(run, [{"step": 1, "checkpoint_save_s": 0.1}]))
    time.sleep(1.5)
    ray.get(actor.train.remote(run, [{"step": 2, "loss": 1.0}]))
    rows = read_back(ray, lambda rows: any(r.value == 2.0 for r in pick(rows, "ray_medmix_train_step", run=run)))
    (age,) = pick(rows, "ray_medmix_train_checkpoint_age_seconds", run=run)
    assert 1.5 <= age.value < 30


def test_serve_calls_export_requests_latency_batches_and_version(recorder):
    ray, actor = recorder
    version, other = f"medmix/{uuid.uuid4().hex[:6]}", f"export-{uuid.uuid4().hex[:6]}"
    route = f"/test/{uuid.uuid4().hex[:6]}"  # this test's series only, whatever else the session served
    batches = [[(route, "medqa", 200, 0.02, version), (route, "medqa", 200, 0.04, None)],
               [(route, "path_vqa", 500, 0.3, other)],
               [(route, "made-up-task-1", 422, 0.001, ""), (route, "made-up-task-2", 422, 0.001, "")]]
    ray.get(actor.serve.remote([version, other], batches))
    rows = read_back(ray, lambda rows: len(pick(rows, "ray_medmix_serve_requests_total", endpoint=route)) == 3)
    reqs = {(r.labels["task"], r.labels["status"], r.labels["model_version"]): r.value
            for r in pick(rows, "ray_medmix_serve_requests_total", endpoint=route)}
    # made-up task names collapse into one series: request bodies cannot grow Prometheus
    assert reqs == {("medqa", "200", version): 2.0, ("path_vqa", "500", other): 1.0, ("unknown", "422", "none"): 2.0}
    (lat,) = pick(rows, "ray_medmix_serve_request_latency_seconds", endpoint=route, task="medqa")
    assert lat.count == 2 and 0.01 <= lat.quantiles["p50"] <= 0.05
    (batch,) = pick(rows, "ray_medmix_serve_batch_size", model_version=version)
    assert batch.count == 3 and batch.quantiles["p95"] <= 2.0
    for served in (version, other):
        assert pick(rows, "ray_medmix_serve_model_version", model_version=served)[0].value == 1.0
    assert pick(rows, "ray_medmix_serve_model_version", model_version="2")[0].value == 0.0
    (loaded,) = pick(rows, "ray_medmix_serve_model_loaded_timestamp_seconds", model_version=version)
    assert abs(loaded.value - time.time()) < 300
