"""The plain-torch Trainer runs in one process without Ray: callbacks in order, checkpoints that
resume to exactly the uninterrupted losses, and a module that never imports Ray."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import suite_config

OVERRIDES = ["train.steps=4", "train.log_every=1", "train.checkpoint_every=2", "train.eval_every=0",
             "mixture.global_batch_size=4", 'mixture.tasks=["medqa", "derm_pad"]']


@pytest.fixture()
def torch_globals():
    """build_trainer sets threads and deterministic mode for the process: put them back after."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


class Recorder:
    """Every hook call, and each checkpoint copied out of its temporary directory."""

    def __init__(self, keep_dir=None, order: int = 50):
        self.order, self.keep_dir = order, keep_dir
        self.calls: list[tuple[str, int]] = []
        self.losses: dict[int, float] = {}
        self.kept: dict[int, str] = {}

    def pre_fit(self, t):
        self.calls.append(("pre_fit", t.step))

    def post_train_batch(self, t, batch, sums):
        self.calls.append(("post_train_batch", t.step))

    def log_metrics(self, t, metrics):
        self.calls.append(("log_metrics", t.step))
        self.losses[t.step] = metrics["loss"]

    def report(self, t, metrics):
        self.calls.append(("report", t.step))

    def post_checkpoint(self, t, path, meta, metrics):
        self.calls.append(("post_checkpoint", t.step))
        assert meta["step"] == t.step and meta["config"]["train"]["steps"] == 4
        if self.keep_dir is not None:
            self.kept[t.step] = shutil.copytree(path, self.keep_dir / f"step-{t.step}")

    def post_step(self, t):
        self.calls.append(("post_step", t.step))

    def post_fit(self, t):
        self.calls.append(("post_fit", t.step))


def _fit(cfg, callbacks, checkpoint=None):
    from medmix.train.loop import build_trainer
    trainer = build_trainer(cfg, rank=0, world_size=1, device=torch.device("cpu"), callbacks=callbacks,
                            checkpoint=checkpoint, use_ray_data=False)
    trainer.fit()
    return trainer


def test_fit_without_ray_calls_callbacks_in_order_and_resumes_exactly(tmp_path, tiny_suite, torch_globals):
    cfg = suite_config(tmp_path, tiny_suite, *OVERRIDES)
    first, late = Recorder(tmp_path / "kept"), Recorder(order=60)
    trainer = _fit(cfg, [late, first])
    assert trainer.step == 4 and [c.order for c in trainer.callbacks] == [50, 60]
    assert first.calls[:7] == [("pre_fit", 0), ("post_train_batch", 1), ("log_metrics", 1), ("report", 1),
                               ("post_step", 1), ("post_train_batch", 2), ("log_metrics", 2)]
    assert ("post_checkpoint", 2) in first.calls and ("report", 2) not in first.calls  # a checkpoint step
    assert first.calls[-1] == ("post_fit", 4) and late.calls == first.calls
    assert sorted(first.losses) == [1, 2, 3, 4] and all(0 < v < 20 for v in first.losses.values())

    # resume from the step-2 checkpoint in a fresh Trainer: steps 3 and 4 repeat exactly
    resumed = Recorder()
    again = _fit(cfg, [resumed], checkpoint=first.kept[2])
    assert again.step == 4 and sorted(resumed.losses) == [3, 4]
    assert resumed.losses == {s: first.losses[s] for s in (3, 4)}
    for a, b in zip(trainer.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_trainer_module_never_imports_ray():
    code = ("import sys, medmix.train.trainer, medmix.train.callbacks; "
            "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')); "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _reports_callback():
    from medmix.train.trainer import Callback

    class Reports(Callback):
        """What the Trainer hands to `report` and `post_checkpoint` (Ray Train reports both)."""

        def __init__(self):
            self.metrics: list[tuple[int, dict]] = []

        def report(self, t, metrics):
            self.metrics.append((t.step, dict(metrics)))

        def post_checkpoint(self, t, path, meta, metrics):
            self.metrics.append((t.step, dict(metrics)))

    return Reports()


def test_every_report_carries_its_step_even_off_the_logging_cadence(tmp_path, tiny_suite, torch_globals):
    """ASHA places results by `step`: a validation at step 2 with logging every 3 steps still has it."""
    cfg = suite_config(tmp_path, tiny_suite, *OVERRIDES, "train.log_every=3", "train.eval_every=2",
                       "train.checkpoint_every=4", "train.eval_batches=1")
    seen = _reports_callback()
    _fit(cfg, [seen])
    assert [s for s, _ in seen.metrics] == [2, 3, 4]
    assert all(m["step"] == s for s, m in seen.metrics)
    assert "val_loss" in seen.metrics[0][1] and "loss" not in seen.metrics[0][1]  # validation only


def test_a_class_balanced_task_logs_its_realised_class_mix(tmp_path, tiny_suite, torch_globals):
    """`mixture.class_balance`: every logged step carries class_mix/<task>/<class>, the share of
    the task's examples so far that each class took (they sum to 1)."""
    cfg = suite_config(tmp_path, tiny_suite, "train.steps=2", "train.log_every=1", "train.checkpoint_every=2",
                       "train.eval_every=0", "mixture.global_batch_size=8",
                       'mixture.tasks=["medqa", "cxr_classify"]', "mixture.class_balance={cxr_classify=2.0}")
    from medmix.train.trainer import Callback
    logged: list[dict] = []

    class Logged(Callback):
        def log_metrics(self, t, metrics):
            logged.append(dict(metrics))

    _fit(cfg, [Logged()])
    assert len(logged) == 2
    for metrics in logged:
        shares = {k.split("/", 2)[2]: v for k, v in metrics.items() if k.startswith("class_mix/cxr_classify/")}
        assert set(shares) == {"yes", "no"} and sum(shares.values()) == pytest.approx(1.0), metrics
        assert not any(k.startswith("class_mix/medqa") for k in metrics)
