"""Shared fixtures: the debug config in a temp dir, the bundled suite built once, one Ray."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from medmix.runtime import PREEMPTION_WATCHER_ENV

# Property tests: CI draws the same examples on every run (a red CI is then a real regression,
# never bad luck) and keeps no example database; a developer's machine explores new examples
# and remembers failing ones. HYPOTHESIS_PROFILE=ci reproduces CI's draws locally.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# Under `make test`'s pytest-xdist workers (one per core) every worker computes with one thread:
# two OpenMP threads per worker would make four on two cores, and a parallel region then waits
# at its barrier for a thread the other worker's process has descheduled (a compute-bound test
# ran ~3x slower beside another than alone). Set before torch is imported; subprocesses (CLI
# drivers, Ray's workers) inherit it, and medmix's Ray workers and replicas still set their own
# thread count from their CPUs (train.cpus_per_worker, serve.torch_threads).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


# Every Ray the tests start (the session's, the clusters' raylets, CLI drivers' jobs) keeps at
# most one idle worker process and starts none ahead of need: an idle worker polls at ~0.7% of a
# core, and `num_cpus=6` on a 2-core machine would otherwise keep six per Ray (7.9% -> 4.4% of a
# core for an idle session Ray, measured). Tests start actors (train workers, replicas), whose
# processes are never the idle pool's; a burst of tasks still reuses its workers.
os.environ.setdefault("RAY_num_workers_soft_limit", "1")
os.environ.setdefault("RAY_prestart_worker_first_driver", "false")
# Ray Train's controller polls its worker group every 2 s, and every phase of a run (group
# started, first report, workers done) waits for the next poll: a 4-step debug run took 22.5 s
# at 2 s and 11.5 s at 0.25 s (measured, warm Ray, idle machine). The suite starts ~30 such
# runs; a real run of hours does not notice the difference, so this stays a test setting.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def pytest_configure(config):
    """One fresh medmix cache (MEDMIX_CACHE_DIR) for the session, shared by its xdist workers
    (they inherit the variable): what one test keeps there — a GGUF decoder dequantised once,
    registry downloads — later tests reuse, as a user's runs would; nothing outlives the session
    or comes from an earlier one (~/.cache/medmix is never read)."""
    import tempfile
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("MEDMIX_CACHE_DIR"):
        return
    os.environ["MEDMIX_CACHE_DIR"] = config._medmix_cache = tempfile.mkdtemp(prefix="medmix-test-cache-")


def pytest_unconfigure(config):
    import shutil
    cache = getattr(config, "_medmix_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("MEDMIX_CACHE_DIR", None)


def pytest_collection_modifyitems(config, items):
    _slow_files_first(items)
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _slow_files_first(items) -> None:
    """Files with a `slow` test run first, longest first (`slow(minutes=N)`, an estimate on two
    cores; files that share a SHARED_BUILDS fixture count as one unit, their minutes added), each
    file's tests kept together and in order: under `make test`'s workers the long units start at
    once, one on each worker, and the short ones fill in around them."""
    minutes: dict = {}
    shared: dict = {}
    for item in items:
        mark = item.get_closest_marker("slow")
        if mark is not None:
            minutes[item.path] = max(minutes.get(item.path, 0.0), float(mark.kwargs.get("minutes", 0.5)))
        found = [f for f in SHARED_BUILDS if f in getattr(item, "fixturenames", ())]
        if found:
            shared.setdefault(item.path, found[0])
    unit_minutes: dict = {}
    for path, m in minutes.items():
        unit = shared.get(path, path)
        unit_minutes[unit] = unit_minutes.get(unit, 0.0) + m
    first_seen = {path: i for i, path in reversed(list(enumerate(item.path for item in items)))}

    def key(item):
        unit = shared.get(item.path, item.path)
        return -unit_minutes.get(unit, 0.0), str(unit), -minutes.get(item.path, 0.0), first_seen[item.path]
    items.sort(key=key)


# Session fixtures that cost a minute or more to build. Under `make test`'s workers every file
# that names one runs on the same worker, which builds it once; every other file is a unit of its
# own (its module fixtures are set up once).
SHARED_BUILDS = ("small_suite", "trained_debug")
_SHARED_OF: dict[str, str] = {}


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with the files that share an expensive session fixture as one unit.
    (pytest-xdist's own `loadgroup` cannot tag tests under pytest 9, which renamed the node id
    attribute it rewrites.)"""
    if config.getoption("dist") != "loadfile":
        return None
    import re

    from xdist.scheduler import LoadScopeScheduling
    uses = re.compile(r"\b(" + "|".join(SHARED_BUILDS) + r")\b")

    def unit(nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        if path not in _SHARED_OF:
            found = uses.search((config.rootpath / path).read_text()) if path.endswith(".py") else None
            _SHARED_OF[path] = found.group(1) if found else path
        return _SHARED_OF[path]

    class SharedBuildScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    return SharedBuildScheduling(config, log)


def debug_config(tmp_path, *overrides: str):
    """The `debug` preset with every output under tmp_path, plus overrides."""
    from medmix.config import load_config
    base = [f'data.root="{tmp_path}/data"',
            f'train.storage_path="{tmp_path}/runs/checkpoints"',
            f'lineage.root="{tmp_path}/runs"']
    return load_config("debug", base + list(overrides))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, with logical CPUs so data + train can't deadlock."""
    import ray
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")   # as medmix's own local cluster does
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def _build_suite(root, size: str, tasks: tuple[str, ...] = ()) -> str:
    import json

    from medmix.config import load_config
    from medmix.data.store import ShardStore
    from medmix.data.synth.suite import build_suite
    from medmix.data.tokenizer import ensure_tokenizer
    cfg = load_config("debug", [f'data.root="{root}"', f'synth.size="{size}"', f"synth.tasks={json.dumps(list(tasks))}"])
    build_suite(cfg.synth, ShardStore(cfg.data.root, cfg.data), cfg.data.image_size, progress=False)
    ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    return str(root)


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory) -> str:
    """The bundled suite at size `tiny` (+ its tokenizer), built once per test session."""
    return _build_suite(tmp_path_factory.mktemp("tiny-suite") / "data", "tiny")


# The tasks the `small_suite` tests train on (tests/integration/evaluate/test_image_path.py and
# test_transfer.py); building only these is a fifth of building every task. A test that needs
# another task at size `small` adds it here.
SMALL_SUITE_TASKS = ("cxr_classify", "cxr_report", "mammo_cbis_mass")


@pytest.fixture(scope="session")
def small_suite(tmp_path_factory) -> str:
    """The bundled suite at size `small` for SMALL_SUITE_TASKS (+ its tokenizer): enough rows to learn from."""
    return _build_suite(tmp_path_factory.mktemp("small-suite") / "data", "small", SMALL_SUITE_TASKS)


def suite_config(tmp_path, suite_root: str, *overrides: str):
    """`debug_config` reading an already built suite."""
    return debug_config(tmp_path, f'data.root="{suite_root}"', *overrides)


EVAL_SOURCE_TASKS = ["derm_pad", "cxr_report", "medqa", "vqa_rad"]
# a loss logged every step: tests/integration/train/test_trainer_matches_ray.py replays the run
# without Ray and compares the sequence
EVAL_SOURCE_OVERRIDES = ["name=evalsrc", "train.steps=4", "train.num_workers=1", "train.log_every=1",
                         "train.checkpoint_every=4"]


@pytest.fixture(scope="session")
def trained_debug(tmp_path_factory, tiny_suite, ray_local):
    """One real Ray Train run (debug model, 4 steps, 1 worker, four tasks) that evaluation and
    serving tests read: (config, TrainResult, its temp dir). Tests may export, evaluate and serve
    it; none may write into its run directory."""
    import json
    from medmix.train.launcher import train
    tmp = tmp_path_factory.mktemp("eval-train")
    cfg = suite_config(tmp, tiny_suite, *EVAL_SOURCE_OVERRIDES, "train.eval_every=0", "mixture.global_batch_size=8",
                       f"mixture.tasks={json.dumps(EVAL_SOURCE_TASKS)}", f'eval.report_dir="{tmp}/eval"',
                       "eval.max_new_tokens=8")
    result = train(cfg)
    assert result.error is None and result.checkpoint
    return cfg, result, tmp


class S3Server:
    """A local S3-compatible server (moto's) on 127.0.0.1; `bucket()` makes a fresh bucket."""

    def __init__(self, endpoint: str, proc):
        self.endpoint = endpoint
        self.proc = proc
        self._n = 0

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to reach this server (the standard AWS variables)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "medmix-test",
                "AWS_SECRET_ACCESS_KEY": "medmix-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def bucket(self, prefix: str = "medmix") -> str:
        import pyarrow.fs as pafs
        self._n += 1
        name = f"{prefix}-{os.getpid()}-{self._n}"
        fs = pafs.S3FileSystem(endpoint_override=self.endpoint.split("://", 1)[1], scheme="http",
                               access_key=self.env["AWS_ACCESS_KEY_ID"],
                               secret_key=self.env["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                               allow_bucket_creation=True)
        fs.create_dir(name)
        return name


def start_s3_server(extra_env: dict[str, str] | None = None) -> S3Server:
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(extra_env or {})})
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"moto_server did not start on {endpoint}")
            time.sleep(0.2)
    return S3Server(endpoint, proc)


@pytest.fixture(scope="session")
def s3_server():
    """One moto S3 server for the session; tests take their own bucket and set `s3_env`."""
    server = start_s3_server()
    yield server
    server.proc.kill()
    server.proc.wait()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """This process reaches the session's S3 server through the standard AWS variables."""
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return s3_server
