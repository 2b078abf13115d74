"""Serving throughput and latency, with and without `@serve.batch`, at concurrency 1 / 8 / 32.

Deploys the real app (`medmix.serve.server.start`: FastAPI ingress + multiplexed model
deployment) on a local Ray, twice: unbatched (serve.max_batch_size = 1) and batched
(serve.max_batch_size = --batch-size, max_ongoing_requests = 2x that), and at each
concurrency sends --requests requests over HTTP from a bounded asyncio client on loopback.
Requests alternate a chest X-ray report (one image from the suite's test split) and a
findings summary (text), each generating exactly --max-new-tokens tokens (`ignore_eos`), so
both modes do the same work. Reports requests/s, generated tokens/s, p50/p99 latency and the
mean model batch size, and the batched/unbatched throughput ratio; appends to RESULTS.md.

    .venv/bin/python benchmarks/serve.py                          # debug model, 64 px
    .venv/bin/python benchmarks/serve.py --set model.scale='"tiny"' --requests 128
    .venv/bin/python benchmarks/serve.py --model medmix-runs/exports/debug-step20 --data medmix-data
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import machine, record  # benchmarks/ is on sys.path when run as a script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "serve"))


def request_bodies(store_root: Path, max_new: int, n: int = 16) -> list[dict]:
    from medmix.data.store import ShardStore
    store = ShardStore(store_root)
    reports = [ex for _, ex in zip(range(n), store.iter_examples("cxr_report", "test"))]
    summaries = [ex for _, ex in zip(range(n), store.iter_examples("mimic3_summary", "test"))]
    opts = {"max_new_tokens": max_new, "ignore_eos": True}
    out = []
    for rep, summ in zip(reports, summaries):
        out.append({"task": "cxr_report", "options": opts,
                    "inputs": {**rep.context, "image": base64.b64encode(rep.images[0]).decode()}})
        out.append({"task": "mimic3_summary", "inputs": dict(summ.context), "options": opts})
    return out


def model_only(model: Path, bodies: list[dict], num_cpus: float, total: int = 64) -> dict[int, float]:
    """ms per request of the model replica's own work (ModelRunner.run) at batch 1 / 8 / 32, no HTTP."""
    import torch

    from medmix.serve.inputs import Limits, Preprocessor
    from medmix.serve.runner import ModelRunner
    from medmix.serve.schemas import PredictRequest
    from medmix.tasks import get_task
    torch.set_num_threads(max(1, int(num_cpus)))
    prep, runner = Preprocessor.from_export(model), ModelRunner.load(model)
    reqs = [PredictRequest.model_validate(b) for b in bodies]
    items = [prep.prepare(get_task(r.task), r.inputs, r.options, Limits()) for r in reqs]
    items = [items[i % len(items)] for i in range(total)]
    runner.run(items[:2])  # warm-up
    out = {}
    for size in (1, 8, 32):
        t0 = time.perf_counter()
        for lo in range(0, total, size):
            runner.run(items[lo:lo + size])
        out[size] = (time.perf_counter() - t0) * 1000 / total
    return out


async def load(url: str, bodies: list[dict], total: int, concurrency: int) -> dict:
    import httpx
    sem = asyncio.Semaphore(concurrency)
    latencies, batches, codes = [], [], []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/v1/predict", json=bodies[i % len(bodies)])
                latencies.append(time.perf_counter() - t0)
                codes.append(r.status_code)
                if r.status_code == 200:
                    batches.append(r.json()["batch_size"])
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"requests": total, "wall_s": wall, "rps": total / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "batch": float(np.mean(batches)) if batches else 0.0,
            "errors": sum(c != 200 for c in codes)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--data", default="", help="shard store with a tokenizer (default: build the tiny suite)")
    ap.add_argument("--model", default="", help="export directory (default: a seeded random model of the preset)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: max(48, 12 x concurrency))")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32, help="serve.max_batch_size of the batched mode")
    ap.add_argument("--batch-wait", type=float, default=0.02, help="serve.batch_wait_timeout_s of the batched mode")
    ap.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (torch threads) of the model replica")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from medmix.config import load_config
    from medmix.serve import server
    from medmix.serve.models import resolve_models
    from serve_helpers import free_port, make_export

    work = Path(tempfile.mkdtemp(prefix="medmix-bench-serve-"))
    data = Path(args.data) if args.data else work / "data"
    if not (data / "manifest.json").is_file():
        print(f"building the tiny suite in {data} ...", flush=True)
        from medmix.data.store import ShardStore
        from medmix.data.synth.suite import build_suite
        from medmix.data.tokenizer import ensure_tokenizer
        c = load_config("debug", [f'data.root="{data}"', 'synth.size="tiny"'])
        build_suite(c.synth, ShardStore(c.data.root, c.data), c.data.image_size, progress=False)
        ensure_tokenizer(c.tokenizer, c.data.root, c.model.decoder_path)
    cfg = load_config(args.preset, [f'data.root="{data}"', f'lineage.root="{work}/runs"', f"serve.port={free_port()}",
                                    "serve.num_gpus=0", f"serve.num_cpus={args.num_cpus}", *args.overrides])
    model = Path(args.model) if args.model else make_export(work / "export", cfg, seed=0)
    entries = resolve_models([str(model)], cfg.lineage)
    bodies = request_bodies(data, args.max_new_tokens)
    levels = [int(c) for c in args.concurrency.split(",")]
    alone = model_only(model, bodies, args.num_cpus)
    print("model replica alone, ms/request at batch 1/8/32:", {k: round(v, 1) for k, v in alone.items()}, flush=True)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    results: dict[str, dict[int, dict]] = {}
    # both modes let the replica hold the same number of requests, so the only difference is
    # whether it runs them one at a time or together (a replica capped at 2 would also make the
    # router back off and retry, which is not what "unbatched" should measure)
    ongoing = 2 * args.batch_size
    modes = {"unbatched": {"max_batch_size": 1, "max_ongoing_requests": ongoing},
             "batched": {"max_batch_size": args.batch_size, "batch_wait_timeout_s": args.batch_wait,
                         "max_ongoing_requests": ongoing}}
    try:
        for mode, changes in modes.items():
            cfg.serve = dataclasses.replace(cfg.serve, **changes)
            url = server.start(cfg, entries)
            asyncio.run(load(url, bodies, 8, 4))  # warm-up: model load, first-call costs
            results[mode] = {}
            for c in levels:
                n = args.requests or max(48, 12 * c)
                r = asyncio.run(load(url, bodies, n, c))
                results[mode][c] = r
                print(f"{mode:9s} c={c:<3d} {r['rps']:7.2f} req/s  p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms"
                      f"  batch {r['batch']:.1f}  errors {r['errors']}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    mc = cfg.model
    command = "python benchmarks/serve.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [f"## serve — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"- machine: {machine()}", f"- command: `{command.strip()}`",
             f"- model: {'`' + str(args.model) + '`' if args.model else 'seeded random init'} (scale {mc.scale}, "
             f"{mc.image_size} px, {mc.num_image_tokens} image tokens), CPU fp32, 1 model replica x "
             f"{args.num_cpus:g} CPU + 1 FastAPI ingress replica, local Ray (4 logical CPUs)",
             f"- requests: cxr_report (1 image) and mimic3_summary alternating, {args.max_new_tokens} generated "
             f"tokens each (ignore_eos), HTTP over loopback from one asyncio client",
             f"- batched: serve.max_batch_size {args.batch_size}, batch_wait_timeout_s {args.batch_wait}, "
             f"max_ongoing_requests {2 * args.batch_size}; unbatched: max_batch_size 1, same max_ongoing_requests", "",
             "| mode | concurrency | requests | req/s | tokens/s | p50 ms | p99 ms | mean batch | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, by_c in results.items():
        for c, r in by_c.items():
            lines.append(f"| {mode} | {c} | {r['requests']} | {r['rps']:.2f} | {r['rps'] * args.max_new_tokens:.0f} | "
                         f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['batch']:.1f} | {r['errors']} |")
    lines += ["", "| model replica alone (ModelRunner.run, no HTTP) | batch 1 | batch 8 | batch 32 |", "|---|---|---|---|",
              f"| ms per request | {alone[1]:.1f} | {alone[8]:.1f} | {alone[32]:.1f} |",
              f"| speed-up over batch 1 | 1.00x | {alone[1] / alone[8]:.2f}x | {alone[1] / alone[32]:.2f}x |", ""]
    for c in levels:
        if c in results.get("batched", {}) and c in results.get("unbatched", {}):
            ratio = results["batched"][c]["rps"] / results["unbatched"][c]["rps"]
            lines.append(f"- concurrency {c}: batched / unbatched throughput = **{ratio:.2f}x**")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        record(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
