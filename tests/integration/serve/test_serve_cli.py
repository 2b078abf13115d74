"""`medmix serve` end to end: registry references resolve to versions; a training checkpoint is
exported and served by the real CLI process, answering through `medmix.serve.client.ask`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import suite_config

sys.path.insert(0, str(Path(__file__).parent))
from serve_helpers import free_port, make_export  # noqa: E402


def test_registry_references_resolve_and_the_champion_answers(ray_local, tiny_suite, tmp_path):
    from medmix.lineage.registry import register_export, set_alias
    from medmix.lineage.tracker import build_tracker
    from medmix.serve.models import resolve_models, weights_digest
    from medmix.serve.server import answer_once
    cfg = suite_config(tmp_path, tiny_suite, f"serve.port={free_port()}", "serve.num_gpus=0")
    exports = [make_export(tmp_path / f"e{seed}", cfg, seed) for seed in (0, 1)]
    tracker = build_tracker(cfg.lineage)
    with tracker.start_run("debug") as run:
        versions = [register_export(cfg.lineage, e, run.run_id) for e in exports]
    set_alias(cfg.lineage, "medmix", "champion", versions[0])
    entries = resolve_models(["medmix@champion", f"medmix/{versions[1]}", f"models:/medmix/{versions[0]}"],
                             cfg.lineage)
    assert [e.id for e in entries] == [f"medmix/{v}" for v in versions]  # the duplicate merged
    champ, other = entries
    assert champ.version == versions[0] and {"medmix@champion", "champion", versions[0],
                                             f"models:/medmix/{versions[0]}"} <= set(champ.aliases)
    assert champ.digest == weights_digest(exports[0]) != other.digest
    assert Path(champ.path).is_dir() and Path(champ.path) != exports[0]  # fetched from the registry
    assert champ.describe()["lineage"]["checkpoint"] == "random-init-seed-0"
    with pytest.raises(Exception, match="no model version medmix/99"):
        resolve_models(["medmix/99"], cfg.lineage)
    with pytest.raises(FileNotFoundError, match="no such directory, and not a registry reference"):
        resolve_models([str(tmp_path / "nope")], cfg.lineage)
    # what `make demo` ends with: serve the champion, ask about one test example over HTTP, stop
    shown = answer_once(cfg, "medmix@champion", "cxr_classify")
    assert shown["answer"]["model"] == {"id": f"medmix/{versions[0]}", "version": versions[0],
                                        "digest": champ.digest}
    assert shown["answer"]["prediction"] in ("yes", "no") and shown["reference"] in ("yes", "no")
    assert shown["request"]["inputs"]["image"] == "<base64 image>"
    follow_the_champion(cfg, versions)


REQUESTS = 500   # one generated token each: the requests are many, not long


def follow_the_champion(cfg, versions: list[str]) -> None:
    """Serving `medmix@champion`, the champion moves while 500 requests run at concurrency 16: they
    all succeed, and the answers switch to the new version within the polling interval, without a
    redeploy."""
    import asyncio
    import dataclasses

    import httpx
    from ray import serve

    from medmix.lineage.registry import set_alias
    from medmix.serve import server
    from medmix.serve.models import resolve_models
    poll_s = 0.5
    cfg.serve = dataclasses.replace(cfg.serve, alias_poll_s=poll_s, port=free_port())
    url = server.start(cfg, resolve_models(["medmix@champion"], cfg.lineage))
    old, new = (f"medmix/{v}" for v in versions)
    body = {"task": "mimic3_summary", "inputs": {"findings": "clear lungs"}, "options": {"max_new_tokens": 1}}

    async def load(n: int, concurrency: int) -> list[tuple[float, int, str | None]]:
        sem = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=60.0) as c:
            async def one(i):
                async with sem:
                    if i == n // 4:  # a quarter of the way in, the champion moves
                        set_alias(cfg.lineage, "medmix", "champion", versions[1])
                        moved_at.append(time.monotonic())
                    r = await c.post("/v1/predict", json=body)
                    return time.monotonic(), r.status_code, r.json().get("model", {}).get("id")
            return await asyncio.gather(*(one(i) for i in range(n)))
    try:
        moved_at: list[float] = []
        t0 = time.monotonic()
        results = asyncio.run(load(REQUESTS, 16))
        codes = [code for _, code, _ in results]
        assert len(codes) == REQUESTS and codes.count(200) == len(codes), sorted(set(codes))
        ids = [model for _, _, model in results]
        assert ids[0] == old and ids[-1] == new, (ids[:3], ids[-3:])
        first_new = min(t for t, _, model in results if model == new)
        last_old = max(t for t, _, model in results if model == old)
        print(f"champion moved at {moved_at[0] - t0:.2f}s: first answer from the new version "
              f"{first_new - moved_at[0]:.2f}s later, last from the old {last_old - moved_at[0]:.2f}s later "
              f"({len(results)} requests in {time.monotonic() - t0:.1f}s)")
        # switched within the polling interval (+ loading the new version on the replica)
        assert last_old - moved_at[0] < poll_s + 10
        import openai
        listing = [m.model_dump() for m in openai.OpenAI(base_url=url + "/v1", api_key="-").models.list()]
        assert [m["id"] for m in listing] == [old, new]  # the openai client shows the champion
        assert "champion" in listing[1]["aliases"] and "champion" not in listing[0]["aliases"]
        assert listing[1]["default"] and not listing[0]["default"]
        pinned = httpx.post(url + "/v1/predict", json=body, headers={"X-Medmix-Model": old}).json()
        assert pinned["model"]["id"] == old  # the old version still answers by id
    finally:
        serve.shutdown()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"medmix serve exited early ({proc.returncode}):\n{proc.stdout.read()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"{url} not ready after {timeout}s")


def test_medmix_serve_exports_a_checkpoint_and_answers(trained_debug, tmp_path):
    import ray

    from medmix.serve.client import APIError, ask, models
    _, result, _ = trained_debug   # the debug run 'evalsrc', 4 steps
    port, token = free_port(), "cli-test-token"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "MEDMIX_API_TOKEN": token,
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "medmix.cli", "serve", "--model", result.run_dir, "--port", str(port),
           "--set", f'lineage.root="{tmp_path}/runs"', "--set", "serve.num_gpus=0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=300)
        answer = ask(url, "pubmedqa", {"abstract": "Aspirin lowered stroke recurrence in a trial.",
                                       "question": "Does aspirin reduce recurrent stroke?"}, token=token)
        assert answer["model"]["id"].startswith("export-") and answer["prediction"] in ("yes", "no", "maybe")
        (served,) = models(url, token=token)
        assert served["lineage"]["step"] == 4
        assert served["lineage"]["checkpoint"] == str(Path(result.checkpoint).resolve())
        assert served["lineage"]["run_id"] == result.run_id
        assert (tmp_path / "runs" / "exports" / "evalsrc-step4" / "model.safetensors").is_file()
        with pytest.raises(APIError) as err:
            ask(url, "pubmedqa", {"abstract": "a"}, token="wrong")
        assert err.value.status == 401
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "medmix serving at" in out and "Bearer token required" in out and "shutting down" in out
