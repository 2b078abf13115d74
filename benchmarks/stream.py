"""Benchmark the per-rank data stream: samples/s per CPU core and data-wait inside a training loop.

    python benchmarks/stream.py                         # bundled suite (small) at 224 px
    python benchmarks/stream.py --root medmix-data --steps 80 --step-time 0.2

Measurements on the bundled synthetic suite (built into --work if --root has no store), for
each stream engine (`actors`: a long-lived pool of preprocessing actors; `dataset`: Ray Data,
one Dataset per block):
1. stages: per-sample cost of each preprocessing stage in this process (read rows from Parquet,
   decode + pad/resize + normalise images, render + tokenize), one core;
2. throughput: the full pipeline with one preprocessing worker per core (`num_cpus_per_task=1`,
   `concurrency=cores`) consumed as fast as possible -> samples/s, samples/s per core, and that
   per-core rate against in-process (the first block, which pays for start-up, is not counted),
   and (actors) where the pipeline's core-seconds go: building in the workers, taking batches
   into the consumer, and the rest (Ray's calls, idle workers, the consumer's own share);
3. scaling (actors): the same with 1, 2 and 4 workers (logical CPUs);
4. data-wait: the default StreamConfig (0.25 CPU x 2 workers per rank) feeding a loop that
   "trains" for --step-time seconds per step (a sleep) -> the fraction of the loop's wall time
   spent waiting for batches;
5. training: a real `debug`-preset run (Ray Train, one worker, --train-steps steps at its own
   images and batch) -> the trainer's data-wait fraction after its first logging window
   (steady state), from the MLflow metrics it logs.
Results go to stdout and are appended to benchmarks/RESULTS.md (date, machine, command).
Run on demand, not in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from _machine import machine, record  # benchmarks/ is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
H100_BASE_SAMPLES_S = 77.0  # STACK-NOTES: ViT-B/16 + ~1B Llama, 1024 tokens, compiled, one H100


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="", help="shard store to read; '' = build the bundled suite into --work")
    p.add_argument("--work", default="/tmp/medmix-bench-stream", help="where the suite is built when --root is ''")
    p.add_argument("--size", default="small", choices=("tiny", "small", "medium"), help="suite size to build")
    p.add_argument("--image-size", type=int, default=224, help="side of the model's square input, px")
    p.add_argument("--num-image-tokens", type=int, default=16, help="decoder positions per image")
    p.add_argument("--max-seq-len", type=int, default=1024, help="tokens per example")
    p.add_argument("--batch", type=int, default=32, help="global batch size (one rank)")
    p.add_argument("--steps", type=int, default=160, help="steps measured per pipeline run")
    p.add_argument("--steps-per-block", type=int, default=16, help="plan steps per Ray Dataset")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="cores for the throughput run")
    p.add_argument("--step-time", type=float, default=0.25, help="simulated training step, s (data-wait run)")
    p.add_argument("--wait-steps", type=int, default=32, help="steps of the data-wait run")
    p.add_argument("--engines", default="actors,dataset", help="stream engines to compare")
    p.add_argument("--scaling", default="1,2,4", help="worker counts of the scaling row (actors engine)")
    p.add_argument("--train-steps", type=int, default=60, help="steps of the debug training run (0: skip it)")
    p.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return p.parse_args(argv)


def ensure_store(args):
    from medmix.data.store import ShardStore, StoreConfig
    if args.root:
        return ShardStore(args.root)
    root = Path(args.work) / f"suite-{args.size}-{args.image_size}"
    store = ShardStore(root, StoreConfig(root=str(root), image_size=args.image_size))
    if not store.exists():
        from medmix.data.synth import SynthConfig, build_suite
        print(f"building the {args.size} suite at {args.image_size} px into {root} ...", flush=True)
        build_suite(SynthConfig(size=args.size), store, image_size=args.image_size, progress=False)
    return store


def build_plan(store, batch: int, seed: int = 0):
    from medmix.data.mixture import MixturePlan
    from medmix.data.config import MixtureConfig
    return MixturePlan.from_config(store, MixtureConfig(global_batch_size=batch, floor=0.03), seed=seed)


def stage_costs(store, tok, args, samples: int = 256) -> dict[str, float]:
    """ms per sample of read / image / text, in this process on one core."""
    from medmix.data.collate import read_refs
    from medmix.data.encode import encode_example
    from medmix.data.images import decode_image, to_model_input
    from medmix.tasks import get_task
    plan = build_plan(store, args.batch)
    refs = [r for _ in range(samples // args.batch + 1) for r in plan.batch()][:samples]
    t0 = time.perf_counter()
    rows = read_refs(str(store.root), refs)
    t1 = time.perf_counter()
    images = 0
    for ref in refs:
        row = rows[ref]
        for data in row["images"] or []:
            to_model_input(decode_image(data, row["image_format"]), args.image_size)
            images += 1
    t2 = time.perf_counter()
    for ref in refs:
        row = rows[ref]
        encode_example(tok, get_task(ref.task), json.loads(row["context"]), row["target"],
                       len(row["images"] or []), args.num_image_tokens, args.max_seq_len)
    t3 = time.perf_counter()
    n = len(refs)
    return {"read_ms": 1e3 * (t1 - t0) / n, "image_ms": 1e3 * (t2 - t1) / n, "text_ms": 1e3 * (t3 - t2) / n,
            "images_per_sample": images / n}


def run_stream(store, tok, args, cfg, steps: int, step_time: float = 0.0, skip_first: int = 0,
               use_ray: bool = True) -> dict:
    from medmix.data.stream import build_stream
    plan = build_plan(store, args.batch)
    stream = build_stream(plan, store.root, tok, args.image_size, args.num_image_tokens, cfg,
                          end_step=steps + skip_first, use_ray=use_ray)
    samples, waited, t_start, at_start = 0, 0.0, None, {}
    for i, batch in enumerate(stream):
        if i == skip_first:
            t_start = time.perf_counter()
            at_start = stream.stats()
        if i >= skip_first:
            samples += len(batch["example_ids"])
            waited += batch.meta["data_wait_s"] if i > skip_first else 0.0
        if step_time:
            time.sleep(step_time)
    wall = time.perf_counter() - t_start
    at_end = stream.stats()
    stream.close()
    batches = at_end["batches"] - at_start.get("batches", 0)
    # where the time went (actors engine): building in the workers, and taking the batches into
    # this process (ray.get of the numpy buffers + the copy torch may write into)
    build_s = at_end.get("build_s", 0.0) - at_start.get("build_s", 0.0)
    fetch_s = at_end.get("fetch_s", 0.0) - at_start.get("fetch_s", 0.0)
    return {"samples": samples, "wall_s": wall, "samples_per_s": samples / wall, "wait_s": waited,
            "wait_fraction": waited / wall, "batches": batches, "build_ms_per_batch": 1e3 * build_s / max(batches, 1),
            "fetch_ms_per_batch": 1e3 * fetch_s / max(batches, 1), "build_s": build_s, "fetch_s": fetch_s}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray
    import torch

    from medmix.data.config import StreamConfig
    from medmix.data.tokenizer import MedmixTokenizer, TokenizerConfig, train_tokenizer
    torch.set_num_threads(1)
    store = ensure_store(args)
    tok = MedmixTokenizer.from_file(train_tokenizer(store, TokenizerConfig()))
    rows = sum(s.rows for s in store.shards(split="train"))
    print(f"store {store.root}: {rows} train rows, tokenizer {len(tok)} tokens", flush=True)

    stages = stage_costs(store, tok, args)
    per_sample_ms = stages["read_ms"] + stages["image_ms"] + stages["text_ms"]
    print(f"stages (ms/sample, 1 core): {json.dumps({k: round(v, 3) for k, v in stages.items()})}", flush=True)

    one_core = 1e3 / per_sample_ms
    # the whole row -> batch path (read, decode, render, collate and pad) in this process, one
    # core: the same work the pipeline's workers do, without Ray
    local = run_stream(store, tok, args, StreamConfig(max_seq_len=args.max_seq_len), args.steps, use_ray=False)
    print(f"in-process build_batch (LocalStream), 1 core: {local['samples_per_s']:.1f} samples/s "
          f"(stages alone: {one_core:.1f})", flush=True)
    one_core = local["samples_per_s"]
    engines = [e for e in args.engines.split(",") if e]
    scaling = [int(n) for n in args.scaling.split(",") if n]
    ray.init(address="local", num_cpus=max([args.cpus, 2, *scaling]) + 1, include_dashboard=False,
             log_to_driver=False, configure_logging=False)

    def fast(engine: str, workers: int) -> StreamConfig:
        return StreamConfig(max_seq_len=args.max_seq_len, steps_per_block=args.steps_per_block, engine=engine,
                            num_cpus_per_task=1.0, concurrency=workers, prefetch_batches=max(4, workers))

    per_engine = {}
    for engine in engines:
        thr = run_stream(store, tok, args, fast(engine, args.cpus), args.steps, skip_first=args.steps_per_block)
        per_core = thr["samples_per_s"] / args.cpus
        print(f"[{engine}] throughput: {thr['samples_per_s']:.1f} samples/s on {args.cpus} cores = {per_core:.1f} "
              f"per core ({per_core / one_core:.2f}x in-process)", flush=True)
        if thr["build_s"]:
            profile = where_the_time_goes(thr, args.cpus, one_core, args.batch)
            thr["profile"] = profile
            print(f"[{engine}] profile: {profile}", flush=True)
        default = StreamConfig(max_seq_len=args.max_seq_len, steps_per_block=args.steps_per_block, engine=engine)
        wait = run_stream(store, tok, args, default, args.wait_steps, step_time=args.step_time,
                          skip_first=args.steps_per_block)
        print(f"[{engine}] data-wait at {args.step_time}s/step (default stream config): "
              f"{100 * wait['wait_fraction']:.1f}% of the loop", flush=True)
        per_engine[engine] = {"throughput": thr, "per_core_samples_per_s": per_core,
                              "vs_in_process": per_core / one_core, "wait": wait,
                              "cores_for_2x_h100_base": 2 * H100_BASE_SAMPLES_S / per_core}
    scaled = {}
    for n in scaling:
        thr = run_stream(store, tok, args, fast("actors", n), args.steps, skip_first=args.steps_per_block)
        scaled[n] = thr["samples_per_s"]
        print(f"[actors] {n} workers: {thr['samples_per_s']:.1f} samples/s", flush=True)
    trained = {}
    if args.train_steps:
        for engine in engines:
            trained[engine] = train_wait(engine, args.train_steps)
            print(f"[{engine}] debug training, {args.train_steps} steps: data wait "
                  f"{100 * trained[engine]['steady_wait']:.1f}% after step {trained[engine]['after_step']} "
                  f"({100 * trained[engine]['first_wait']:.0f}% in the first window)", flush=True)
    ray.shutdown()
    result = {"stages": stages, "stages_samples_per_s": 1e3 / per_sample_ms, "one_core_samples_per_s": one_core, "engines": per_engine, "scaling": scaled,
              "training": trained}
    if not args.no_write:
        write_results(args, store, rows, result)
    return result


def where_the_time_goes(thr: dict, cpus: int, one_core: float, batch: int) -> str:
    """The pipeline's core-seconds (cores x wall) split into building batches in the workers,
    the consumer taking them in, and the rest (Ray's calls and scheduling, idle workers, and the
    consumer process's own share of the same cores)."""
    core_s = cpus * thr["wall_s"]
    build, fetch = thr["build_s"], thr["fetch_s"]
    in_process_ms = 1e3 * batch / one_core
    return (f"of {core_s:.1f} core-s: building {100 * build / core_s:.0f}% "
            f"({thr['build_ms_per_batch']:.0f} ms/batch in a worker vs {in_process_ms:.0f} ms in-process), "
            f"taking batches in {100 * fetch / core_s:.0f}% ({thr['fetch_ms_per_batch']:.1f} ms/batch), "
            f"other (Ray calls, idle, the consumer) {100 * max(core_s - build - fetch, 0) / core_s:.0f}%")


def train_wait(engine: str, steps: int) -> dict:
    """A `debug` run of `steps` steps on its own bundled data; the trainer's data-wait fraction
    per logging window, from MLflow."""
    import tempfile

    from medmix.config import load_config
    from medmix.lineage.backend import client
    from medmix.train.launcher import train
    work = Path(tempfile.mkdtemp(prefix="medmix-bench-train-"))
    log_every = 10
    cfg = load_config("debug", [f'data.root="{work}/data"', f'train.storage_path="{work}/runs/checkpoints"',
                                f'lineage.root="{work}/runs"', f"train.steps={steps}", f"train.log_every={log_every}",
                                "train.eval_every=0", f"train.checkpoint_every={steps}", "train.num_workers=1",
                                f'stream.engine="{engine}"', f"name=bench-{engine}"])
    from medmix.data.store import ShardStore
    from medmix.data.synth.suite import build_suite
    build_suite(cfg.synth, ShardStore(cfg.data.root, cfg.data), cfg.data.image_size, progress=False)
    result = train(cfg)
    if result.error is not None:
        raise RuntimeError(f"the {engine} training run failed: {result.error}")
    history = client(cfg.lineage).get_metric_history(result.run_id, "data_wait_frac")
    waits = [m.value for m in sorted(history, key=lambda m: m.step)]
    steady = waits[1:] or waits
    return {"windows": waits, "first_wait": waits[0], "steady_wait": sum(steady) / len(steady),
            "after_step": log_every, "steps": steps}


def write_results(args, store, rows: int, r: dict) -> None:
    st = r["stages"]
    cmd = " ".join(["python benchmarks/stream.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    note = ("\n- note: the machine was busy (1-minute load above its core count) — other work shared these "
            "cores, so the rates are lower bounds" if busy else "")
    text = f"""
## stream — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}

- machine: {machine()}
- command: `{cmd}`
- data: {store.root} ({rows} train rows, debug mixture: medpalm shares, floor 0.03), images {args.image_size}²,
  {args.num_image_tokens} image tokens, max_seq_len {args.max_seq_len}, global batch {args.batch}{note}

| measure | value |
|---|---|
| read rows (Parquet, grouped by shard) | {st['read_ms']:.2f} ms/sample |
| decode + pad/resize + normalise ({st['images_per_sample']:.2f} images/sample) | {st['image_ms']:.2f} ms/sample |
| render + tokenize + labels | {st['text_ms']:.2f} ms/sample |
| in-process, 1 core: the stages alone | {r['stages_samples_per_s']:.0f} samples/s |
| in-process, 1 core: whole batches (LocalStream: read, decode, render, collate, pad) | {r['one_core_samples_per_s']:.0f} samples/s (the baseline of the ratios below) |
"""
    for engine, e in r["engines"].items():
        thr, wait = e["throughput"], e["wait"]
        text += (f"| [{engine}] pipeline, {args.cpus} workers x 1 CPU | {thr['samples_per_s']:.1f} samples/s = "
                 f"**{e['per_core_samples_per_s']:.1f} samples/s per core = {e['vs_in_process']:.2f}x in-process** |\n"
                 f"| [{engine}] data-wait, default stream (0.25 CPU x 2), {args.step_time}s step | "
                 f"{100 * wait['wait_fraction']:.1f}% of the loop ({wait['samples_per_s']:.1f} samples/s) |\n"
                 f"| [{engine}] cores for 2x one H100 at `base` (2 x {H100_BASE_SAMPLES_S:.0f} samples/s) | "
                 f"{e['cores_for_2x_h100_base']:.1f} |\n")
        if thr.get("profile"):
            text += f"| [{engine}] where the pipeline's time goes | {thr['profile']} |\n"
    if r["scaling"]:
        text += "| [actors] scaling, samples/s by workers | " + ", ".join(
            f"{n}: {v:.1f}" for n, v in r["scaling"].items()) + " |\n"
    for engine, t in r["training"].items():
        text += (f"| [{engine}] debug training, {t['steps']} steps, data wait after step {t['after_step']} | "
                 f"**{100 * t['steady_wait']:.1f}%** (first window {100 * t['first_wait']:.0f}%; windows "
                 + ", ".join(f"{100 * w:.1f}" for w in t["windows"]) + ") |\n")
    record(text)


if __name__ == "__main__":
    main()
