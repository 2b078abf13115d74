"""medmix's metrics reach a real Prometheus, and every metric the dashboards query has samples.

The test starts its own Ray head (own temp dir, every port free-picked, metrics export on,
dashboard on so the head writes Prometheus' service-discovery file), a real Prometheus on
127.0.0.1 with a copy of `dashboards/prometheus.yml` that points at this head's session dir,
then, as separate driver processes (the session's in-process Ray stays untouched):

- a debug training run, 4 steps, a report every step, checkpoints at steps 2 and 4;
- the real Serve app (`medmix.serve.server.start`) on the checkpoint that run wrote, and
  HTTP requests to it: four answered 200 on two tasks (sent together, so batches form) and
  one for a task that does not exist, answered 422.

It then asks Prometheus' HTTP API for every metric named in the dashboards' PromQL, runs
every panel query, and reads the values back with `medmix metrics` both from the nodes'
endpoints and from Prometheus. Needs the `prometheus` binary (Debian package `prometheus`,
installed by `.ci/run`); skips with that reason where it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medmix.observability.metrics import ALL_METRICS, exported_series
from medmix.observability.promql import dashboard_queries, dashboard_variable_queries, metric_names, render
from medmix.observability.query import prometheus_api

pytestmark = [
    pytest.mark.slow(minutes=2.5),
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="needs the `prometheus` binary (Debian package `prometheus`; .ci/run installs "
                              "it, locally: apt-get install prometheus)"),
]
ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((ROOT / "dashboards").glob("medmix-*.json"))
RUN = "observed"
STEPS = ["train.steps=4", "train.log_every=1", "train.checkpoint_every=2", "train.num_workers=1", f"name={RUN}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, log: Path | None = None):
    deadline = time.time() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        else:
            last = None
        if time.time() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})\n{tail}")
        time.sleep(1)


def stop_group(proc: subprocess.Popen, hard: bool = False) -> None:
    """SIGTERM then SIGKILL the process group this test started (and nothing else); `hard`:
    SIGKILL at once (a throwaway Ray head that `ray start --block` would drain for seconds)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGKILL if hard else signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head with metrics export on a known port; its session dir holds the SD file."""
    logs = tmp_path_factory.mktemp("ray-head")
    ports = {name: free_port() for name in ("port", "dashboard-port", "metrics-export-port", "ray-client-server-port",
                                            "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                            "runtime-env-agent-port")}
    temp = Path("/tmp") / f"mmx-obs-{os.getpid()}"  # unix socket paths must stay short
    # Ray's processes ship metric values to their node's agent every 10 s by default; 1 s lets
    # the last report of a 4-step run get out before its workers exit.
    # token auth (Ray 2.60's default for `ray start`): drivers must send ~/.ray/auth_token too
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_metrics_report_interval_ms": "1000", "RAY_AUTH_MODE": "token"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         *(f"--{k}={v}" for k, v in ports.items()), "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         "--num-cpus=6", f"--temp-dir={temp}", "--disable-usage-stats"],
        stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        session = temp / "session_latest"
        discovery = session / "prom_metrics_service_discovery.json"
        # the targets carry the node's IP (Ray picks it whatever --node-ip-address says)
        wait_for("the head's service-discovery file", lambda: discovery.exists() and
                 f":{ports['metrics-export-port']}\"" in discovery.read_text(), 120, logs / "head.log")
        yield {"address": f"127.0.0.1:{ports['port']}", "session": session.resolve(),
               "discovery": session.resolve() / discovery.name, "metrics_port": ports["metrics-export-port"],
               "env": env}
    finally:
        stop_group(proc, hard=True)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus(ray_head, tmp_path_factory):
    """Prometheus on 127.0.0.1 with dashboards/prometheus.yml pointed at this head's session."""
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "ray")
    assert job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    job["file_sd_configs"][0]["files"] = [str(ray_head["discovery"])]
    job["file_sd_configs"][0]["refresh_interval"] = "1s"
    config["global"]["scrape_interval"] = "1s"  # a 4-step run lasts seconds, not minutes
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = work / "prometheus.log"
    proc = subprocess.Popen(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        target = f":{ray_head['metrics_port']}"
        wait_for(f"Prometheus to scrape the node's metrics port {target}", lambda: any(
            t["labels"]["instance"].endswith(target) and t["health"] == "up"
            for t in prometheus_api(url, "targets", {"state": "active"})["activeTargets"]), 90, log)
        yield url
    finally:
        stop_group(proc)


def run_driver(ray_head, code: str, *args: str, timeout: float = 600) -> dict:
    """Run `code` as a Ray driver connected to the test's head; it prints `RESULT <json>`."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**ray_head["env"], "RAY_ADDRESS": ray_head["address"], "PYTHONPATH": path, "MEDMIX_QUIET_WORKERS": "1"}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"driver failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


TRAIN_DRIVER = """
import json, sys
from tests.conftest import suite_config
from medmix.train.launcher import train
result = train(suite_config(sys.argv[1], sys.argv[2], *sys.argv[3:]))
print("RESULT " + json.dumps({"checkpoint": result.checkpoint, "error": result.error,
                              "use_gpu": result.metrics.get("mfu") is not None}))
"""

# The real Serve app (medmix.serve) serving the checkpoint the run just wrote, and real HTTP
# requests: three medqa and one pubmedqa answered 200, sent together so batches form, and one
# request for a task that does not exist, answered 422.
SERVE_DRIVER = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import httpx
from tests.conftest import suite_config
from medmix.serve import server
from medmix.serve.models import resolve_models
tmp, suite, checkpoint, port, discovery = sys.argv[1:6]
cfg = suite_config(tmp, suite, f"serve.port={port}", "serve.num_gpus=0", "serve.max_batch_size=4",
                   "serve.batch_wait_timeout_s=0.5", "serve.default_max_new_tokens=4")
entries = resolve_models([checkpoint], cfg.lineage)
url = server.start(cfg, entries)
with httpx.Client(base_url=url, timeout=300, trust_env=False) as client:
    examples = {t["name"]: t["example"] for t in client.get("/v1/tasks").json()}
    bodies = [examples["medqa"]] * 3 + [examples["pubmedqa"]]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/predict", json=b), bodies))
    answers.append(client.post("/v1/predict", json={"task": "no-such-task", "inputs": {}}))
# the replicas hand their metrics to the node's agent every second; wait until the node exports
# the last of them (the batch sizes) before this driver exits and Serve goes with it — on a
# loaded machine the agent can be a few seconds behind
targets = [t for group in json.loads(open(discovery).read()) for t in group["targets"]]
deadline = time.time() + 60
while time.time() < deadline:
    seen = ""
    for t in targets:
        try:
            seen += httpx.get(f"http://{t}/metrics", timeout=5, trust_env=False).text
        except httpx.HTTPError:
            pass
    if "medmix_serve_batch_size_count" in seen and "medmix_serve_requests_total" in seen:
        break
    time.sleep(1)
print("RESULT " + json.dumps({"model": entries[0].id, "url": url,
                              "answers": [[b["task"], a.status_code] for b, a in
                                          zip(bodies + [{"task": "no-such-task"}], answers)]}))
"""


@pytest.fixture(scope="module")
def observed(ray_head, prometheus, tiny_suite, tmp_path_factory):
    """Train and serve on the head while Prometheus scrapes it; returns what ran."""
    t0 = time.time()
    train = run_driver(ray_head, TRAIN_DRIVER, str(tmp_path_factory.mktemp("train")), tiny_suite, *STEPS)
    assert train["error"] is None and train["checkpoint"], train
    serve = run_driver(ray_head, SERVE_DRIVER, str(tmp_path_factory.mktemp("serve")), tiny_suite,
                       train["checkpoint"], str(free_port()), str(ray_head["discovery"]))
    assert serve["answers"] == [["medqa", 200]] * 3 + [["pubmedqa", 200], ["no-such-task", 422]], serve
    skip = expected_missing(train["use_gpu"])
    # Prometheus scrapes every second; let it catch the last values (then a few more scrapes,
    # so range queries stepping every 2 s see them too); the tests say what is still missing
    deadline = time.time() + 60
    while time.time() < deadline and not all(samples_of(prometheus, n) for n in dashboard_metrics() if n not in skip):
        time.sleep(1)
    time.sleep(3)
    return {"start": t0, "use_gpu": train["use_gpu"], "skip": skip, "model": serve["model"]}


def dashboard_metrics() -> dict[str, list[str]]:
    """metric name -> the dashboard panels (and variables) whose PromQL names it."""
    out: dict[str, list[str]] = {}
    for path in DASHBOARDS:
        for q in dashboard_queries(path) + dashboard_variable_queries(path):
            for name in metric_names(q.expr):
                out.setdefault(name, []).append(f"{q.dashboard}: {q.panel}")
    return out


def samples_of(url: str, name: str) -> int:
    result = prometheus_api(url, "query", {"query": f"{name}[30m]"})["result"]
    return sum(len(series["values"]) for series in result)


def expected_missing(use_gpu: bool) -> set[str]:
    """Series nobody records on this hardware: MFU needs a GPU's peak FLOP/s."""
    return set() if use_gpu else {s for m in ALL_METRICS if m.gpu_only for s in m.series}


def test_every_dashboard_metric_has_samples_in_prometheus(observed, prometheus):
    named = dashboard_metrics()
    exported = exported_series()
    unknown = {n: where for n, where in named.items() if n not in exported}
    assert not unknown, f"dashboards query metrics medmix never exports: {unknown}"
    skip = observed["skip"]
    missing = {n: w for n, w in named.items() if n not in skip and samples_of(prometheus, n) == 0}
    hint = ("" if not any("_serve_" in n for n in missing) else
            "\n(serve metrics come from medmix.serve calling set_served_model, record_request and "
            "record_batch: see medmix/observability/metrics.py)")
    assert not missing, f"no samples in Prometheus for: {missing}{hint}"
    for name in skip & set(named):
        # honest absence: a CPU run must not publish a made-up MFU
        assert samples_of(prometheus, name) == 0, name


def test_dashboard_queries_run_and_return_data(observed, prometheus):
    """Every panel's PromQL (Grafana variables filled in) is valid and draws something."""
    skip = observed["skip"]
    empty = []
    for path in DASHBOARDS:
        for q in dashboard_queries(path):
            data = prometheus_api(prometheus, "query_range", {
                "query": render(q.expr), "start": f"{observed['start'] - 5:.0f}", "end": f"{time.time():.0f}",
                "step": "2"})
            if not data["result"] and not (metric_names(q.expr) & skip):
                empty.append(f"{q.dashboard}: {q.panel} [{q.ref_id}] {q.expr}")
        for q in dashboard_variable_queries(path):
            assert samples_of(prometheus, render(q.expr)) > 0, (q.panel, q.expr)
    assert not empty, "panels with no data:\n" + "\n".join(empty)


def test_values_match_what_ran(observed, prometheus):
    def last(expr: str) -> dict[tuple, float]:
        out = {}
        for series in prometheus_api(prometheus, "query", {"query": f"{expr}[30m]"})["result"]:
            key = tuple(sorted((k, v) for k, v in series["metric"].items() if k in ("run", "task", "status",
                                                                                   "model_version", "le")))
            out[key] = max(out.get(key, float("-inf")), float(series["values"][-1][1]))
        return out

    assert last("ray_medmix_train_step") == {(("run", RUN),): 4.0}
    saves = last("ray_medmix_train_checkpoint_save_seconds_count")
    assert saves == {(("run", RUN),): 2.0}, saves  # steps 2 and 4
    tasks = {dict(k)["task"] for k in last("ray_medmix_train_task_loss")}
    assert tasks and tasks == {dict(k)["task"] for k in last("ray_medmix_train_mixture_fraction")}
    assert abs(sum(v for v in last("ray_medmix_train_mixture_fraction").values()) - 1.0) < 1e-6
    model = observed["model"]
    requests = last('ray_medmix_serve_requests_total{endpoint="/v1/predict"}')
    assert requests == {(("model_version", model), ("status", "200"), ("task", "medqa")): 3.0,
                        (("model_version", model), ("status", "200"), ("task", "pubmedqa")): 1.0,
                        (("model_version", "none"), ("status", "422"), ("task", "unknown")): 1.0}
    assert last("ray_medmix_serve_model_version") == {(("model_version", model),): 1.0}
    # continuous batching (the default) observes every decode step, each decoding 1 to 4 rows:
    # never more than the 4 requests that were sent
    (steps,) = last('ray_medmix_serve_batch_size_bucket{le="+Inf"}').values()
    (at_most_4,) = last('ray_medmix_serve_batch_size_bucket{le="4.0"}').values()
    assert steps >= 1 and at_most_4 == steps, (steps, at_most_4)


def test_medmix_metrics_reads_nodes_and_prometheus(observed, ray_head, prometheus):
    def cli(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "medmix.cli", "metrics", "--json", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    def rows(report: dict, metric: str) -> dict[str, dict]:
        return {" ".join(f"{k}={v}" for k, v in sorted(r["labels"].items())): r
                for r in report["metrics"] if r["metric"] == metric}

    # the nodes: the serve actor is alive, so its values are there right now
    live = cli("--discovery-file", str(ray_head["discovery"]))
    model = observed["model"]
    served = rows(live, "ray_medmix_serve_requests_total")
    assert served[f"endpoint=/v1/predict model_version={model} status=200 task=medqa"]["value"] == 3.0
    latency = rows(live, "ray_medmix_serve_request_latency_seconds")
    assert sum(r["count"] for r in latency.values()) == 5.0
    # Prometheus remembers the finished training run
    remembered = cli("--prometheus", prometheus, "--window", "30m")
    assert rows(remembered, "ray_medmix_train_step")[f"run={RUN}"]["value"] == 4.0
    assert rows(remembered, "ray_medmix_serve_model_version")[f"model_version={model}"]["value"] == 1.0
    text = subprocess.run([sys.executable, "-m", "medmix.cli", "metrics", "--prometheus", prometheus,
                           "--window", "30m", "--match", "train_task_loss"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert text.returncode == 0 and "ray_medmix_train_task_loss" in text.stdout
    assert "ray_medmix_serve" not in text.stdout
