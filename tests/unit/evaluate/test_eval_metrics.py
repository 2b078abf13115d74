"""Every metric against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medmix.evaluate.labeler import CLINICAL_LABELS, label_report
from medmix.evaluate.metrics import (accuracy, bleu, clinical_f1, compute_metrics, genotype_alt_count,
                                     macro_auc, macro_f1, normalize_answer, parse_locus, rouge_l, token_f1,
                                     variant_f1)
from medmix.tasks import get_task
from medmix.tasks.spec import Exemplar, TaskSpec

approx = pytest.approx


def test_accuracy_normalises_like_squad():
    # "Yes"=yes, "no."=no, "The left lung"="left lung" (article dropped), "maybe"!="no": 3/4
    assert accuracy(["Yes", "no.", "The left lung", "maybe"], ["yes", "no", "left lung", "no"]) == 0.75
    assert accuracy([1, 2, 3], [1, 2, 3]) == 1.0
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        accuracy(["a", "b"], ["a"])
    assert normalize_answer("  The Left,  lung! ") == "left lung"


def test_macro_f1_by_hand():
    # class 0: TP1 FP0 FN1 -> P 1, R 1/2, F1 2/3; class 1: TP2 FP1 FN0 -> P 2/3, R 1, F1 0.8
    # class 2: TP0 FN1 -> F1 0; the invalid answer (-1) is a miss, not a class.
    # macro = (2/3 + 0.8 + 0) / 3 = 0.48889
    assert macro_f1([0, 0, 1, 1, 2], [0, 1, 1, 1, -1]) == approx((2 / 3 + 0.8 + 0) / 3)
    # all correct; class 2 of 3 options appears nowhere and is left out -> 1.0
    assert macro_f1([0, 1, 1], [0, 1, 1]) == 1.0
    assert math.isnan(macro_f1([], []))


def test_macro_auc_binary_by_hand():
    # y = [0, 0, 1, 1]; p(class 1) = [.1, .6, .4, .8]
    # class 1: positives {.4, .8} vs negatives {.1, .6}: .4>.1 yes, .4>.6 no, .8>.1 yes, .8>.6 yes -> 3/4
    # class 0 uses p0 = 1 - p1: positives {.9, .4} vs negatives {.6, .2}: 3 of 4 pairs -> 3/4
    probs = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    assert macro_auc([0, 0, 1, 1], probs) == approx(0.75)
    # rows are renormalised over the options first: doubling every score changes nothing
    assert macro_auc([0, 0, 1, 1], np.array(probs) * 2) == approx(0.75)
    assert math.isnan(macro_auc([1, 1, 1, 1], probs))  # one class only: AUC undefined
    with pytest.raises(ValueError, match=">= 0"):
        macro_auc([0, 1], [[-1.0, -2.0], [-0.5, -0.1]])


def test_macro_auc_leaves_out_classes_absent_from_references():
    # 3 options, references only hold classes 0 and 1
    # class 0: positives p0 {.5, .2} vs negatives {.3, .4}: .5>.3, .5>.4 yes; .2>.3, .2>.4 no -> 2/4
    # class 1: positives p1 {.6, .4} vs negatives {.3, .5}: .6>.3, .6>.5, .4>.3 yes; .4>.5 no -> 3/4
    # class 2: no positives -> undefined, left out.   macro = (0.5 + 0.75) / 2 = 0.625
    probs = [[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.6, 0.1], [0.4, 0.4, 0.2]]
    assert macro_auc([0, 0, 1, 1], probs) == approx(0.625)


def test_macro_auc_equals_sklearn_ovr_when_every_class_is_present():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=30)
    y = np.arange(30) % 3
    assert macro_auc(y, probs) == approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_bleu_by_hand():
    # BLEU-1: hyp "the heart is normal" vs ref "the heart size is normal": 4/4 unigrams match,
    # brevity penalty exp(1 - 5/4) = exp(-0.25) = 0.77880
    assert bleu(["the heart is normal"], ["the heart size is normal"], max_order=1) == approx(math.exp(-0.25), abs=1e-4)
    # BLEU-4: hyp "the cat sat on the mat" vs ref "the cat sat on a mat", equal length (BP 1)
    # 1-grams 5/6 (second "the" clipped), 2-grams 3/5, 3-grams 2/4, 4-grams 1/3
    # (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** 0.25 = 0.53728
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == approx((1 / 12) ** 0.25, abs=1e-4)
    # corpus level pools counts: unigrams (4+5)/(4+6) = 0.9, BP exp(1 - 11/10) -> 0.81435
    # (not the mean of the sentence scores, which would be 0.806)
    assert bleu(["the heart is normal", "the cat sat on the mat"],
                ["the heart size is normal", "the cat sat on a mat"], max_order=1) == approx(0.9 * math.exp(-0.1), abs=1e-4)
    # exp smoothing, only when an order has no match: "the heart is big" vs "the heart is normal":
    # 3/4, 2/3, 1/2, and 0/1 4-grams smoothed to 1/(2*1) -> (3/4 * 2/3 * 1/2 * 1/2) ** 0.25 = (1/8) ** 0.25
    assert bleu(["the heart is big"], ["the heart is normal"]) == approx((1 / 8) ** 0.25, abs=1e-4)
    assert bleu(["no acute process"], ["no acute process"], max_order=1) == approx(1.0)
    assert bleu([""], ["the heart is normal"]) == 0.0       # empty prediction: brevity penalty 0


def test_rouge_l_by_hand():
    # "the heart is normal" vs ref "the heart size is normal": LCS 4 -> P 4/4, R 4/5, F 2*.8/1.8 = 0.88889
    # "no effusion" vs ref "no pleural effusion": LCS 2 -> P 1, R 2/3, F (4/3)/(5/3) = 0.8
    # mean over examples = (0.88889 + 0.8) / 2 = 0.84444
    assert rouge_l(["the heart is normal", "no effusion"],
                   ["the heart size is normal", "no pleural effusion"]) == approx((16 / 18 + 0.8) / 2)
    assert rouge_l([""], ["no effusion"]) == 0.0
    assert rouge_l(["small effusions"], ["small effusion"]) == 1.0  # Porter stemming


def test_token_f1_by_hand():
    # "left lung" vs "the left lower lung" -> [left, lung] vs [left, lower, lung]: shared 2,
    #   P 1, R 2/3, F1 0.8
    # "Yes." vs "yes" -> 1;  "" vs "no" -> 0;  "right right" vs "right" -> shared 1, P 1/2, R 1, F1 2/3
    # mean = (0.8 + 1 + 0 + 2/3) / 4 = 0.61667
    preds, refs = ["left lung", "Yes.", "", "right right"], ["the left lower lung", "yes", "no", "right"]
    assert token_f1(preds, refs) == approx((0.8 + 1 + 0 + 2 / 3) / 4)
    assert token_f1([""], [""]) == 1.0          # both empty (SQuAD rule)
    assert token_f1(["a b c"], ["b c a"]) == 1.0  # bag of tokens: order is free


def test_labeler_reads_findings_and_negations():
    def pos(text):
        return sorted(k for k, v in label_report(text).items() if v)
    assert pos("The heart is enlarged. There is a small opacity in the right upper lobe, consistent with "
               "atelectasis. There is a left pleural effusion. No pneumothorax.") == \
        ["atelectasis", "cardiomegaly", "opacity right", "pleural effusion"]
    assert pos("No pleural effusion or pneumothorax.") == []
    assert pos("No focal consolidation, pleural effusion, or edema.") == []      # one cue, a list
    assert pos("Heart size is not increased.") == []                             # cue inside the phrase
    assert pos("The effusion has resolved.") == []                              # post-negation
    assert pos("No pneumothorax, there is a left effusion.") == ["pleural effusion"]  # scope ends
    assert pos("No effusion but there is cardiomegaly.") == ["cardiomegaly"]
    assert pos("Cannot exclude left lower lobe consolidation.") == ["consolidation", "opacity left"]  # uncertain = positive
    assert pos("Right pleural effusion and left lower lobe atelectasis.") == \
        ["atelectasis", "opacity left", "pleural effusion"]                    # "right" is the effusion's side
    assert pos("Diffuse bilateral perihilar opacity, consistent with pulmonary edema.") == ["edema"]
    assert pos("The heart size is normal. The lungs are clear.") == []
    assert len(CLINICAL_LABELS) == 7


def test_clinical_f1_by_hand():
    refs = ["The heart is enlarged. No pleural effusion.",                                   # {cardiomegaly}
            "There is a small opacity in the right lower lobe, consistent with atelectasis.",  # {atelectasis, opacity right}
            "No pleural effusion or pneumothorax. The lungs are clear."]                       # {}
    preds = ["The heart is enlarged. There is a small left pleural effusion.",             # {cardiomegaly, effusion}
             "There is a small opacity in the left lower lobe, consistent with atelectasis.",  # {atelectasis, opacity left}
             "No focal consolidation, pleural effusion, or edema."]                            # {} (all negated)
    # per label: cardiomegaly TP1 -> 1; pleural effusion FP1 -> 0; atelectasis TP1 -> 1;
    # opacity right FN1 -> 0; opacity left FP1 -> 0; consolidation, edema: in neither -> left out
    # macro = (1 + 0 + 1 + 0 + 0) / 5 = 0.4;  micro: TP 2, FP 2, FN 1 -> 2*2 / (2*2 + 2 + 1) = 4/7
    scores = clinical_f1(preds, refs)
    assert scores["macro"] == approx(0.4)
    assert scores["micro"] == approx(4 / 7)
    assert scores["f1/cardiomegaly"] == 1.0 and math.isnan(scores["f1/edema"])
    assert clinical_f1(refs, refs)["micro"] == 1.0 and clinical_f1(refs, refs)["macro"] == 1.0
    # an empty report asserts nothing: every reference finding is missed
    assert clinical_f1(["", "", ""], refs)["micro"] == 0.0


def test_variant_f1_by_hand():
    truth = [("chr1", 100, "A", "G", "0/1"), ("chr1", 200, "C", "T", "1/1"),
             ("chr1", 300, "AT", "A", "0/1"), ("chr2", 50, "G", "GA", "1/1"),
             ("chr1", 400, "A", "C", "0/0")]                                    # hom-ref: not a variant
    calls = [("chr1", 100, "A", "G", "0|1"),        # SNP TP (phased het = het)
             ("chr1", 200, "C", "T", "0/1"),        # SNP, wrong genotype -> FP + FN
             ("chr1", 250, "G", "A", "heterozygous"),  # SNP FP
             ("chr1", 300, "AT", "A", 1),           # indel TP
             ("chr2", 50, "G", "GAA", "1/1")]       # wrong inserted allele -> indel FP + FN
    snp = variant_f1(calls, truth, "snp")
    # SNP: TP 1, FP 2, FN 1 -> P 1/3, R 1/2, F1 2*1 / (2 + 2 + 1) = 0.4
    assert (snp["tp"], snp["fp"], snp["fn"]) == (1, 2, 1)
    assert snp["f1"] == approx(0.4) and snp["precision"] == approx(1 / 3) and snp["recall"] == approx(0.5)
    # indel: TP 1, FP 1, FN 1 -> 2 / (2 + 1 + 1) = 0.5
    assert variant_f1(calls, truth, "indel")["f1"] == approx(0.5)
    # alleles only: the genotype error at 200 becomes a TP -> TP 2, FP 1, FN 0 -> 4/5
    assert variant_f1(calls, truth, "snp", match_genotype=False)["f1"] == approx(0.8)
    assert variant_f1(truth, truth, "indel")["f1"] == 1.0
    assert math.isnan(variant_f1([], [], "snp")["f1"])
    assert [genotype_alt_count(g) for g in ("0/0", "1/0", "1|1", "homozygous alternate", 2)] == [0, 1, 2, 2, 2]
    assert parse_locus("chr1:1000 a>G") == ("chr1", 1000, "A", "G")
    with pytest.raises(ValueError, match="CHROM:POS"):
        parse_locus("chr1-1000")


def test_compute_metrics_classification_with_option_scores():
    spec = get_task("cxr_classify")            # options (yes, no); accuracy, macro_f1, macro_auc
    probs = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    # argmax -> [0, 1, 0, 1] vs labels [0, 0, 1, 1]: accuracy 2/4; each class TP1 FP1 FN1 -> F1 0.5;
    # AUC 0.75 (worked out in test_macro_auc_binary_by_hand)
    out = compute_metrics(spec, ["yes", "no", "yes", "no"], ["yes", "yes", "no", "no"],
                          option_probs=probs, labels=[0, 0, 1, 1])
    assert out == {"n": 4.0, "accuracy": 0.5, "macro_f1": 0.5, "macro_auc": approx(0.75)}
    # no scores: predictions are matched to the options ("(B)" is option B = "no"),
    # references give the labels: [0, 0, 1, 1] vs [0, 1, 1, 1] -> accuracy 3/4
    spec_no_auc = TaskSpec(**{**spec.__dict__, "metrics": ("accuracy",)})
    assert compute_metrics(spec_no_auc, ["yes", "no", "(B)", "no"], ["yes", "yes", "no", "no"])["accuracy"] == 0.75
    with pytest.raises(ValueError, match="macro_auc needs option_probs"):
        compute_metrics(spec, ["yes"], ["yes"])


def test_compute_metrics_mcq_vqa_report_and_variants():
    medqa = get_task("medqa")
    ctx = [{"options": ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]},
           {"options": ["Radial nerve", "Axillary nerve", "Ulnar nerve", "Median nerve"]}]
    # ragged per-example options: argmax [2, 0] vs labels [2, 1] -> 1/2
    assert compute_metrics(medqa, ["", ""], ["Vitamin C", "Axillary nerve"], contexts=ctx,
                           option_probs=[[.1, .2, .6, .1], [.7, .1, .1, .1]], labels=[2, 1])["accuracy"] == 0.5
    assert compute_metrics(medqa, ["vitamin c.", "(B)"], ["Vitamin C", "Axillary nerve"],
                           contexts=ctx)["accuracy"] == 1.0

    vqa = compute_metrics(get_task("vqa_rad"), ["yes", "left lung"], ["yes", "the left lower lung"])
    # accuracy 1/2; token F1 (1 + 0.8) / 2 = 0.9; BLEU-1: 3 of 3 hyp unigrams match,
    # hyp 3 tokens vs ref 5 -> BP exp(1 - 5/3) = 0.51342
    assert vqa == {"n": 2.0, "accuracy": 0.5, "bleu1": approx(math.exp(-2 / 3), abs=1e-4), "token_f1": approx(0.9)}

    refs = ["The heart is enlarged. No pleural effusion.", "The heart size is normal. The lungs are clear."]
    preds = ["The heart is enlarged.", "The heart size is normal. The lungs are clear."]
    rep = compute_metrics(get_task("cxr_report"), preds, refs)
    assert list(rep) == ["n", "bleu1", "bleu4", "rougeL", "clinical_f1_micro", "clinical_f1_macro"]
    assert rep["clinical_f1_micro"] == 1.0 and rep["bleu4"] == approx(bleu(preds, refs))
    assert rep["rougeL"] == approx(rouge_l(preds, refs))

    # variants: truth het, het, hom-alt; calls het, hom-ref (a miss), hom-alt
    # SNPs (100, 200) both right -> 1.0; the indel at 300 is missed: TP0 FP0 FN1 -> 0.0
    spec = get_task("variant_calling")   # options: hom ref, het, hom alt
    ctx = [{"locus": "chr1:100 A>G"}, {"locus": "chr1:300 AT>A"}, {"locus": "chr1:200 C>T"}]
    probs = [[.1, .8, .1], [.7, .2, .1], [.1, .1, .8]]
    out = compute_metrics(spec, [""] * 3, [""] * 3, option_probs=probs, labels=[1, 1, 2], contexts=ctx)
    assert out == {"n": 3.0, "accuracy": approx(2 / 3), "snp_f1": 1.0, "indel_f1": 0.0}
    with pytest.raises(ValueError, match="need contexts"):
        compute_metrics(spec, [""], [""], option_probs=[[1, 0, 0]], labels=[0])


def test_compute_metrics_rejects_unknown_metric():
    with pytest.raises(ValueError, match="task x: unknown metric 'perplexity'"):   # refused when defined
        TaskSpec(name="x", title="x", modality="text", kind="qa", instruction="", question="",
                 exemplar=Exemplar({}, ""), metrics=("perplexity",), mixture_weight=0)
    bad = TaskSpec(name="x", title="x", modality="text", kind="qa", instruction="", question="",
                   exemplar=Exemplar({}, ""), metrics=("accuracy",), mixture_weight=0)
    object.__setattr__(bad, "metrics", ("perplexity",))        # and by compute_metrics, should one slip by
    with pytest.raises(ValueError, match="unknown metric 'perplexity'"):
        compute_metrics(bad, ["a"], ["a"])


def test_metric_interval_is_the_percentile_bootstrap_of_the_metric_and_repeats_exactly():
    from medmix.evaluate.metrics import interval, metric_interval, resample, task_seed
    spec = get_task("cxr_classify")
    labels = [0, 1] * 10
    probs = [[0.8, 0.2] if i % 4 else [0.3, 0.7] for i in range(20)]   # right on 10 + 5 of 20
    preds, refs = ["yes"] * 20, ["yes" if y == 0 else "no" for y in labels]
    lo, hi = metric_interval(spec, "accuracy", preds, refs, option_probs=probs, labels=labels, n_boot=300)
    # by hand: the same draws, accuracy on each
    correct = np.array([int(np.argmax(p)) == y for p, y in zip(probs, labels)], dtype=float)
    draws = correct[resample(20, 300, task_seed(0, "cxr_classify"))].mean(axis=1)
    assert (lo, hi) == approx(interval(draws))
    assert lo < compute_metrics(spec, preds, refs, option_probs=probs, labels=labels)["accuracy"] < hi
    assert metric_interval(spec, "accuracy", preds, refs, option_probs=probs, labels=labels, n_boot=300) == (lo, hi)
    # a text metric, resampled whole; every draw of a perfect answer scores 1
    report = get_task("cxr_report")
    assert metric_interval(report, "rougeL", ["no acute findings"] * 3, ["no acute findings"] * 3) == approx((1.0, 1.0))
    with pytest.raises(ValueError, match="no metric 'rougeL'"):
        metric_interval(spec, "rougeL", preds, refs, option_probs=probs, labels=labels)
