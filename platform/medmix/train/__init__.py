"""medmix.train: one training run, from the root config to checkpoints and an MLflow run.

    trainer.py     `Trainer`: the plain-torch loop (train_step, fit, validation, checkpoint
                   cadence) with ordered callback hooks; runs in one process without Ray
    callbacks.py   what happens around the loop, one Callback per concern: example ledger,
                   console, Prometheus, MLflow, Ray Train report, test-only fault injection
    loop.py        `build_trainer` (model + AC/compile/FSDP2 + optimizer + stream) and
                   `train_loop_per_worker`, Ray Train's entry point
    launcher.py    `train(cfg)`: the driver side (Ray Train TorchTrainer, run directory, MLflow run)
    checkpoint.py  DCP shards + medmix.json; `latest_checkpoint`
    export.py      checkpoint -> export directory (`medmix export`), registry record
    fsdp.py        FSDP2, activation checkpointing, torch.compile, applied outside the model
    optim.py       AdamW and the warmup + cosine schedule
    metrics.py     step timing, cross-rank sums, GPU peak FLOPs for MFU
    config.py      `[train]` and `[debug]`
"""
