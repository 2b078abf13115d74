"""Serving throughput and latency at concurrency 1 / 8 / 32, over HTTP on the real app.

Deploys the real app (`medmix.serve.server.start`: FastAPI ingress + multiplexed model
deployment) on a local Ray once per mode and at each concurrency sends --requests requests over
HTTP from a bounded asyncio client on loopback. Requests alternate a chest X-ray report (one
image from the suite's test split) and a findings summary (text), generating exactly their
max_new_tokens (`ignore_eos`), so every mode does the same work. Two workloads:

- `--workload fixed` (default): every request generates --max-new-tokens; unbatched
  (static batching, serve.max_batch_size = 1) against static batching (`@serve.batch`,
  serve.max_batch_size = --batch-size). Reports requests/s, generated tokens/s, p50/p99
  latency, the mean model batch size and the batched/unbatched throughput ratio.
- `--workload mixed`: each request's max_new_tokens drawn uniformly from 4..128 (seeded: the
  same sequence for both modes); static against continuous batching (serve.batching), both with
  serve.max_batch_size = --batch-size. Reports the same plus the p50 of the short requests
  (max_new_tokens <= 16), and at concurrency 1 each request's latency over what a direct model
  call (`ModelRunner.run([item])` in this process, same thread count) takes for it.
  Targets (issue 15): continuous >= 2x static throughput at concurrency 32, short requests'
  p50 <= 0.5x static's, and at concurrency 1 <= 3 ms over the direct call.

Appends to RESULTS.md.

    .venv/bin/python benchmarks/serve.py                          # debug model, 64 px
    .venv/bin/python benchmarks/serve.py --workload mixed --requests 96
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


SHORT = 16  # a request of at most this many tokens counts as short (mixed workload)


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


def mixed_bodies(bodies: list[dict], total: int, lo: int, hi: int, seed: int) -> list[dict]:
    """`total` requests cycling through `bodies`, each with max_new_tokens drawn from lo..hi."""
    draws = np.random.default_rng(seed).integers(lo, hi + 1, total)
    return [{**bodies[i % len(bodies)], "options": {"max_new_tokens": int(n), "ignore_eos": True}}
            for i, n in enumerate(draws)]


def prepared(model: Path, bodies: list[dict]):
    """(ModelRunner, the bodies as the ingress prepares them) in this process."""
    from medmix.serve.inputs import Limits, Preprocessor
    from medmix.serve.runner import ModelRunner
    from medmix.serve.schemas import PredictRequest
    from medmix.tasks import get_task
    prep, runner = Preprocessor.from_export(model), ModelRunner.load(model)
    reqs = [PredictRequest.model_validate(b) for b in bodies]
    return runner, [prep.prepare(get_task(r.task), r.inputs, r.options, Limits()) for r in reqs]


def direct_ms(model: Path, bodies: list[dict], num_cpus: float) -> tuple[list[float], list[float]]:
    """ms of a direct model call (`ModelRunner.run([item])`, no HTTP, no Serve) per body: the
    floor that a request at concurrency 1 pays in the replica; and ms of its preprocessing
    (`Preprocessor.prepare`, what the ingress does before the model sees it)."""
    import torch

    from medmix.serve.inputs import Limits, Preprocessor
    from medmix.serve.schemas import PredictRequest
    from medmix.tasks import get_task
    torch.set_num_threads(max(1, int(num_cpus)))
    runner, items = prepared(model, bodies)
    prep = Preprocessor.from_export(model)
    runner.run(items[:2])  # warm-up
    model_ms, prep_ms = [], []
    for body, it in zip(bodies, items):
        t0 = time.perf_counter()
        req = PredictRequest.model_validate(body)
        prep.prepare(get_task(req.task), req.inputs, req.options, Limits())
        t1 = time.perf_counter()
        runner.run([it])
        model_ms.append((time.perf_counter() - t1) * 1000)
        prep_ms.append((t1 - t0) * 1000)
    return model_ms, prep_ms


def model_only(model: Path, bodies: list[dict], num_cpus: float, total: int = 64) -> dict[int, float]:
    """ms per request of the model replica's own work (ModelRunner.run) at batch 1 / 8 / 32, no HTTP."""
    import torch
    torch.set_num_threads(max(1, int(num_cpus)))
    runner, items = prepared(model, bodies)
    items = [items[i % len(items)] for i in range(total)]
    runner.run(items[:2])  # warm-up
    out = {}
    for size in (1, 8, 32):
        t0 = time.perf_counter()
        for lo in range(0, total, size):
            runner.run(items[lo:lo + size])
        out[size] = (time.perf_counter() - t0) * 1000 / total
    return out


def model_side(model: Path, work_of: dict[int, list[dict]], num_cpus: float, batch_size: int,
               batch_wait: float, admit_every: int = 1) -> dict[str, dict[int, dict]]:
    """The mixed workload against the model alone, in this process (no HTTP, no Ray): a closed
    loop of `c` clients per level, answered by the continuous scheduler or by static batches
    gathered as `@serve.batch` gathers them (up to batch_size, waiting up to batch_wait for the
    first request's batch to fill). What the replica could do if requests cost nothing to
    deliver."""
    import torch

    from medmix.serve.scheduler import Scheduler
    torch.set_num_threads(max(1, int(num_cpus)))
    out: dict[str, dict[int, dict]] = {"static": {}, "continuous": {}}
    for c, bodies in work_of.items():
        runner, items = prepared(model, bodies)
        runner.run(items[:2])  # warm-up

        async def static(item, queue: asyncio.Queue):
            done = asyncio.get_running_loop().create_future()
            await queue.put((item, done))
            return await done

        async def batcher(queue: asyncio.Queue) -> None:
            while True:
                batch = [await queue.get()]
                deadline = time.perf_counter() + batch_wait
                while len(batch) < batch_size and (left := deadline - time.perf_counter()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), left))
                    except asyncio.TimeoutError:
                        break
                for (_, done), result in zip(batch, runner.run([it for it, _ in batch])):
                    done.set_result(result)

        async def closed_loop(mode: str) -> dict:
            queue: asyncio.Queue = asyncio.Queue()
            task = asyncio.create_task(batcher(queue)) if mode == "static" else None
            scheduler = Scheduler(runner, batch_size, admit_every=admit_every) if mode == "continuous" else None
            sem, latency = asyncio.Semaphore(c), [0.0] * len(items)

            async def one(i: int) -> None:
                async with sem:
                    t0 = time.perf_counter()
                    await (scheduler.submit(items[i]) if scheduler else static(items[i], queue))
                    latency[i] = (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(len(items))))
            wall = time.perf_counter() - t0
            if task is not None:
                task.cancel()
            short = [ms for ms, it in zip(latency, items) if it.max_new_tokens <= SHORT]
            return {"rps": len(items) / wall, "p50_ms": float(np.percentile(latency, 50)),
                    "short_p50_ms": float(np.percentile(short, 50)) if short else float("nan")}
        for mode in out:
            out[mode][c] = asyncio.run(closed_loop(mode))
    return out


async def load(url: str, bodies: list[dict], total: int, concurrency: int) -> dict:
    """Send bodies[i % len] for i < total, `concurrency` at a time; latency per request (by i)."""
    import httpx
    sem = asyncio.Semaphore(concurrency)
    latencies, batches, codes = [0.0] * total, [], []
    ingress = [float("nan")] * total  # the ingress's own latency_ms: from receiving the request to answering
    tokens = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:
        async def one(i: int) -> None:
            nonlocal tokens
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/v1/predict", json=bodies[i % len(bodies)])
                latencies[i] = (time.perf_counter() - t0) * 1000
                codes.append(r.status_code)
                if r.status_code == 200:
                    body = r.json()
                    batches.append(body["batch_size"])
                    tokens += body["num_generated_tokens"]
                    ingress[i] = body["latency_ms"]
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies)
    return {"requests": total, "wall_s": wall, "rps": total / wall, "tokens_s": tokens / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "batch": float(np.mean(batches)) if batches else 0.0, "errors": sum(c != 200 for c in codes),
            "latency_ms": latencies, "ingress_ms": ingress}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="debug")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--data", default="", help="shard store with a tokenizer (default: build the tiny suite)")
    ap.add_argument("--model", default="", help="export directory (default: a seeded random model of the preset)")
    ap.add_argument("--workload", choices=("fixed", "mixed"), default="fixed",
                    help="fixed: --max-new-tokens each, unbatched vs static batching; mixed: max_new_tokens drawn "
                         "from --mixed-tokens, static vs continuous batching")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: max(48, 12 x concurrency))")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="fixed workload: tokens each request generates")
    ap.add_argument("--mixed-tokens", default="4,128", metavar="LO,HI",
                    help="mixed workload: max_new_tokens drawn uniformly from LO..HI")
    ap.add_argument("--seed", type=int, default=0, help="mixed workload: seed of the max_new_tokens draws")
    ap.add_argument("--batch-size", type=int, default=32, help="serve.max_batch_size of the batched modes")
    ap.add_argument("--batch-wait", type=float, default=0.02, help="serve.batch_wait_timeout_s of static batching")
    ap.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (torch threads) of the model replica")
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    lo, hi = (int(v) for v in args.mixed_tokens.split(","))

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
                                    "serve.num_gpus=0", f"serve.num_cpus={args.num_cpus}",
                                    f"serve.max_new_tokens={max(256, hi, args.max_new_tokens)}", *args.overrides])
    model = Path(args.model) if args.model else make_export(work / "export", cfg, seed=0)
    entries = resolve_models([str(model)], cfg.lineage)
    levels = [int(c) for c in args.concurrency.split(",")]
    totals = {c: args.requests or max(48, 12 * c) for c in levels}
    mixed = args.workload == "mixed"
    bodies = request_bodies(data, args.max_new_tokens)
    if mixed:
        # one sequence of requests per level, the same for both modes
        work_of = {c: mixed_bodies(bodies, totals[c], lo, hi, args.seed + c) for c in levels}
        alone_ms, prep_ms = direct_ms(model, work_of[1], args.num_cpus) if 1 in levels else ([], [])
        if alone_ms:
            print(f"direct model call, concurrency-1 requests: median {np.median(alone_ms):.1f} ms", flush=True)
        inproc = model_side(model, work_of, args.num_cpus, args.batch_size, args.batch_wait, cfg.serve.admit_every)
        for mode, by_c in inproc.items():
            for c, r in by_c.items():
                print(f"model alone {mode:10s} c={c:<3d} {r['rps']:7.2f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                      f"short p50 {r['short_p50_ms']:8.1f} ms", flush=True)
    else:
        work_of = {c: bodies for c in levels}
        alone = model_only(model, bodies, args.num_cpus)
        print("model replica alone, ms/request at batch 1/8/32:", {k: round(v, 1) for k, v in alone.items()},
              flush=True)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    results: dict[str, dict[int, dict]] = {}
    # every mode lets the replica hold the same number of requests, so the only difference is
    # how it batches them (a replica capped at 2 would also make the router back off and retry,
    # which is not what "unbatched" should measure)
    ongoing = 2 * args.batch_size
    if mixed:
        modes = {"static": {"batching": "static", "max_batch_size": args.batch_size,
                            "batch_wait_timeout_s": args.batch_wait, "max_ongoing_requests": ongoing},
                 "continuous": {"batching": "continuous", "max_batch_size": args.batch_size,
                                "max_ongoing_requests": ongoing}}
    else:
        modes = {"unbatched": {"batching": "static", "max_batch_size": 1, "max_ongoing_requests": ongoing},
                 "batched": {"batching": "static", "max_batch_size": args.batch_size,
                             "batch_wait_timeout_s": args.batch_wait, "max_ongoing_requests": ongoing}}
    try:
        for mode, changes in modes.items():
            cfg.serve = dataclasses.replace(cfg.serve, **changes)
            url = server.start(cfg, entries)
            asyncio.run(load(url, bodies, 8, 4))  # warm-up: model load, first-call costs
            results[mode] = {}
            for c in levels:
                r = asyncio.run(load(url, work_of[c], totals[c], c))
                if mixed:
                    short = [ms for ms, b in zip(r["latency_ms"], work_of[c]) if b["options"]["max_new_tokens"] <= SHORT]
                    r["short_p50_ms"] = float(np.percentile(short, 50)) if short else float("nan")
                    r["short"] = len(short)
                    if c == 1 and alone_ms:
                        lat, ing = np.array(r["latency_ms"]), np.array(r["ingress_ms"])
                        r["overhead_ms"] = float(np.median(lat - np.array(alone_ms)))
                        r["http_ms"] = float(np.nanmedian(lat - ing))  # client, proxy, HTTP
                        r["inside_ms"] = float(np.nanmedian(ing - np.array(alone_ms)))  # prep, replica hop, batching
                results[mode][c] = r
                extra = (f"  short p50 {r['short_p50_ms']:8.1f} ms" if mixed else "") + \
                        (f"  over direct {r['overhead_ms']:.1f} ms" if "overhead_ms" in r else "")
                print(f"{mode:10s} c={c:<3d} {r['rps']:7.2f} req/s {r['tokens_s']:7.0f} tok/s  p50 {r['p50_ms']:8.1f} ms"
                      f"  p99 {r['p99_ms']:8.1f} ms{extra}  batch {r['batch']:.1f}  errors {r['errors']}", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()

    mc = cfg.model
    command = "python benchmarks/serve.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [f"## serve{' (mixed lengths)' if mixed else ''} — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "", f"- machine: {machine()}", f"- command: `{command.strip()}`",
             f"- model: {'`' + str(args.model) + '`' if args.model else 'seeded random init'} (scale {mc.scale}, "
             f"{mc.image_size} px, {mc.num_image_tokens} image tokens), CPU fp32, 1 model replica x "
             f"{args.num_cpus:g} CPU + 1 FastAPI ingress replica, local Ray (4 logical CPUs)"]
    if mixed:
        lines += [f"- requests: cxr_report (1 image) and mimic3_summary alternating, max_new_tokens drawn uniformly from "
                  f"{lo}..{hi} (seed {args.seed} + concurrency; the same requests for both modes), each generating "
                  f"exactly that many (ignore_eos); short = max_new_tokens <= {SHORT}; HTTP over loopback from one "
                  f"asyncio client",
                  f"- both modes: serve.max_batch_size {args.batch_size} (continuous: rows of the decode batch), "
                  f"max_ongoing_requests {ongoing}; static: batch_wait_timeout_s {args.batch_wait}; continuous: "
                  f"admit_every {cfg.serve.admit_every}; "
                  f"mean batch = mean over requests of the batch they ran in (continuous: the largest decode "
                  f"batch they shared)", "",
                  "| mode | concurrency | requests | req/s | tokens/s | p50 ms | p99 ms | short p50 ms (n) | "
                  "mean batch | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
        for mode, by_c in results.items():
            for c, r in by_c.items():
                lines.append(f"| {mode} | {c} | {r['requests']} | {r['rps']:.2f} | {r['tokens_s']:.0f} | "
                             f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['short_p50_ms']:.0f} ({r['short']}) | "
                             f"{r['batch']:.1f} | {r['errors']} |")
        lines.append("")
        if alone_ms:
            lines.append(f"- direct model call (ModelRunner.run([item]) in the driver, no HTTP) for the concurrency-1 "
                         f"requests: median {np.median(alone_ms):.1f} ms; their preprocessing (Preprocessor.prepare, "
                         f"the ingress's work) median {np.median(prep_ms):.1f} ms")
        both = results.get("static", {}), results.get("continuous", {})
        for c in levels:
            if c in both[0] and c in both[1]:
                st, co = both[0][c], both[1][c]
                ratio, short = co["rps"] / st["rps"], co["short_p50_ms"] / st["short_p50_ms"]
                line = (f"- concurrency {c}: continuous / static throughput = **{ratio:.2f}x**, short requests' p50 "
                        f"continuous / static = **{short:.2f}x**")
                if c == 32:
                    line += (f" (targets >= 2x: {'met' if ratio >= 2 else 'not met'}; <= 0.5x: "
                             f"{'met' if short <= 0.5 else 'not met'})")
                lines.append(line)
        for mode in results:
            if "overhead_ms" in results[mode].get(1, {}):
                r = results[mode][1]
                lines.append(f"- concurrency 1, {mode}: median latency over the direct model call = "
                             f"**{r['overhead_ms']:.1f} ms**"
                             + (f" (target <= 3 ms: {'met' if r['overhead_ms'] <= 3 else 'not met'})"
                                if mode == "continuous" else "")
                             + f"; of it client + proxy + HTTP (client latency - the ingress's latency_ms) "
                             f"{r['http_ms']:.1f} ms, ingress + replica (latency_ms - direct call, preprocessing included) "
                             f"{r['inside_ms']:.1f} ms")
        lines += ["", "The same requests against the model alone in the driver (no HTTP, no Ray: a closed loop of "
                  "asyncio clients on `Scheduler.submit`, or on static batches gathered as `@serve.batch` gathers "
                  "them):", "",
                  "| mode | concurrency | req/s | p50 ms | short p50 ms |", "|---|---|---|---|---|"]
        for mode, by_c in inproc.items():
            for c, r in by_c.items():
                lines.append(f"| {mode} | {c} | {r['rps']:.2f} | {r['p50_ms']:.0f} | {r['short_p50_ms']:.0f} |")
        for c in levels:
            st, co = inproc["static"].get(c), inproc["continuous"].get(c)
            if st and co:
                lines.append(f"- model alone, concurrency {c}: continuous / static throughput "
                             f"{co['rps'] / st['rps']:.2f}x, short p50 {co['short_p50_ms'] / st['short_p50_ms']:.2f}x")
    else:
        lines += [f"- requests: cxr_report (1 image) and mimic3_summary alternating, {args.max_new_tokens} generated "
                  f"tokens each (ignore_eos), HTTP over loopback from one asyncio client",
                  f"- batched: serve.batching static, serve.max_batch_size {args.batch_size}, batch_wait_timeout_s "
                  f"{args.batch_wait}, max_ongoing_requests {ongoing}; unbatched: max_batch_size 1, same "
                  f"max_ongoing_requests", "",
                  "| mode | concurrency | requests | req/s | tokens/s | p50 ms | p99 ms | mean batch | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for mode, by_c in results.items():
            for c, r in by_c.items():
                lines.append(f"| {mode} | {c} | {r['requests']} | {r['rps']:.2f} | {r['tokens_s']:.0f} | "
                             f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['batch']:.1f} | {r['errors']} |")
        lines += ["", "| model replica alone (ModelRunner.run, no HTTP) | batch 1 | batch 8 | batch 32 |",
                  "|---|---|---|---|",
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
