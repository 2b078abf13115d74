"""ASHA vs every trial to full budget: compute used, and whether ASHA finds the best mixture.

Runs the same sweep twice on the bundled synthetic suite — once with ASHA stopping weak
trials, once with FIFO (every trial trains all `train.steps`) — with Optuna's random sampler
and the same seed, so both sweeps try exactly the same mixtures. Trials are judged on the
sweep's objective (default: the mean normalised per-task score on a fixed validation subset,
with a bootstrap confidence interval). Reports, for each: trials, trial-steps trained (from
the trials' step ledgers), wall time, the best trial with its interval; then the full-budget
ranking, where ASHA's pick ranks in it, and the target: ASHA's pick is the full-budget best or
not told apart from it (intervals overlap) at <= 1/3 of the full budget's trial-steps.
Appends the results to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/sweep.py                       # 8 trials x 36 steps, rungs 4/12/36
    .venv/bin/python benchmarks/sweep.py --trials 4 --steps 12 --data medmix-data
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from _machine import bundled_store, machine, record  # benchmarks/ is on sys.path when run as a script



def overlaps(a, b) -> bool:
    """Two confidence intervals share a point (None: no interval, so nothing to compare)."""
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--steps", type=int, default=36)
    ap.add_argument("--grace", type=int, default=4, help="ASHA grace period, steps")
    ap.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA: keep the best 1/this at each rung")
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--preset", default="sweep_debug")
    ap.add_argument("--data", default="", help="shard store (default: build the bundled suite in a temp dir)")
    ap.add_argument("--out", default="", help="where sweeps write (default: a temp dir)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    from medmix.config import load_config
    from medmix.tune.config import natural_mode
    from medmix.tune.sweep import run_sweep

    work = Path(args.out or tempfile.mkdtemp(prefix="medmix-bench-sweep-"))
    data = bundled_store(args.data, work)
    common = [f'data.root="{data}"', f'train.storage_path="{work}/runs/checkpoints"', f'lineage.root="{work}/runs"',
              f"sweep.num_samples={args.trials}", f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}",
              f"train.eval_every={args.eval_every}", f"train.log_every={args.eval_every}",
              f"sweep.grace_period={args.grace}", f"sweep.reduction_factor={args.reduction_factor}", 'sweep.search="random"', "sweep.champion=false",
              *args.overrides]
    runs = {}
    for scheduler in ("asha", "fifo"):
        cfg = load_config(args.preset, [*common, f'name="bench-{scheduler}-{int(time.time())}"',
                                        f'sweep.scheduler="{scheduler}"'])
        print(f"== {scheduler}: {args.trials} trials x {args.steps} steps", flush=True)
        runs[scheduler] = run_sweep(cfg, analyze=False)

    asha, fifo = runs["asha"], runs["fifo"]
    sweep_cfg = load_config(args.preset, common).sweep
    mode = sweep_cfg.mode if sweep_cfg.mode != "auto" else natural_mode(sweep_cfg.objective)
    sign = 1.0 if mode == "min" else -1.0      # sort key: best first
    key = lambda t: tuple(round(v, 6) for _, v in sorted(t.shares.items()))  # noqa: E731
    fifo_by_mix = {key(t): t for t in fifo.trials}
    ranks = sorted((t for t in fifo.trials if t.objective is not None), key=lambda t: sign * t.objective)
    pick = fifo_by_mix.get(key(asha.best)) if asha.best is not None else None
    asha_rank = next((i + 1 for i, t in enumerate(ranks) if pick is not None and key(t) == key(pick)), None)
    best = ranks[0] if ranks else None
    # "found the best within CI": ASHA's pick, trained to full budget, is the full-budget best or
    # its interval overlaps the best's (the two are not told apart on this validation set)
    within = (pick is not None and best is not None and pick.objective is not None
              and (key(pick) == key(best) or overlaps(pick.objective_ci, best.objective_ci)))
    share = asha.trial_steps / max(fifo.trial_steps, 1)

    def fmt(t) -> str:
        if t is None or t.objective is None:
            return "-"
        ci = t.objective_ci
        return f"{t.objective:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")

    def row(name, r):
        b = r.best
        mix = ", ".join(f"{k} {v:.2f}" for k, v in sorted(b.shares.items(), key=lambda kv: -kv[1])) if b else "-"
        counts = {s: sum(1 for t in r.trials if t.status == s) for s in ("complete", "stopped", "error")}
        return (f"| {name} | {len(r.trials)} ({counts['complete']} full, {counts['stopped']} stopped, "
                f"{counts['error']} failed) | {r.trial_steps} | {r.seconds:.0f} | {fmt(b)} | {mix} |")

    objective = f"{sweep_cfg.objective}, {mode}" + ("" if sweep_cfg.objective == "loss" else
                                                     f", {sweep_cfg.ci_level:.0%} CI")
    command = "python benchmarks/sweep.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [f"## Sweep: ASHA vs full budget — {time.strftime('%Y-%m-%d')}", "",
             f"- machine: {machine()}", f"- command: `{command.strip()}`",
             f"- sweep: preset `{args.preset}`, {args.trials} trials x {args.steps} steps, validation every "
             f"{args.eval_every} steps, ASHA grace {args.grace} / reduction factor {sweep_cfg.reduction_factor:g}, "
             f"Optuna random sampler (same seed: both sweeps try the same mixtures), concurrency "
             f"{asha.concurrency}; objective {sweep_cfg.objective} on {sweep_cfg.eval_rows} validation rows per task", "",
             f"| scheduler | trials | trial-steps trained | wall s | best objective ({objective}) | best mixture |",
             "|---|---|---|---|---|---|", row("ASHA", asha), row("FIFO (full budget)", fifo), "",
             "full-budget ranking (FIFO): " + "; ".join(f"{i + 1}. {fmt(t)}" for i, t in enumerate(ranks)), "",
             f"- compute: ASHA trained {asha.trial_steps} trial-steps, full budget {fifo.trial_steps} "
             f"({share:.0%}); wall {asha.seconds:.0f} s vs {fifo.seconds:.0f} s",
             f"- ASHA's pick under full training: rank {asha_rank} of {len(ranks)}, {fmt(pick)} vs the best {fmt(best)}",
             f"- target (ASHA finds the full-budget best within CI at <= 1/3 of the compute): "
             f"{'met' if within and share <= 1 / 3 else 'not met'} (within CI: {'yes' if within else 'no'}; "
             f"compute {share:.0%})", ""]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
