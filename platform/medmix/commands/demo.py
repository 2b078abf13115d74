"""`medmix demo`: the whole platform end to end on the embedded defaults.

synth (bundled suite) -> tokenizer -> train (Ray Train, FSDP2) -> export + register (MLflow)
-> lineage -> sweep (Ray Tune + Optuna + ASHA over mixture weights, champion alias) -> serve the
champion and ask it one question, each step timed, then where everything is. Everything lands under the current
directory: `medmix-data/` (shards), `medmix-runs/` (checkpoints, MLflow sqlite store, exports).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medmix.cli import add_config_args, main, resolve_config
from medmix.commands.sweep import summary as sweep_summary
from medmix.commands.train import summary
from medmix.config import load_config
from medmix.data.tokenizer import ensure_tokenizer
from medmix.train.launcher import train


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole platform end to end on the bundled suite (what `make demo` runs)",
        description="Build the bundled synthetic suite, train the debug model on the Med-PaLM M "
                    "mixture with Ray Train (2 CPU workers, FSDP2), export and register the final "
                    "checkpoint in MLflow, print its lineage, and say where the results are. "
                    "Uses a local Ray and an MLflow sqlite store under ./medmix-runs.")
    add_config_args(p)
    p.set_defaults(func=run, preset="demo")


class Steps:
    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    def run(self, title: str, fn):
        print(f"\n=== {title} ===", flush=True)
        t0 = time.time()
        out = fn()
        self.times.append((title, time.time() - t0))
        print(f"--- {title}: {self.times[-1][1]:.1f} s", flush=True)
        return out


def run(args: argparse.Namespace) -> int:
    from medmix.data.synth.suite import build_bundled
    from medmix.serve.server import answer_once
    from medmix.train.export import export_checkpoint, register_checkpoint_export
    from medmix.tune.sweep import run_sweep

    cfg = resolve_config(args)
    if not any(o.startswith("name=") for o in args.overrides):
        cfg.name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"  # each demo is a new run
    steps = Steps()
    steps.run("1. synth: the bundled MultiMedBench-like suite",
              lambda: print(f"{build_bundled(cfg, progress=True)['total_rows']} rows in {cfg.data.root}"))
    steps.run("2. tokenizer: BPE on the store's text", lambda: print(ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)))
    result = steps.run("3. train: Ray Train + FSDP2 on the task mixture", lambda: train(cfg))
    print(summary(cfg, result))
    if result.error or not result.checkpoint:
        return 1
    export_dir = Path(cfg.lineage.root) / "exports" / cfg.name
    version = steps.run("4. export + register the final checkpoint", lambda: (
        export_checkpoint(result.checkpoint, export_dir),
        register_checkpoint_export(cfg.lineage, result.checkpoint, export_dir))[1])
    print(f"exported to {export_dir}; registered {cfg.lineage.registered_model}/{version}")
    steps.run("5. lineage of the registered model",
              lambda: main(["lineage", f"{cfg.lineage.registered_model}/{version}",
                            "--set", f'lineage.root="{cfg.lineage.root}"']))
    scfg = load_config("sweep_debug", [f'data.root="{cfg.data.root}"',
                                       f'train.storage_path="{cfg.train.storage_path}"',
                                       f'lineage.root="{cfg.lineage.root}"', f'name="{cfg.name}-sweep"'])
    sweep = steps.run("6. sweep mixture weights: Ray Tune + Optuna + ASHA, champion", lambda: run_sweep(scfg))
    print(sweep_summary(scfg, sweep))
    champion = f"{cfg.lineage.registered_model}@champion"
    asked = steps.run(f"7. serve {champion} (Ray Serve + FastAPI) and ask it one question",
                      lambda: answer_once(cfg, champion, task="cxr_classify"))
    ans = asked["answer"]
    print(f"question ({asked['request']['task']}): {asked['request']['inputs'].get('question') or asked['request']['inputs'].get('condition', '')}")
    print(f"answer from {ans['model']['id']}: {ans.get('prediction') or ans.get('text')!r}"
          + ("  options " + ", ".join(f"{o['option']}={o['prob']:.2f}" for o in ans["options"]) if ans.get("options") else "")
          + f"  (reference: {asked['reference']!r})")
    print("\n=== done ===")
    for title, seconds in steps.times:
        print(f"  {seconds:7.1f} s  {title}")
    print(f"\nshards:       {cfg.data.root}  (medmix data show --root {cfg.data.root})")
    print(f"checkpoints:  {result.run_dir}")
    print(f"model:        {export_dir}  (registered as {cfg.lineage.registered_model}/{version})")
    print(f"MLflow UI:    mlflow ui --backend-store-uri sqlite:///{Path(cfg.lineage.root).resolve()}/mlflow.db")
    return 0
