"""`medmix deploy kuberay <job>`: the KubeRay manifest for a medmix job, printed as YAML.

    medmix deploy kuberay train --preset base --tracking-uri http://medmix-tracking:5000 > train.yaml
    kubectl apply -f train.yaml

train and sweep become a RayJob (KubeRay starts a cluster, submits the job, tears the cluster
down when it ends); serve becomes a RayService whose serveConfigV2 is what `medmix serve
--emit-config` writes. The entrypoint and runtime_env are `build_job`'s, as for `medmix
submit`. The cluster: a CPU head that runs no tasks (`num-cpus: 0`: drivers, GCS, Serve
controller), a GPU worker group labelled medmix-role=train and a CPU worker group labelled
medmix-role=data (the node labels `medmix.placement` reads). Secrets named by --env never
appear in the manifest: every Ray container reads them from the Kubernetes Secret --secret.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import re
import sys
from typing import Any

from medmix.cli import build_parser
from medmix.commands.submit import Job, add_job_env_args, build_job
from medmix.commands.serve import apply_args
from medmix.config import load_config
from medmix.placement import DATA, ROLE_LABEL, TRAIN

KINDS = {"train": "RayJob", "sweep": "RayJob", "serve": "RayService"}
IMAGE_WORKDIR = "/home/ray/medmix"
RAY_VERSION = importlib.metadata.version("ray")
DEFAULT_IMAGE = f"rayproject/ray:{RAY_VERSION}-py{sys.version_info.major}{sys.version_info.minor}-gpu"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "deploy", help="print a KubeRay manifest (RayJob for train/sweep, RayService for serve)",
        description="Print the Kubernetes manifest that runs a medmix job on KubeRay (v1.5+, the "
                    "ray.io/v1 API): a RayJob for train and sweep, a RayService for serve. Everything "
                    "after the job name that deploy does not know is the job's own arguments (--preset, "
                    "--set, --model ...), checked here. The entrypoint and runtime_env are exactly what "
                    "`medmix submit` would send; the cluster has a CPU head that runs no tasks, "
                    "--gpu-workers GPU pods labelled medmix-role=train and --data-workers CPU pods "
                    "labelled medmix-role=data. The image must hold this repository at "
                    f"{IMAGE_WORKDIR} with medmix installed (`pip install -e {IMAGE_WORKDIR}`): a RayJob "
                    "uploads that directory as its working_dir. Values of --env variables never enter the "
                    "manifest: each Ray container reads them from the Kubernetes Secret --secret.",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        epilog="examples:\n"
               "  medmix deploy kuberay train --preset base --tracking-uri http://medmix-tracking:5000 \\\n"
               "      --env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY --secret medmix-s3 > train.yaml\n"
               "  medmix deploy kuberay serve --model medmix@champion --gpu-workers 1 --gpus-per-worker 1\n"
               "  kubectl apply -f train.yaml      # see deploy/kuberay/README.md")
    p.add_argument("target", choices=["kuberay"], help="what to deploy on (KubeRay on Kubernetes)")
    p.add_argument("job", choices=sorted(KINDS), help="train or sweep (RayJob), serve (RayService)")
    p.add_argument("--image", default=DEFAULT_IMAGE,
                   help=f"container image of every Ray pod (default: {DEFAULT_IMAGE}, the installed Ray's; "
                        f"build one FROM it with medmix installed at {IMAGE_WORKDIR})")
    p.add_argument("--gpus-per-worker", type=int, default=8, metavar="N", help="GPUs per GPU pod (default: 8)")
    p.add_argument("--gpu-workers", type=int, default=None, metavar="N",
                   help="GPU pods (default: for train, enough for train.num_workers; else 1)")
    p.add_argument("--data-workers", type=int, default=2, metavar="N",
                   help="CPU pods for Ray Data preprocessing (default: 2)")
    p.add_argument("--namespace", default=None, help="metadata.namespace (default: none, kubectl's current)")
    p.add_argument("--name", default=None, help="metadata.name (default: medmix-<job>-<config name>)")
    p.add_argument("--secret", default=None, metavar="NAME",
                   help="Kubernetes Secret holding each --env variable under its own name as key")
    p.add_argument("--working-dir", default=IMAGE_WORKDIR,
                   help=f"the RayJob's working_dir, a path in the image or a remote URI (default: {IMAGE_WORKDIR})")
    p.add_argument("--python", default="python", help="interpreter in the image (default: python)")
    add_job_env_args(p, env_help="environment variable every Ray container reads from key NAME of the "
                                 "Kubernetes Secret --secret (repeatable); no value enters the manifest")
    p.set_defaults(func=run)


def manifest(job: str, job_args: list[str], *, image: str = DEFAULT_IMAGE, gpus_per_worker: int = 8,
             gpu_workers: int | None = None, data_workers: int = 2, namespace: str | None = None,
             name: str | None = None, secret: str | None = None, env: list[str] | None = None,
             working_dir: str = IMAGE_WORKDIR, python: str = "python",
             tracking_uri: str | None = None) -> dict[str, Any]:
    """The RayJob / RayService for `job` as plain data (strings for the embedded YAML)."""
    if job not in KINDS:
        raise ValueError(f"unknown job {job!r} for KubeRay: choose one of {', '.join(sorted(KINDS))}")
    env = env or []
    if env and not secret:
        raise ValueError(f"--env {', '.join(env)} needs --secret NAME: the Kubernetes Secret each Ray pod "
                         f"reads them from (values never go into the manifest)")
    if secret and not env:
        raise ValueError(f"--secret {secret} without --env: name the keys to read from it, e.g. --env AWS_ACCESS_KEY_ID")
    if gpus_per_worker < 1:
        raise ValueError(f"--gpus-per-worker {gpus_per_worker}: a GPU pod needs at least one GPU")
    args = build_parser().parse_args([job, *job_args])  # the job's own parser: a typo fails here
    cfg = load_config(getattr(args, "preset", "debug"), getattr(args, "overrides", []))
    if gpu_workers is None:
        gpu_workers = math.ceil(cfg.train.num_workers / gpus_per_worker) if job == "train" else 1
    # a Serve app gets no working_dir (Serve takes only remote URIs): it imports the installed medmix
    spec = build_job(job, job_args, working_dir=None if job == "serve" else working_dir, python=python,
                     tracking_uri=tracking_uri)
    cluster = ray_cluster(image, gpus_per_worker, gpu_workers, data_workers, secret_env(secret, env))
    name = name or k8s_name(f"medmix-{job}" + ("" if job == "serve" else f"-{cfg.name}"))
    metadata = {"name": name, **({"namespace": namespace} if namespace else {}),
                "labels": {"app.kubernetes.io/name": "medmix", "app.kubernetes.io/component": job}}
    if job == "serve":
        return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": metadata,
                "spec": {"serveConfigV2": serve_config_text(args, cfg, spec), "rayClusterConfig": cluster}}
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": metadata,
            "spec": {"entrypoint": spec.entrypoint, "runtimeEnvYAML": runtime_env_text(spec),
                     "shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": 600,
                     "rayClusterSpec": cluster}}


def runtime_env_text(spec: Job) -> str:
    import yaml
    return yaml.safe_dump(spec.runtime_env, sort_keys=False, default_flow_style=False)


def serve_config_text(args: argparse.Namespace, cfg, spec: Job) -> str:
    """`medmix serve --emit-config`'s YAML, bound to 0.0.0.0 unless --host said otherwise: the
    RayService's Kubernetes Service must reach the proxies."""
    from medmix.serve.server import serve_config_yaml
    if args.host is None:
        args.host = "0.0.0.0"
    return serve_config_yaml(apply_args(cfg, args), args.models or ["medmix@champion"], spec.runtime_env or None)


def secret_env(secret: str | None, names: list[str]) -> list[dict[str, Any]]:
    return [{"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": n}}} for n in names]


def ray_cluster(image: str, gpus_per_worker: int, gpu_workers: int, data_workers: int,
                env: list[dict[str, Any]]) -> dict[str, Any]:
    """Head (CPU, no tasks), GPU workers (medmix-role=train), CPU data workers (medmix-role=data).

    Requests are a starting point sized for one 8-GPU node per GPU pod; edit them to the nodes
    you have. GPU pods get a memory-backed /dev/shm: NCCL and the object store need more than
    the container default of 64 MiB.
    """
    def container(name: str, cpu: int, memory_gi: int, gpus: int = 0) -> dict[str, Any]:
        amount: dict[str, Any] = {"cpu": str(cpu), "memory": f"{memory_gi}Gi"}
        limits = {**amount, **({"nvidia.com/gpu": gpus} if gpus else {})}
        c: dict[str, Any] = {"name": name, "image": image, "resources": {"requests": amount, "limits": limits}}
        if env:
            c["env"] = env
        if gpus:
            c["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
        return c

    def group(group_name: str, role: str, replicas: int, pod: dict[str, Any]) -> dict[str, Any]:
        return {"groupName": group_name, "replicas": replicas, "minReplicas": replicas, "maxReplicas": replicas,
                "labels": {ROLE_LABEL: role}, "rayStartParams": {}, "template": {"spec": pod}}

    gpu_pod = {"containers": [container("ray-worker", 8 * gpus_per_worker, 64 * gpus_per_worker, gpus_per_worker)],
               "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]}
    return {
        "rayVersion": RAY_VERSION,
        "headGroupSpec": {
            # nothing is scheduled on the head: drivers, GCS and the Serve controller only
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": {"spec": {"containers": [container("ray-head", 4, 16)]}},
        },
        "workerGroupSpecs": [
            group("gpu", TRAIN, gpu_workers, gpu_pod),
            group("data", DATA, data_workers, {"containers": [container("ray-worker", 16, 64)]}),
        ],
    }


def k8s_name(text: str) -> str:
    """A DNS-1123 name (lowercase, digits, '-'), as Kubernetes requires of metadata.name."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:50]


def to_yaml(doc: dict[str, Any], header: str) -> str:
    """YAML with the embedded runtime_env / Serve config as readable block literals."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # the shared env list is written out in every container
            return True

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return header + yaml.dump(doc, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000)


def manifest_header(doc: dict[str, Any], secret: str | None, env: list[str]) -> str:
    lines = [f"# KubeRay {doc['kind']} for medmix, written by `medmix deploy kuberay`; regenerate rather than edit.",
             f"# The image must hold medmix at {IMAGE_WORKDIR} (see deploy/kuberay/README.md).",
             "# Apply: kubectl apply -f THIS_FILE"]
    if secret:
        keys = " ".join(f"--from-literal={n}=..." for n in env)
        lines.append(f"# Needs the Secret first: kubectl create secret generic {secret} {keys}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    doc = manifest(args.job, args.job_args, image=args.image, gpus_per_worker=args.gpus_per_worker,
                   gpu_workers=args.gpu_workers, data_workers=args.data_workers, namespace=args.namespace,
                   name=args.name, secret=args.secret, env=args.env, working_dir=args.working_dir,
                   python=args.python, tracking_uri=args.tracking_uri)
    sys.stdout.write(to_yaml(doc, manifest_header(doc, args.secret, args.env)))
    return 0
