"""One variant comparison for `medmix evaluate` and `call-variants`: MNPs split or joined
compare equal, both paths give the same counts, and a true variant that candidate generation
missed is a false negative in evaluate's F1."""

from __future__ import annotations

import pysam
import pytest
from genomics_helpers import CONTIG, write_fasta

from medmix.data.genomics.alleles import Variant
from medmix.data.genomics.compare import atomize
from medmix.data.genomics.simulate import write_truth_vcf
from medmix.data.genomics.vcf import Call, compare_to_truth, write_calls
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.evaluate.metrics import compute_metrics, variant_f1
from medmix.evaluate.runner import task_truth
from medmix.tasks import get_task


@pytest.fixture
def ref(tmp_path, reference_seq):
    seq = reference_seq[:299] + "G" + "AAAAAA" + "C" + reference_seq[307:]
    return write_fasta(tmp_path / "ref.fa", {CONTIG: seq}), seq


def alt(base: str) -> str:
    return "T" if base != "T" else "G"


def test_an_mnp_and_the_same_snps_compare_equal_in_vcfs_and_in_evaluate(tmp_path, ref):
    fa, R = ref
    mnp = Variant(CONTIG, 20, R[20:22], alt(R[20]) + alt(R[21]))
    write_truth_vcf(tmp_path / "truth.vcf.gz", fa, {mnp: 1}, "s1")
    snps = [Call(Variant(CONTIG, 20, R[20], alt(R[20])), (0, 1, 0)),
            Call(Variant(CONTIG, 21, R[21], alt(R[21])), (0, 1, 0))]
    calls = write_calls(snps, fa, tmp_path / "calls.vcf.gz", sample="s1")
    m = compare_to_truth(calls, tmp_path / "truth.vcf.gz", fa)
    assert (m["snp_tp"], m["snp_fp"], m["snp_fn"]) == (2, 0, 0) and m["snp_f1"] == 1.0
    # evaluate's tuples (1-based): joined truth, split calls -- and a base of context around it
    truth = [(CONTIG, 21, R[20:22], mnp.alt, "0/1")]
    split = [(CONTIG, 21, R[20], alt(R[20]), "0/1"), (CONTIG, 22, R[21], alt(R[21]), "0/1")]
    padded = [(CONTIG, 20, R[19:23], R[19] + mnp.alt + R[22], "0/1")]
    assert variant_f1(split, truth, "snp")["f1"] == 1.0
    assert variant_f1(padded, truth, "snp")["f1"] == 1.0
    assert atomize(Variant(CONTIG, 5, "ACG", "TCA")) == [Variant(CONTIG, 5, "A", "T"), Variant(CONTIG, 7, "G", "A")]


def test_evaluate_and_call_variants_count_the_same_hand_made_cases(tmp_path, ref):
    fa, R = ref
    truth = {Variant(CONTIG, 40, R[40], alt(R[40])): 2,       # called het -> FP + FN
             Variant(CONTIG, 60, R[60], alt(R[60])): 1,       # not called -> FN
             Variant(CONTIG, 150, R[150:153], R[150]): 1,     # deletion -> TP
             Variant(CONTIG, 299, "G", "GA"): 2}              # insertion -> TP
    calls = {Variant(CONTIG, 40, R[40], alt(R[40])): 1,
             Variant(CONTIG, 80, R[80], alt(R[80])): 1,       # FP
             Variant(CONTIG, 150, R[150:153], R[150]): 1,
             Variant(CONTIG, 305, "A", "AA"): 2}              # right-shifted spelling of 299
    write_truth_vcf(tmp_path / "truth.vcf.gz", fa, truth, "s1")
    probs = {1: (0, 1, 0), 2: (0, 0, 1)}
    out = write_calls([Call(v, probs[g]) for v, g in calls.items()], fa, tmp_path / "c.vcf.gz", sample="s1")
    vcf = compare_to_truth(out, tmp_path / "truth.vcf.gz", fa)
    tuples = lambda d: [(v.contig, v.pos + 1, v.ref, v.alt, g) for v, g in d.items()]  # noqa: E731
    with pysam.FastaFile(str(fa)) as fasta:
        for kind in ("snp", "indel"):
            ev = variant_f1(tuples(calls), tuples(truth), kind, fasta=fasta)
            assert (ev["tp"], ev["fp"], ev["fn"]) == (vcf[f"{kind}_tp"], vcf[f"{kind}_fp"], vcf[f"{kind}_fn"])
            assert ev["f1"] == pytest.approx(vcf[f"{kind}_f1"])
    assert (vcf["snp_tp"], vcf["snp_fp"], vcf["snp_fn"]) == (0, 2, 2)
    assert (vcf["indel_tp"], vcf["indel_fp"], vcf["indel_fn"]) == (2, 0, 0)


def test_a_true_variant_no_candidate_covered_is_a_false_negative(tmp_path, ref):
    fa, R = ref
    found = [Variant(CONTIG, 20, R[20], alt(R[20])), Variant(CONTIG, 40, R[40], alt(R[40]))]
    missed = Variant(CONTIG, 60, R[60], alt(R[60]))          # candidate generation never saw it
    truth_vcf = write_truth_vcf(tmp_path / "truth.vcf.gz", fa, {**{v: 1 for v in found}, missed: 1}, "s1")
    store = ShardStore(tmp_path / "store")
    source = {"kind": "variants", "task": "variant_calling", "path": str(tmp_path / "s1.bam"),
              "reference": str(fa), "truth": str(truth_vcf), "regions": "all", "split": "test",
              "sample": "s1"}
    with store.transaction(source=source) as tx:
        for v in found:
            tx.add(Example(f"s1:{v.locus}", "variant_calling", "test", {"locus": v.locus},
                           "heterozygous", "s1.bam", label=1))
    notes: list[str] = []
    truth = task_truth(store, "variant_calling", "test", evaluated=2, notes=notes)
    assert notes == [] and sorted(t[1] for t in truth) == [21, 41, 61]
    spec = get_task("variant_calling")
    contexts = [{"locus": v.locus} for v in found]
    right = ["heterozygous", "heterozygous"]               # both candidates called correctly
    scored = compute_metrics(spec, right, right, labels=[1, 1], contexts=contexts, truth=truth)
    assert scored["snp_f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))   # TP 2, FN 1
    # the candidates' labels alone cannot see the miss: recall would read 1
    assert compute_metrics(spec, right, right, labels=[1, 1], contexts=contexts)["snp_f1"] == 1.0
    # no truth for a split evaluated in part: a note says why recall counts only candidates
    assert task_truth(store, "variant_calling", "test", evaluated=1, notes=notes) is None
    assert "only 1 of the split's 2 rows" in notes[0]
