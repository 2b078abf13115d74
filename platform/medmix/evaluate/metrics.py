"""Per-task metrics, from well-kept libraries wherever one exists.

Every metric is a fraction in [0, 1] (BLEU is sacrebleu's score / 100), NaN when it is
undefined for the inputs (no examples; no positive or negative for any AUC class; no variant
of a type). `compute_metrics(spec, ...)` computes the names a task's `TaskSpec.metrics` lists:

| name | what | library |
|---|---|---|
| accuracy | exact match after SQuAD normalisation; argmax of `option_probs` when given | scikit-learn |
| macro_f1 | F1 per class, averaged over classes present in references or predictions | scikit-learn |
| macro_auc, auc | one-vs-rest AUC per class, averaged over classes AUC is defined for | scikit-learn |
| bleu1, bleu4 | corpus BLEU, max n-gram order 1 / 4 | sacrebleu |
| rougeL | ROUGE-L F-measure per example, averaged | rouge-score |
| token_f1 | SQuAD token F1 per example, averaged (Med-PaLM M's open-VQA metric) | official SQuAD rule |
| clinical_f1_micro/macro | F1 over `labeler.CLINICAL_LABELS` of generated vs reference reports | scikit-learn |
| snp_f1, indel_f1 | variant-call F1 against truth (needs `contexts` with `locus`) | counting |

    compute_metrics(get_task("derm_pad"), predictions, references, option_probs=probs, labels=labels)
"""

from __future__ import annotations

import re
import string
import zlib
from collections import Counter
from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from medmix.evaluate.labeler import CLINICAL_LABELS, label_matrix
from medmix.tasks.spec import TaskSpec

NAN = float("nan")


# -- text normalisation -------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    return " ".join(_ARTICLES.sub(" ", str(text).lower().translate(_PUNCT)).split())


# -- classification and exact match -------------------------------------------------------

def accuracy(predictions: Sequence[Any], references: Sequence[Any]) -> float:
    """Fraction of exact matches. Strings are compared after `normalize_answer`."""
    _same_length(predictions, references)
    if not references:
        return NAN
    from sklearn.metrics import accuracy_score
    norm = [normalize_answer(x) if isinstance(x, str) else x for x in (*predictions, *references)]
    return float(accuracy_score(norm[len(predictions):], norm[:len(predictions)]))


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in `y_true` or `y_pred`.

    A class in neither has no F1 and is left out (sklearn's default label set). An invalid
    prediction (-1: an answer that is none of the options) is a miss for the true class but
    is not a class of its own, so it does not add a zero to the average.
    """
    _same_length(y_true, y_pred)
    if len(y_true) == 0:
        return NAN
    from sklearn.metrics import f1_score
    classes = sorted((set(y_true) | set(y_pred)) - {-1})
    return float(f1_score(list(y_true), list(y_pred), labels=classes, average="macro", zero_division=0))


def macro_auc(y_true: Sequence[int], option_probs: Any, num_classes: int | None = None) -> float:
    """One-vs-rest ROC AUC per class, averaged over the classes it is defined for.

    Args:
        y_true: true class index per example.
        option_probs: (examples, classes) scores per option. Rows are renormalised to sum to 1
            first (probabilities over the options), so any positive scores work.
        num_classes: number of options (default: the width of `option_probs`).

    A class absent from `y_true` (or present in every example) has no negatives (or no
    positives), so its AUC is undefined: it is left out of the average rather than counted
    as 0 or 1 — sklearn's `roc_auc_score(multi_class="ovr")` refuses such inputs instead.
    With every class present this equals sklearn's OvR macro AUC; with two classes it is the
    binary AUC. NaN when no class qualifies.
    """
    from sklearn.metrics import roc_auc_score
    probs = np.asarray(option_probs, dtype=np.float64)
    y = np.asarray(y_true)
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"option_probs must be (examples, options) = ({len(y)}, k); got shape {probs.shape}")
    if len(y) == 0:
        return NAN
    if (probs < 0).any():
        raise ValueError("option_probs must be probabilities (>= 0); exponentiate log-likelihoods first")
    probs = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-300, None)
    k = num_classes or probs.shape[1]
    scores = [roc_auc_score((y == c).astype(int), probs[:, c]) for c in range(k)
              if 0 < (y == c).sum() < len(y)]
    return float(np.mean(scores)) if scores else NAN


# -- generated text -----------------------------------------------------------------------

def bleu(predictions: Sequence[str], references: Sequence[str], max_order: int = 4) -> float:
    """Corpus BLEU with sacrebleu's defaults — tokenize `13a`, case-sensitive, `exp` smoothing
    (it only matters when some n-gram order has zero matches) — and one reference per
    example. `max_order=1` is BLEU-1, 4 is BLEU-4. Returned as a fraction (score / 100)."""
    _same_length(predictions, references)
    if not references:
        return NAN
    from sacrebleu.metrics import BLEU
    scorer = BLEU(max_ngram_order=max_order)
    return scorer.corpus_score(list(predictions), [list(references)]).score / 100.0


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean over examples of ROUGE-L F-measure (rouge-score; its tokenizer lowercases and
    keeps only [a-z0-9] tokens; Porter stemming on). An empty side scores 0."""
    _same_length(predictions, references)
    if not references:
        return NAN
    from rouge_score.rouge_scorer import RougeScorer
    scorer = RougeScorer(["rougeL"], use_stemmer=True)
    return float(np.mean([scorer.score(ref, pred)["rougeL"].fmeasure
                          for pred, ref in zip(predictions, references)]))


def token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean over examples of SQuAD token F1, the open-VQA metric of Med-PaLM M.

    Per example (the official SQuAD v1.1 evaluation script's rule): normalise both with
    `normalize_answer`, split on whitespace, count the tokens they share as multisets;
    precision = shared / predicted tokens, recall = shared / reference tokens,
    F1 = 2PR / (P + R). Both empty -> 1; exactly one empty or nothing shared -> 0.
    (No maintained library ships this beyond copies of that script.)
    """
    _same_length(predictions, references)
    if not references:
        return NAN
    scores = []
    for pred, ref in zip(predictions, references):
        p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
        if not p or not r:
            scores.append(float(p == r))
            continue
        same = sum((Counter(p) & Counter(r)).values())
        scores.append(0.0 if same == 0 else 2 * same / (len(p) + len(r)))  # = 2PR/(P+R)
    return float(np.mean(scores))


def clinical_f1(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Micro and macro F1 of the labeler's findings, generated vs reference reports.

    Each report becomes a 0/1 vector over `CLINICAL_LABELS` (`labeler.label_report`). Micro
    F1 pools every (report, label) decision; macro F1 averages per-label F1 over the labels
    that are positive in at least one reference or prediction (a label absent from both has
    no F1 and is left out). Also returns `f1/<label>` per label (NaN when absent from both).
    """
    _same_length(predictions, references)
    if not references:
        return {"micro": NAN, "macro": NAN}
    from sklearn.metrics import f1_score
    y_true, y_pred = np.array(label_matrix(list(references))), np.array(label_matrix(list(predictions)))
    per = f1_score(y_true, y_pred, average=None, zero_division=np.nan)
    out = {"micro": float(f1_score(y_true, y_pred, average="micro", zero_division=np.nan)),
           "macro": float(np.nanmean(per)) if not np.isnan(per).all() else NAN}
    out.update({f"f1/{label}": float(v) for label, v in zip(CLINICAL_LABELS, per)})
    return out


# -- variant calling ----------------------------------------------------------------------

Call = tuple[str, int, str, str, Any]   # (chrom, pos, ref, alt, genotype)

_GENOTYPE_WORDS = {"homozygous reference": 0, "hom_ref": 0, "homref": 0, "heterozygous": 1, "het": 1,
                   "homozygous alternate": 2, "hom_alt": 2, "homalt": 2}


def genotype_alt_count(genotype: Any) -> int:
    """Alt alleles in a genotype: 0/0 -> 0, 0/1 (or 0|1, 1/0, "heterozygous", 1) -> 1, 1/1 -> 2."""
    if isinstance(genotype, (int, np.integer)) and 0 <= int(genotype) <= 2:
        return int(genotype)
    text = str(genotype).strip().lower()
    if text in _GENOTYPE_WORDS:
        return _GENOTYPE_WORDS[text]
    parts = re.split(r"[/|]", text)
    if len(parts) == 2 and all(p in ("0", "1") for p in parts):
        return int(parts[0]) + int(parts[1])
    raise ValueError(f"unknown genotype {genotype!r}: use 0/0, 0/1, 1/1, 0..2 or a GENOTYPES name")


def variant_type(ref: str, alt: str) -> str:
    """snp (1 base -> 1 base), indel (lengths differ) or mnp (several bases, same length)."""
    if len(ref) == len(alt):
        return "snp" if len(ref) == 1 else "mnp"
    return "indel"


def variant_f1(calls: Iterable[Call], truth: Iterable[Call], kind: str,
               match_genotype: bool = True, fasta: Any = None) -> dict[str, float]:
    """Precision, recall and F1 of `kind` ("snp" or "indel") calls against truth.

    The comparison is `medmix.data.genomics.compare`'s, the one `call-variants` uses against
    a truth VCF: comma-separated ALTs split into one variant per allele, indels trimmed (and
    left-aligned when `fasta`, a pysam.FastaFile, is given), MNPs split into SNPs, hom-ref
    entries dropped on both sides. A call is a true positive when the truth holds the same
    variant — and, with `match_genotype` (hap.py's default), the same genotype (alt-allele
    count); a wrong genotype is one false positive and one false negative. Every truth
    variant counts: pass the whole truth set of the evaluated regions, not only the truth at
    the candidates, or a variant candidate generation missed is never a false negative.
    F1 = 2TP / (2TP + FP + FN); NaN when neither side has a variant of this kind.
    """
    from medmix.data.genomics import compare  # pysam (alleles): only variant tasks pay it

    def items(entries: Iterable[Call]):
        return compare.allele_items(((str(chrom), int(pos) - 1, str(ref), str(alt), genotype_alt_count(gt))
                                     for chrom, pos, ref, alt, gt in entries), fasta)
    return compare.score(items(calls), items(truth), kind, match_genotype)


def snp_f1(calls: Iterable[Call], truth: Iterable[Call]) -> float:
    return variant_f1(calls, truth, "snp")["f1"]


def indel_f1(calls: Iterable[Call], truth: Iterable[Call]) -> float:
    return variant_f1(calls, truth, "indel")["f1"]


_LOCUS = re.compile(r"^\s*(?P<chrom>[^:\s]+):(?P<pos>\d+)\s+(?P<ref>[ACGTNacgtn]+)\s*>\s*(?P<alt>[ACGTNacgtn,]+)\s*$")


def parse_locus(text: str) -> tuple[str, int, str, str]:
    """`chr1:1000 A>G` (the variant task's `locus` context field) -> ("chr1", 1000, "A", "G")."""
    m = _LOCUS.match(str(text))
    if not m:
        raise ValueError(f"locus {text!r} is not CHROM:POS REF>ALT (e.g. chr1:1000 A>G)")
    return m["chrom"], int(m["pos"]), m["ref"].upper(), m["alt"].upper()


# -- the dispatcher -----------------------------------------------------------------------

def compute_metrics(spec: TaskSpec, predictions: Sequence[str], references: Sequence[str],
                    option_probs: Any = None, labels: Sequence[int] | None = None,
                    contexts: Sequence[Mapping[str, Any]] | None = None,
                    truth: Sequence[Call] | None = None) -> dict[str, float]:
    """The metrics `spec.metrics` names, plus `n` (examples).

    Args:
        spec: the task (its kind, options and metric names).
        predictions: the model's answer text per example (generated, or the chosen option).
        references: the target text per example.
        option_probs: per example, a probability per option (from `score_options`): a
            (examples, options) array for fixed options; rows may differ in length for MCQ.
            When given, the predicted option is its argmax.
        labels: true option index per example (the shard's `label`); else references are
            matched to the options.
        contexts: per-example context dicts; the variant task reads `locus` from them.
        truth: snp_f1/indel_f1 only: every truth variant of the evaluated rows' regions and
            split, (chrom, 1-based pos, ref, alt, genotype) — `ingest.variants.variant_truth`
            reads it back from the ingest's truth VCF. Without it the truth is the labels of
            the candidates, which cannot count a variant candidate generation missed.
    """
    _same_length(predictions, references)
    n = len(references)
    out: dict[str, float] = {"n": float(n)}
    y_true = y_pred = None
    if spec.has_options:
        opts = [spec.options_for(dict(contexts[i]) if contexts else {}) for i in range(n)]
        y_true = list(labels) if labels is not None else [_option_index(o, r) for o, r in zip(opts, references)]
        if option_probs is not None:
            if len(option_probs) != n:
                raise ValueError(f"{spec.name}: {len(option_probs)} option_probs rows for {n} examples")
            y_pred = [int(np.argmax(p)) for p in option_probs]
        else:
            y_pred = [_option_index(o, p) for o, p in zip(opts, predictions)]
    for name in spec.metrics:
        if name == "accuracy":
            out[name] = accuracy(y_pred, y_true) if y_true is not None else accuracy(predictions, references)
        elif name == "macro_f1":
            out[name] = macro_f1(_need(y_true, spec, name), y_pred)
        elif name in ("macro_auc", "auc"):
            if option_probs is None:
                raise ValueError(f"{spec.name}: metric {name} needs option_probs (score_options per example)")
            out[name] = macro_auc(_need(y_true, spec, name), option_probs, num_classes=len(spec.options) or None)
        elif name in ("bleu1", "bleu4"):
            out[name] = bleu(predictions, references, max_order=int(name[-1]))
        elif name == "rougeL":
            out[name] = rouge_l(predictions, references)
        elif name == "token_f1":
            out[name] = token_f1(predictions, references)
        elif name in ("clinical_f1_micro", "clinical_f1_macro"):
            if "clinical_f1_micro" not in out:
                scores = clinical_f1(predictions, references)
                out["clinical_f1_micro"], out["clinical_f1_macro"] = scores["micro"], scores["macro"]
        elif name in ("snp_f1", "indel_f1"):
            calls, at_candidates = _variant_calls(spec, y_pred, y_true, contexts)
            out[name] = variant_f1(calls, at_candidates if truth is None else truth,
                                   name.split("_")[0])["f1"]
        else:
            raise ValueError(f"{spec.name}: unknown metric {name!r}; known: accuracy, macro_f1, macro_auc, "
                             f"auc, bleu1, bleu4, rougeL, token_f1, clinical_f1_micro, clinical_f1_macro, "
                             f"snp_f1, indel_f1")
    return {k: out[k] for k in ("n", *spec.metrics)}


def task_seed(seed: int, task: str) -> int:
    """A task's own bootstrap seed: fixed, and different from every other task's."""
    return (int(seed) * 1_000_003 + zlib.crc32(task.encode())) % 2**32


def resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) row indices drawn with replacement."""
    if n <= 0:
        raise ValueError("no rows to bootstrap")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates ignored)."""
    finite = replicates[np.isfinite(replicates)]
    if not len(finite):
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def metric_interval(spec: TaskSpec, metric: str, predictions: Sequence[str], references: Sequence[str],
                    option_probs: Any = None, labels: Sequence[int] | None = None,
                    contexts: Sequence[Mapping[str, Any]] | None = None, *, n_boot: int = 200,
                    level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of one of `spec`'s metrics: the examples resampled with
    replacement `n_boot` times (seeded per task, so an evaluation repeats exactly) and the
    metric recomputed on each draw by `compute_metrics`. Corpus metrics (BLEU, clinical F1)
    are resampled whole, like the per-example ones. The variant F1s, whose truth is the
    regions' variants rather than the rows, have no row bootstrap: (nan, nan)."""
    if metric not in spec.metrics:
        raise ValueError(f"{spec.name}: no metric {metric!r} (it has {', '.join(spec.metrics)})")
    n = len(references)
    if n == 0 or metric in ("snp_f1", "indel_f1"):
        return float("nan"), float("nan")
    one = replace(spec, metrics=(metric,))
    probs = list(option_probs) if option_probs is not None else None
    draws = []
    for idx in resample(n, n_boot, task_seed(seed, spec.name)):
        pick = [int(i) for i in idx]
        draws.append(compute_metrics(
            one, [predictions[i] for i in pick], [references[i] for i in pick],
            option_probs=[probs[i] for i in pick] if probs is not None else None,
            labels=[labels[i] for i in pick] if labels is not None else None,
            contexts=[contexts[i] for i in pick] if contexts is not None else None)[metric])
    return interval(np.asarray(draws, dtype=float), level)


def _option_index(options: Sequence[str], answer: str) -> int:
    """Index of the option `answer` names (normalised match, or its letter "(B)"); -1 if none."""
    norm = normalize_answer(answer)
    for i, opt in enumerate(options):
        if normalize_answer(opt) == norm:
            return i
    letter = re.fullmatch(r"\(?([A-Za-z])\)?\.?", answer.strip())
    if letter and ord(letter[1].upper()) - 65 < len(options):
        return ord(letter[1].upper()) - 65
    return -1


def _variant_calls(spec: TaskSpec, y_pred, y_true, contexts) -> tuple[list[Call], list[Call]]:
    if not contexts or y_true is None:
        raise ValueError(f"{spec.name}: snp_f1/indel_f1 need contexts with a `locus` per example")
    calls, truth = [], []
    for ctx, p, t in zip(contexts, y_pred, y_true):
        site = parse_locus(ctx["locus"])
        truth.append((*site, genotype_alt_count(spec.options[t]) if t >= 0 else 0))
        calls.append((*site, genotype_alt_count(spec.options[p]) if p >= 0 else 0))
    return calls, truth


def _need(y_true, spec: TaskSpec, name: str):
    if y_true is None:
        raise ValueError(f"{spec.name}: metric {name} needs a task with options (kind {spec.kind})")
    return y_true


def _same_length(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} references: they must pair up one to one")
