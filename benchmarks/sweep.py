"""ASHA vs every trial to full budget: compute used, and whether the same best mixture wins.

Runs the same sweep twice on the bundled synthetic suite — once with ASHA stopping weak
trials, once with FIFO (every trial trains all `train.steps`) — with Optuna's random sampler
and the same seed, so both sweeps try exactly the same mixtures. Reports, for each: trials,
trial-steps trained (from the trials' step ledgers), wall time, the best mixture; then
whether ASHA found the mixture full training found, and the regret of ASHA's pick (its
full-budget objective minus the best one). Appends the results to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/sweep.py                       # 8 trials x 24 steps
    .venv/bin/python benchmarks/sweep.py --trials 4 --steps 12 --data medmix-data
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine, record  # benchmarks/ is on sys.path when run as a script



def build_suite(root: Path) -> None:
    """What `medmix synth` builds (the bundled suite), plus its tokenizer."""
    from medmix.config import load_config
    from medmix.data.synth.suite import build_bundled
    from medmix.data.tokenizer import ensure_tokenizer
    cfg = load_config("debug", [f'data.root="{root}"'])
    build_bundled(cfg, progress=False)
    ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--grace", type=int, default=4, help="ASHA grace period, steps")
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--preset", default="sweep_debug")
    ap.add_argument("--data", default="", help="shard store (default: build the bundled suite in a temp dir)")
    ap.add_argument("--out", default="", help="where sweeps write (default: a temp dir)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    from medmix.config import load_config
    from medmix.tune.sweep import run_sweep

    work = Path(args.out or tempfile.mkdtemp(prefix="medmix-bench-sweep-"))
    data = Path(args.data) if args.data else work / "data"
    if not (data / "manifest.json").is_file():
        print(f"building the bundled suite in {data} ...", flush=True)
        build_suite(data)
    common = [f'data.root="{data}"', f'train.storage_path="{work}/runs/checkpoints"', f'lineage.root="{work}/runs"',
              f"sweep.num_samples={args.trials}", f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}",
              f"train.eval_every={args.eval_every}", f"train.log_every={args.eval_every}",
              f"sweep.grace_period={args.grace}", 'sweep.search="random"', "sweep.champion=false",
              *args.overrides]
    runs = {}
    for scheduler in ("asha", "fifo"):
        cfg = load_config(args.preset, [*common, f'name="bench-{scheduler}-{int(time.time())}"',
                                        f'sweep.scheduler="{scheduler}"'])
        print(f"== {scheduler}: {args.trials} trials x {args.steps} steps", flush=True)
        runs[scheduler] = run_sweep(cfg, analyze=False)

    asha, fifo = runs["asha"], runs["fifo"]
    key = lambda t: tuple(round(v, 6) for _, v in sorted(t.shares.items()))  # noqa: E731
    fifo_by_mix = {key(t): t for t in fifo.trials}
    same = asha.best is not None and fifo.best is not None and key(asha.best) == key(fifo.best)
    regret = None
    if asha.best is not None and fifo.best is not None and key(asha.best) in fifo_by_mix:
        regret = fifo_by_mix[key(asha.best)].objective - fifo.best.objective
    ranks = sorted(fifo.trials, key=lambda t: t.objective if t.objective is not None else float("inf"))
    asha_rank = next((i + 1 for i, t in enumerate(ranks) if asha.best and key(t) == key(asha.best)), None)

    def row(name, r):
        b = r.best
        mix = ", ".join(f"{k} {v:.2f}" for k, v in sorted(b.shares.items(), key=lambda kv: -kv[1])) if b else "-"
        counts = {s: sum(1 for t in r.trials if t.status == s) for s in ("complete", "stopped", "error")}
        return (f"| {name} | {len(r.trials)} ({counts['complete']} full, {counts['stopped']} stopped, "
                f"{counts['error']} failed) | {r.trial_steps} | {r.seconds:.0f} | "
                f"{b.objective:.4f} | {mix} |" if b else f"| {name} | {len(r.trials)} | {r.trial_steps} | "
                f"{r.seconds:.0f} | - | - |")

    command = "python benchmarks/sweep.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [f"## Sweep: ASHA vs full budget — {time.strftime('%Y-%m-%d')}", "",
             f"- machine: {machine()}", f"- command: `{command.strip()}`",
             f"- sweep: preset `{args.preset}`, {args.trials} trials x {args.steps} steps, validation every "
             f"{args.eval_every} steps, ASHA grace {args.grace} / reduction factor "
             f"{load_config(args.preset).sweep.reduction_factor:g}, Optuna random sampler (same seed: both "
             f"sweeps try the same mixtures), concurrency {asha.concurrency}", "",
             "| scheduler | trials | trial-steps trained | wall s | best objective (val loss) | best mixture |",
             "|---|---|---|---|---|---|", row("ASHA", asha), row("FIFO (full budget)", fifo), "",
             f"- compute: ASHA trained {asha.trial_steps} trial-steps, full budget {fifo.trial_steps} "
             f"({asha.trial_steps / max(fifo.trial_steps, 1):.0%}); wall {asha.seconds:.0f} s vs {fifo.seconds:.0f} s",
             f"- same best mixture: {'yes' if same else 'no'}"
             + (f"; ASHA's pick ranks {asha_rank} of {len(ranks)} under full training, regret "
                f"{regret:+.4f} val loss" if regret is not None else ""), ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
