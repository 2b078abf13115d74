"""A sweep trial's evaluation scores every task on its fixed validation subset: the registry's
metric for option tasks (answered like `medmix evaluate`), the unigram-normalised loss for
free-text ones, each with a bootstrap interval, and the aggregate the sweep judges trials on."""

from __future__ import annotations

import pytest
import torch

from medmix.evaluate.metrics import compute_metrics
from medmix.evaluate.predict import Predictor, predict_rows
from medmix.evaluate.trial import scoring_plan
from medmix.tasks import get_task
from tests.conftest import suite_config

TASKS = '["medqa", "cxr_classify", "mimic3_summary"]'


def test_a_trials_evaluation_scores_every_task_with_intervals(tmp_path, tiny_suite):
    from medmix.train.loop import build_trainer
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        cfg = suite_config(tmp_path, tiny_suite, f"mixture.tasks={TASKS}", "train.eval_scores=true",
                           "train.eval_batches=1", "mixture.global_batch_size=4", "sweep.bootstrap=200",
                           'sweep.objective="worst_task"')
        trainer = build_trainer(cfg, rank=0, world_size=1, device=torch.device("cpu"), use_ray_data=False)
        first = trainer.evaluate()
        again = trainer.evaluate()
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    assert first == again                                   # fixed rows, seeded bootstrap: the same numbers
    assert trainer.model.training                           # scoring leaves the model as it found it
    assert scoring_plan(cfg, ["medqa", "cxr_classify", "mimic3_summary"]) == {
        "medqa": ("metric", "accuracy"), "cxr_classify": ("metric", "accuracy"), "mimic3_summary": ("loss", "loss")}
    for task, metric in (("medqa", "accuracy"), ("cxr_classify", "accuracy"), ("mimic3_summary", "loss")):
        raw = f"val_metric/{task}/{metric}"
        assert first[f"{raw}/lo"] <= first[raw] <= first[f"{raw}/hi"]
        assert first[f"val_score/{task}/lo"] <= first[f"val_score/{task}"] <= first[f"val_score/{task}/hi"]
    assert first["val_objective"] == min(first[f"val_score/{t}"] for t in ("medqa", "cxr_classify", "mimic3_summary"))
    assert "val_loss" in first                              # the loss objective is still there

    # the option tasks' metric is the registry's, on the answers `medmix evaluate` would give
    scorer = trainer.scorer
    p = Predictor(model=trainer.model, tokenizer=scorer.tokenizer, image_size=cfg.model.image_size,
                  num_image_tokens=cfg.model.num_image_tokens, max_seq_len=cfg.stream.max_seq_len)
    for t in scorer.option_tasks:
        preds = predict_rows(p, t.rows)
        expected = compute_metrics(get_task(t.task), [q.prediction for q in preds], [r["target"] for r in t.rows],
                                   option_probs=[q.option_probs for q in preds], labels=t.labels)
        assert first[f"val_metric/{t.task}/accuracy"] == pytest.approx(expected["accuracy"])
        assert first[f"val_metric/{t.task}/accuracy/n"] == len(t.rows) <= cfg.sweep.eval_rows


def test_scoring_plan_names_what_cannot_be_scored(tmp_path, tiny_suite):
    cfg = suite_config(tmp_path, tiny_suite, 'sweep.score_by={mimic3_summary="metric", medqa="loss"}')
    with pytest.raises(ValueError, match="mimic3_summary.*free-text task.*\"loss\""):
        scoring_plan(cfg, ["mimic3_summary"])
    assert scoring_plan(cfg, ["medqa"]) == {"medqa": ("loss", "loss")}
