"""The first job on a real cluster, all on 127.0.0.1: no shared disk, a node killed mid-run.

Built here: a local S3 server (moto) with one bucket; `medmix tracking-server` whose artifacts
go to that bucket; a Ray head with no CPUs (Jobs API, drivers) and worker nodes labelled
`medmix-role=train` (one training CPU each, so a run's two workers land on two nodes; four,
so that both runs train at once) and `medmix-role=data` — each its own raylet (`ray_nodes.RayNodes`). No node has the AWS or MLflow
variables: a job gets them from `medmix submit` (--env, --tracking-uri) alone.

Every medmix path is an s3:// URI and the driver works in an empty folder:
`medmix synth` into the bucket -> `medmix submit train` twice, the same run under two names:
one uninterrupted (its logs followed, as `medmix submit` does by default), one paused one step
after its step-3 checkpoint while the node running its rank 1 is SIGKILLed and a replacement
joins -> the killed run resumes from its S3 checkpoint, trains step 4 again and ends with the
uninterrupted run's weights, bit for bit, and its examples, none lost or repeated ->
`medmix export` into the bucket, registered as the champion on the tracking server ->
`medmix lineage` follows it down to the S3 shards -> `medmix serve --model medmix@champion` on
the cluster answers. The driver's folder is still empty at the end.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ray_nodes import RayNodes, free_port  # noqa: E402

pytestmark = pytest.mark.slow(minutes=4)

ROOT = Path(__file__).resolve().parents[3]
CHECKPOINT_STEP, PAUSE_STEP = 3, 4   # the kill comes one step after the last checkpoint
TRAIN = ["--preset", "debug", "--set", "train.steps=6", "--set", "train.checkpoint_every=3",
         "--set", "train.log_every=3", "--set", "train.eval_every=0", "--set", "train.keep_last=3",
         "--set", "mixture.global_batch_size=8", "--set", "train.max_failures=2"]
AWS = ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]


def clean_env() -> dict[str, str]:
    """This environment without any AWS/MLflow/Ray address variable: what a fresh node has."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "MLFLOW_")) and k not in ("RAY_ADDRESS", "MEDMIX_CACHE_DIR")}


def wait_for(what: str, ready, timeout: float, poll: float = 0.5):
    deadline = time.time() + timeout
    while True:
        got = ready()
        if got:
            return got
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server):
    """S3 bucket + tracking server (artifacts in the bucket) + head, four train nodes, a data node."""
    tmp = tmp_path_factory.mktemp("cluster")
    bucket = s3_server.bucket("cluster")
    logs = tmp / "logs"
    logs.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "medmix.cli", "tracking-server", "--root", str(tmp / "tracking"),
         "--artifacts", f"s3://{bucket}/mlflow", "--port", str(port), "--workers", "1"],
        env={**clean_env(), **s3_server.env}, stdout=open(logs / "tracking.log", "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    nodes = RayNodes(logs, clean_env())
    try:
        nodes.start_head()
        nodes.add(*((f"train-{i}", 1, "train") for i in range(1, 5)), ("data-1", 4, "data"))
        uri = f"http://127.0.0.1:{port}"
        wait_for("the tracking server", lambda: _healthy(uri, server, logs), 90)
        yield {"tmp": tmp, "bucket": bucket, "s3": s3_server, "nodes": nodes, "tracking": uri, "logs": logs}
    finally:
        nodes.shutdown()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _healthy(uri: str, proc: subprocess.Popen, logs: Path) -> bool:
    assert proc.poll() is None, (logs / "tracking.log").read_text()[-3000:]
    try:
        return urllib.request.urlopen(uri + "/health", timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture
def driver(stack, tmp_path, monkeypatch):
    """The submitting machine: an empty working directory, S3 credentials and the tracking URI
    in its environment, local copies in a cache outside the working directory."""
    cwd = tmp_path / "driver"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for k, v in stack["s3"].env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack["tracking"])
    monkeypatch.setenv("MEDMIX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return cwd


def test_train_on_a_cluster_without_shared_disk_survives_a_killed_node(stack, driver, capsys):
    from ray.job_submission import JobSubmissionClient

    from medmix.cli import main
    from medmix.commands.submit import auth_headers, submit
    from medmix.model.export_meta import WEIGHTS_FILE
    from medmix.storage import location
    from medmix.train.callbacks import PAUSE_MARKER, read_ledger
    from medmix.train.checkpoint import COMMIT_FILE
    from medmix.train.launcher import RUN_INFO, read_ranks
    nodes, bucket = stack["nodes"], stack["bucket"]
    base = f"s3://{bucket}"
    paths = ["--set", f'data.root="{base}/data"', "--set", f'train.storage_path="{base}/checkpoints"',
             "--set", f'lineage.root="{base}/runs"']
    t0 = time.time()

    # 1. the bundled suite, straight into the bucket
    assert main(["synth", "--preset", "debug", "--set", f'data.root="{base}/data"', "--set", 'synth.size="tiny"']) == 0
    assert location(f"{base}/data/manifest.json").is_file()
    t_synth = time.time()

    # 2. the same run twice: "clean" uninterrupted, "killed" paused after its step-3 checkpoint
    client = JobSubmissionClient(nodes.dashboard, headers=auth_headers())

    def submit_train(name: str, *extra: str) -> str:
        job_id, _ = submit("train", [*TRAIN, *paths, "--set", f"name={name}", *extra], address=nodes.dashboard,
                           follow=False, working_dir=str(ROOT), python=sys.executable, env=AWS)
        return job_id

    followed, clean = io.StringIO(), {}

    def follow_clean() -> None:   # `medmix submit` following the job's logs to its end
        clean["job"], clean["status"] = submit(
            "train", [*TRAIN, *paths, "--set", "name=clean"], address=nodes.dashboard, timeout=900, out=followed,
            working_dir=str(ROOT), python=sys.executable, env=AWS)

    follower = threading.Thread(target=follow_clean, daemon=True)
    follower.start()
    killed_job = submit_train("killed", "--set", f"debug.pause_at_step={PAUSE_STEP}", "--set", "debug.pause_s=300")
    killed_dir = location(f"{base}/checkpoints/killed")
    wait_for("the killed run's pause one step after its step-3 checkpoint",
             lambda: killed_dir.join(PAUSE_MARKER).exists() or _failed(client, killed_job), 600, poll=1)
    assert killed_dir.join(f"step-{CHECKPOINT_STEP:06d}", COMMIT_FILE).is_file()
    placed = {r["rank"]: nodes.name_of(r["node_id"]) for r in read_ranks(killed_dir.uri)}
    victim = placed[1]
    assert victim.startswith("train-") and placed[0].startswith("train-") and placed[0] != victim, placed
    time.sleep(2)   # the controller polls the workers every 2 s: step 3 is registered by now
    nodes.kill(victim)
    t_kill = time.time()
    nodes.add(("train-5", 1, "train"))

    status = wait_for(f"job {killed_job}", lambda: _terminal(client, killed_job), 900, poll=2)
    assert status == "SUCCEEDED", client.get_job_logs(killed_job)[-6000:]
    follower.join(timeout=900)
    assert clean.get("status") == "SUCCEEDED", followed.getvalue()[-6000:]
    assert "run clean: finished" in followed.getvalue(), followed.getvalue()[-3000:]
    t_jobs = time.time()

    # the killed run resumed from its step-3 checkpoint in a second attempt, off the dead node
    ledger = read_ledger(killed_dir.uri)
    assert sorted(ledger) == ["rank0-attempt0", "rank0-attempt1", "rank1-attempt0", "rank1-attempt1"], sorted(ledger)
    assert [r["step"] for r in ledger["rank0-attempt1"]][0] == CHECKPOINT_STEP + 1
    resumed_on = {nodes.name_of(r["node_id"]) for r in read_ranks(killed_dir.uri)}
    assert len(resumed_on) == 2 and victim not in resumed_on, resumed_on
    # every rank on a node labelled for training (the data node's 4 free CPUs stayed unused by
    # Ray Train), and each run's info says so
    for run in ("clean", "killed"):
        ranks = json.loads(location(f"{base}/checkpoints/{run}").join(RUN_INFO).read_text())["ranks"]
        assert [r["rank"] for r in ranks] == [0, 1], (run, ranks)
        assert all(r["role"] == "train" and nodes.name_of(r["node_id"]).startswith("train-") for r in ranks), ranks
    # ... with exactly the uninterrupted run's examples: none lost, none repeated
    assert _effective(ledger) == _effective(read_ledger(f"{base}/checkpoints/clean"))

    # 3. export both into the bucket: bit-identical weights; the killed run's is the champion
    capsys.readouterr()
    assert main(["export", f"{base}/checkpoints/clean", "--out", f"{base}/exports/clean", "--no-register"]) == 0
    assert main(["export", f"{base}/checkpoints/killed", "--out", f"{base}/exports/killed", "--alias", "champion"]) == 0
    printed = capsys.readouterr().out
    assert "registered medmix/1" in printed and "medmix@champion -> version 1" in printed, printed
    weights = location(f"{base}/exports/killed").join(WEIGHTS_FILE).read_bytes()
    assert weights == location(f"{base}/exports/clean").join(WEIGHTS_FILE).read_bytes()

    # 4. lineage from the tracking server down to the shards in the bucket
    assert main(["lineage", "medmix/1", "--shards", *paths]) == 0
    chain = capsys.readouterr().out
    for needle in ("killed", "step-000006", f"{base}/data", "cxr_report", "synth", ".parquet"):
        assert needle in chain, f"lineage lacks {needle!r}:\n{chain}"

    # 5. serve the champion on the cluster; it answers
    t_serve = time.time()
    answer = _serve_and_ask(stack, paths)
    assert answer["model"]["id"] == "medmix/1" and answer["prediction"] in ("yes", "no", "maybe"), answer

    assert sorted(os.listdir(driver)) == [], "medmix wrote into the driver's working directory"
    print(f"cluster test: synth {t_synth - t0:.0f} s, two runs + kill {t_jobs - t_synth:.0f} s "
          f"(kill at {t_kill - t_synth:.0f} s), export + lineage {t_serve - t_jobs:.0f} s, "
          f"serve {time.time() - t_serve:.0f} s")


def _serve_and_ask(stack, paths: list[str]) -> dict:
    from medmix.serve.client import ask
    port = free_port()
    env = {**os.environ, "RAY_ADDRESS": stack["nodes"].gcs, "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1"}
    log = stack["logs"] / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "medmix.cli", "serve", "--model", "medmix@champion",
                             "--port", str(port), "--set", "serve.num_gpus=0", *paths],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("medmix serve", lambda: _serving(url, proc, log), 240, poll=1)
        return ask(url, "pubmedqa", {"abstract": "Aspirin lowered stroke recurrence in a trial.",
                                     "question": "Does aspirin reduce recurrent stroke?"})
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _serving(url: str, proc: subprocess.Popen, log: Path) -> bool:
    assert proc.poll() is None, log.read_text()[-4000:]
    try:
        return urllib.request.urlopen(url + "/healthz", timeout=2).status == 200
    except OSError:
        return False


def _terminal(client, job: str) -> str | None:
    status = str(client.get_job_status(job).value)
    return status if status in ("SUCCEEDED", "FAILED", "STOPPED") else None


def _failed(client, job: str) -> bool:
    status = _terminal(client, job)
    assert status is None, f"job {job} ended {status} before the kill:\n{client.get_job_logs(job)[-6000:]}"
    return False


def _effective(ledger: dict[str, list[dict]]) -> dict[int, dict[int, list[str]]]:
    """rank -> step -> example ids, a later attempt winning where a step was trained twice."""
    out: dict[int, dict[int, list[str]]] = {}
    for key in sorted(ledger, key=lambda k: int(k.split("attempt")[1])):
        rank = int(key[4:].split("-")[0])
        for row in ledger[key]:
            out.setdefault(rank, {})[row["step"]] = row["ids"]
    return out
