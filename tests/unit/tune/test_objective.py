"""Per-task scores with bootstrap intervals, normalised between chance and a reference, and
their aggregates (mean_normalised, worst_task, weighted)."""

from __future__ import annotations

import numpy as np
import pytest

from medmix.evaluate.metrics import macro_auc, macro_f1
from medmix.tune.objective import (_counts, _macro_auc_replicates, _macro_f1_replicates, aggregate, chance_level,
                                   loss_score, metric_score, objective_metrics, resample, significantly_better,
                                   unigram_loss)


def _answers(n: int, correct: int, k: int = 4):
    """n examples of k options, the first `correct` answered right (label 0 everywhere)."""
    probs = [[0.7] + [0.1] * (k - 1) if i < correct else [0.1, 0.7] + [0.1] * (k - 2) for i in range(n)]
    return [0] * n, probs


def test_accuracy_score_is_normalised_between_chance_and_reference_with_a_seeded_interval():
    labels, probs = _answers(40, 25)
    s = metric_score("medqa", "accuracy", labels, probs, n_boot=500, seed=3)
    assert s.value == pytest.approx(25 / 40) and s.chance == pytest.approx(0.25)
    assert s.score == pytest.approx((25 / 40 - 0.25) / 0.75)
    assert s.lo < s.value < s.hi and s.score_lo < s.score < s.score_hi
    # a binomial proportion's 95% interval at n = 40 is about ±0.15
    assert 0.2 < s.hi - s.lo < 0.4
    again = metric_score("medqa", "accuracy", labels, probs, n_boot=500, seed=3)
    assert (again.lo, again.hi) == (s.lo, s.hi)                      # fixed seed: the same interval
    specialist = metric_score("medqa", "accuracy", labels, probs, n_boot=500, seed=3, reference=0.625)
    assert specialist.score == pytest.approx(1.0)                    # as good as its reference
    more = metric_score("medqa", "accuracy", *_answers(400, 250), n_boot=500, seed=3)
    assert more.hi - more.lo < (s.hi - s.lo) / 2                      # more rows, a narrower interval


def test_chance_levels_and_bad_references():
    assert chance_level("accuracy", [2, 4]) == pytest.approx(0.375)
    assert chance_level("macro_auc", [5]) == 0.5
    with pytest.raises(ValueError, match="no chance level for metric 'rougeL'"):
        chance_level("rougeL", [1])
    with pytest.raises(ValueError, match="sweep.reference.medqa"):
        metric_score("medqa", "accuracy", *_answers(8, 4), reference=0.2)
    with pytest.raises(ValueError, match="score_by.mimic3_summary"):
        metric_score("mimic3_summary", "bleu4", [0], [[1.0]])


def test_auc_and_macro_f1_scores_and_their_replicates_match_the_registry_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    probs[np.arange(60), y] += 0.6 * rng.random(60)                 # informative, not perfect
    probs[:5] = probs[0]                                            # ties
    auc = metric_score("derm_pad", "macro_auc", y, probs.tolist(), n_boot=200)
    assert auc.chance == 0.5 and 0.6 < auc.value < 1.0 and auc.lo < auc.value < auc.hi
    assert auc.value == pytest.approx(macro_auc(y, probs))
    f1 = metric_score("derm_pad", "macro_f1", y, probs.tolist(), n_boot=200)
    assert f1.chance == pytest.approx(1 / 3) and f1.lo < f1.value < f1.hi
    # the vectorised bootstrap computes, per replicate, what the registry's metric gives on its rows
    pred = probs.argmax(axis=1)
    idx = resample(60, 6, seed=1)
    idx[0, :30] = idx[0, 0]                                         # a replicate missing some classes
    assert _macro_auc_replicates(y, probs, _counts(idx, 60)) == pytest.approx(
        [macro_auc(y[r], probs[r]) for r in idx])
    assert _macro_f1_replicates(y, pred, _counts(idx, 60)) == pytest.approx(
        [macro_f1(y[r].tolist(), pred[r].tolist()) for r in idx])


def test_loss_score_against_the_unigram_baseline():
    tokens = [5, 5, 5, 7]
    base = unigram_loss(tokens, vocab_size=10)
    # add-one smoothing over 10 ids: p(5) = 4/14, p(7) = 2/14
    assert base == pytest.approx(-(3 * np.log(4 / 14) + np.log(2 / 14)) / 4)
    s = loss_score("mimic3_summary", [2.0, 4.0, 6.0], [2, 2, 2], baseline=4.0, n_boot=300)
    assert s.value == pytest.approx(2.0) and s.score == pytest.approx(0.5)
    assert s.lo <= 2.0 <= s.hi and s.score_lo <= 0.5 <= s.score_hi
    assert loss_score("t", [8.0], [2], baseline=4.0).score == pytest.approx(0.0)   # no better than unigram


def test_aggregates_and_their_intervals():
    good = metric_score("medqa", "accuracy", *_answers(60, 55), n_boot=400)
    bad = metric_score("pubmedqa", "accuracy", *_answers(60, 20, k=3), n_boot=400)
    mean = aggregate([good, bad], "mean_normalised")
    assert mean[0] == pytest.approx((good.score + bad.score) / 2) and mean[1] < mean[0] < mean[2]
    worst = aggregate([good, bad], "worst_task")
    assert worst[0] == pytest.approx(bad.score) and worst[2] < good.score_lo
    weighted = aggregate([good, bad], "weighted", {"medqa": 3, "pubmedqa": 1})
    assert weighted[0] == pytest.approx(0.75 * good.score + 0.25 * bad.score)
    with pytest.raises(ValueError, match="task_weights for pubmedqa"):
        aggregate([good, bad], "weighted", {"medqa": 1})
    keys = objective_metrics([good, bad], "worst_task")
    assert keys["val_objective"] == worst[0] and keys["val_objective/lo"] == worst[1]
    assert keys["val_score/medqa"] == good.score and keys["val_metric/pubmedqa/accuracy/hi"] == bad.hi
    assert "val_objective" not in objective_metrics([good], "loss")   # the loss objective is val_loss


def test_significance_needs_the_intervals_apart():
    assert significantly_better((0.8, 0.7, 0.9), (0.5, 0.4, 0.6), "max")
    assert not significantly_better((0.8, 0.55, 0.9), (0.5, 0.4, 0.6), "max")      # overlap
    assert not significantly_better((0.5, 0.4, 0.6), (0.8, 0.7, 0.9), "max")       # worse
    assert significantly_better((1.0, 0.9, 1.1), (2.0, 1.8, 2.2), "min")
    assert not significantly_better((0.8, float("nan"), 0.9), (0.5, 0.4, 0.6), "max")
