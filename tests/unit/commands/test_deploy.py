"""`medmix deploy kuberay`: the committed manifests are what the commands print, and each one
runs `build_job`'s entrypoint and runtime_env on a cluster with an idle head, a GPU group
labelled medmix-role=train and a CPU group labelled medmix-role=data, with secrets only as
references to a Kubernetes Secret."""

from __future__ import annotations

import contextlib
import io
import shlex
from pathlib import Path

import pytest
import yaml

from medmix.cli import main
from medmix.commands import deploy
from medmix.commands.submit import build_job

ROOT = Path(__file__).resolve().parents[3]
TRACKING = ["--tracking-uri", "http://medmix-tracking:5000"]
# deploy/kuberay/<file>: the command that writes it (deploy/kuberay/README.md lists the same)
COMMANDS = {
    "train-base.yaml": ["train", "--preset", "base", "--set", "data.root=s3://medmix/data",
                        "--set", "train.storage_path=s3://medmix/checkpoints", *TRACKING,
                        "--env", "AWS_ACCESS_KEY_ID", "--env", "AWS_SECRET_ACCESS_KEY", "--secret", "medmix-s3"],
    "sweep.yaml": ["sweep", "--preset", "sweep_debug", "--gpu-workers", "1", "--gpus-per-worker", "1", *TRACKING],
    "serve.yaml": ["serve", "--model", "medmix@champion", "--gpu-workers", "1", "--gpus-per-worker", "1",
                   "--data-workers", "0", *TRACKING, "--env", "MEDMIX_API_TOKEN", "--secret", "medmix-api"],
}
JOB_ARGS = {"train-base.yaml": ("train", COMMANDS["train-base.yaml"][1:7]),
            "sweep.yaml": ("sweep", ["--preset", "sweep_debug"])}
SECRET = "s3cr3t-value-never-in-a-manifest"


@pytest.fixture(scope="module")
def printed() -> dict[str, str]:
    """Each command's stdout, run with the secrets set (they must not leak into the text)."""
    texts = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MEDMIX_API_TOKEN"):
            mp.setenv(name, SECRET)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        for file, argv in COMMANDS.items():
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(["deploy", "kuberay", *argv]) == 0
            texts[file] = out.getvalue()
    return texts


def test_committed_manifests_are_what_the_commands_print(printed):
    stale = [f for f, text in printed.items() if (ROOT / "deploy/kuberay" / f).read_text() != text]
    refresh = "\n".join(f"  medmix deploy kuberay {shlex.join(COMMANDS[f])} > deploy/kuberay/{f}" for f in stale)
    assert not stale, f"stale manifests under deploy/kuberay/; refresh them from the repository root:\n{refresh}"


def test_no_secret_value_is_in_any_manifest(printed):
    assert not [f for f, text in printed.items() if SECRET in text]


@pytest.mark.parametrize("file", sorted(JOB_ARGS))
def test_a_rayjob_runs_build_jobs_entrypoint_and_runtime_env(printed, file):
    doc = yaml.safe_load(printed[file])
    job, args = JOB_ARGS[file]
    expected = build_job(job, args, working_dir=deploy.IMAGE_WORKDIR, tracking_uri=TRACKING[1], environ={})
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    assert doc["spec"]["entrypoint"] == expected.entrypoint
    assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"]) == expected.runtime_env
    assert doc["spec"]["shutdownAfterJobFinishes"] is True


def test_a_rayservice_serves_the_emit_config_application_with_the_jobs_runtime_env(printed):
    from ray.serve.schema import ServeDeploySchema

    from medmix.config import load_config
    from medmix.serve.server import serve_config
    doc = yaml.safe_load(printed["serve.yaml"])
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    served = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(served)
    cfg = load_config("debug", ["serve.host=0.0.0.0"])  # reachable from the RayService's Service
    runtime_env = build_job("serve", [], working_dir=None, tracking_uri=TRACKING[1], environ={}).runtime_env
    assert served == serve_config(cfg, ["medmix@champion"], runtime_env)
    assert served["applications"][0]["runtime_env"] == {"env_vars": {"MLFLOW_TRACKING_URI": TRACKING[1]}}


@pytest.mark.parametrize("file", sorted(COMMANDS))
def test_the_cluster_has_an_idle_head_a_train_gpu_group_and_a_data_cpu_group(printed, file):
    doc = yaml.safe_load(printed[file])
    cluster = doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert groups["gpu"]["labels"] == {"medmix-role": "train"} and groups["data"]["labels"] == {"medmix-role": "data"}
    # KubeRay 1.5 refuses rayStartParams["labels"]: node labels go in the group's own field
    assert all("labels" not in g["rayStartParams"] for g in groups.values())
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpu == (8 if file == "train-base.yaml" else 1)
    assert "nvidia.com/gpu" not in groups["data"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert cluster["rayVersion"] == deploy.RAY_VERSION


def test_secrets_come_from_the_named_secret_in_every_ray_container(printed):
    doc = yaml.safe_load(printed["train-base.yaml"])
    cluster = doc["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for pod in pods:
        env = pod["template"]["spec"]["containers"][0]["env"]
        assert env == [{"name": n, "valueFrom": {"secretKeyRef": {"name": "medmix-s3", "key": n}}}
                       for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    assert "env_vars" in yaml.safe_load(doc["spec"]["runtimeEnvYAML"])  # the tracking URI only
    assert "AWS_" not in doc["spec"]["runtimeEnvYAML"]


def test_gpu_workers_default_to_enough_for_train_num_workers():
    def gpu_pods(*args: str, **kw) -> int:
        doc = deploy.manifest("train", ["--preset", "base", *args], tracking_uri="", **kw)
        return doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"]
    assert gpu_pods() == 2 and gpu_pods("--set", "train.num_workers=20") == 3
    assert gpu_pods(gpus_per_worker=4) == 4 and gpu_pods(gpu_workers=5) == 5


def test_names_and_namespace_are_kubernetes_names():
    doc = deploy.manifest("sweep", ["--preset", "sweep_debug"], namespace="ml", tracking_uri="")
    assert doc["metadata"]["name"] == "medmix-sweep-sweep-debug" and doc["metadata"]["namespace"] == "ml"


@pytest.mark.parametrize("kwargs, message", [
    ({"env": ["AWS_SECRET_ACCESS_KEY"]}, "--env AWS_SECRET_ACCESS_KEY needs --secret NAME"),
    ({"secret": "medmix-s3"}, "--secret medmix-s3 without --env"),
    ({"gpus_per_worker": 0}, "--gpus-per-worker 0"),
    ({"tracking_uri": "sqlite:///tmp/mlflow.db"}, "tracking URI sqlite:///tmp/mlflow.db"),
])
def test_bad_input_is_refused_with_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        deploy.manifest("train", ["--preset", "base"], **{"tracking_uri": "", **kwargs})


def test_a_job_argument_the_job_does_not_know_is_refused_before_any_manifest(capsys):
    with pytest.raises(SystemExit):
        deploy.manifest("train", ["--preset", "base", "--stepz", "3"], tracking_uri="")
    assert "--stepz" in capsys.readouterr().err
