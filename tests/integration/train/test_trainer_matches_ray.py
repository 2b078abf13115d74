"""The plain-torch Trainer in this process, without Ray, reproduces a Ray Train run.

The session's debug run (`trained_debug`: 1 Ray Train worker, FSDP2 over gloo, the Ray Data
stream, a loss logged every step to MLflow) is replayed with `build_trainer` + `Trainer.fit`
in the test process — no Ray Train, no Ray Data, no process group — from the same config and
seed; the loss of every step agrees to 1e-6.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow(minutes=0.3)


def test_trainer_without_ray_gets_the_ray_runs_loss_sequence(trained_debug):
    from medmix.lineage.backend import client
    from medmix.train.loop import build_trainer
    from medmix.train.trainer import Callback

    cfg, result, _ = trained_debug
    ray_losses = {m.step: m.value for m in client(cfg.lineage).get_metric_history(result.run_id, "loss")}
    assert sorted(ray_losses) == [1, 2, 3, 4]

    class Losses(Callback):
        def __init__(self):
            self.seen: dict[int, float] = {}

        def log_metrics(self, trainer, metrics):
            self.seen[trainer.step] = metrics["loss"]

    losses = Losses()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        trainer = build_trainer(cfg, rank=0, world_size=1, device=torch.device("cpu"), callbacks=[losses],
                                use_ray_data=False)
        assert not torch.distributed.is_initialized()
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert sorted(losses.seen) == [1, 2, 3, 4]
    for step, value in ray_losses.items():
        assert losses.seen[step] == pytest.approx(value, abs=1e-6), (step, losses.seen, ray_losses)
