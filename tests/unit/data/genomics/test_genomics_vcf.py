"""Calls written as a bgzipped, indexed VCF that pysam and bcftools read back, and the
genotype-aware SNP/indel F1 on hand-made calls."""

from __future__ import annotations

import math

import pysam
import pytest
from genomics_helpers import CONTIG, LENGTH, write_fasta

from medmix.data.genomics.alleles import Variant
from medmix.data.genomics.inputs import GenomicsInputError
from medmix.data.genomics.simulate import write_truth_vcf
from medmix.data.genomics.vcf import Call, compare_to_truth, write_calls


@pytest.fixture
def ref(tmp_path, reference_seq):
    # a homopolymer run at 300..305 so an insertion has two spellings
    seq = reference_seq[:299] + "G" + "AAAAAA" + "C" + reference_seq[307:]
    return write_fasta(tmp_path / "ref.fa", {CONTIG: seq, "ctg2": seq[:200]}), seq


def test_write_calls_reads_back_indexed(tmp_path, ref):
    fa, R = ref
    calls = [Call(Variant(CONTIG, 50, R[50], "T" if R[50] != "T" else "G"), (0.05, 0.9, 0.05)),
             Call(Variant(CONTIG, 10, R[10], "T" if R[10] != "T" else "C"), (0.001, 0.009, 0.99)),
             Call(Variant(CONTIG, 120, R[120:123], R[120]), (0.7, 0.2, 0.1)),
             Call(Variant("ctg2", 5, R[5], R[5] + "GG"), (0.0, 1.0, 0.0))]
    out = write_calls(calls, fa, tmp_path / "calls.vcf.gz", sample="s1")
    assert (tmp_path / "calls.vcf.gz.tbi").exists()
    with pysam.VariantFile(str(out)) as vcf:
        assert list(vcf.header.contigs) == [CONTIG, "ctg2"]
        assert vcf.header.contigs[CONTIG].length == LENGTH
        recs = list(vcf)
        assert [(r.chrom, r.pos) for r in recs] == [(CONTIG, 11), (CONTIG, 51), (CONTIG, 121), ("ctg2", 6)]
        hom, het, ref_call, ins = recs
        assert hom.samples["s1"]["GT"] == (1, 1) and het.samples["s1"]["GT"] == (0, 1)
        assert ref_call.samples["s1"]["GT"] == (0, 0) and list(ref_call.filter) == ["RefCall"]
        assert list(het.filter) == ["PASS"]
        assert het.qual == pytest.approx(-10 * math.log10(0.1), abs=0.01)   # phred(1 - 0.9) = 10
        assert hom.qual == pytest.approx(20.0, abs=0.01)
        assert ins.qual == pytest.approx(99.0)                                # p = 1 is capped
        assert het.samples["s1"]["GQ"] == 10
        assert het.samples["s1"]["GP"] == pytest.approx((0.05, 0.9, 0.05))
        # indexed: region queries work
        assert [r.pos for r in vcf.fetch(CONTIG, 40, 60)] == [51]
    # bcftools accepts it: view parses it, norm --check-ref e finds every REF in the FASTA
    from pysam import bcftools
    assert bcftools.view("-H", str(out)).count("\n") == 4
    bcftools.norm("--check-ref", "e", "-f", str(fa), "-Ov", str(out))


def test_write_calls_rejects_wrong_ref_and_name(tmp_path, ref):
    fa, R = ref
    wrong = "A" if R[50] != "A" else "C"
    with pytest.raises(GenomicsInputError, match="REF A|REF C"):
        write_calls([Call(Variant(CONTIG, 50, wrong, "T"), (0, 1, 0))], fa, tmp_path / "c.vcf.gz")
    with pytest.raises(GenomicsInputError, match=r"\*\.vcf\.gz"):
        write_calls([], fa, tmp_path / "c.vcf")


def test_compare_to_truth_counts(tmp_path, ref):
    fa, R = ref
    alt = lambda p: "T" if R[p] != "T" else "G"  # noqa: E731
    truth = {Variant(CONTIG, 20, R[20], alt(20)): 1,          # SNP het: called het -> TP
             Variant(CONTIG, 40, R[40], alt(40)): 2,          # SNP hom: called het -> FP + FN
             Variant(CONTIG, 60, R[60], alt(60)): 1,          # SNP het: not called -> FN
             Variant(CONTIG, 150, R[150:153], R[150]): 1,     # deletion het -> TP
             Variant(CONTIG, 299, "G", "GA"): 2}              # insertion (left-aligned) hom -> TP
    write_truth_vcf(tmp_path / "truth.vcf.gz", fa, truth, "s1")
    calls = [Call(Variant(CONTIG, 20, R[20], alt(20)), (0.1, 0.8, 0.1)),
             Call(Variant(CONTIG, 40, R[40], alt(40)), (0.1, 0.8, 0.1)),
             Call(Variant(CONTIG, 80, R[80], alt(80)), (0.1, 0.8, 0.1)),      # not in truth -> FP
             Call(Variant(CONTIG, 90, R[90], alt(90)), (0.9, 0.05, 0.05)),    # RefCall: not a variant
             Call(Variant(CONTIG, 150, R[150:153], R[150]), (0.0, 0.9, 0.1)),
             # the same insertion spelled at the right end of the A run: matches after left-alignment
             Call(Variant(CONTIG, 305, "A", "AA"), (0.0, 0.1, 0.9))]
    out = write_calls(calls, fa, tmp_path / "calls.vcf.gz", sample="s1")
    m = compare_to_truth(out, tmp_path / "truth.vcf.gz", fa)
    assert (m["snp_tp"], m["snp_fp"], m["snp_fn"]) == (1, 2, 2)
    assert m["snp_precision"] == pytest.approx(1 / 3) and m["snp_recall"] == pytest.approx(1 / 3)
    assert m["snp_f1"] == pytest.approx(1 / 3)
    assert (m["indel_tp"], m["indel_fp"], m["indel_fn"]) == (2, 0, 0) and m["indel_f1"] == 1.0
    # without the reference the right-shifted insertion no longer matches
    m2 = compare_to_truth(out, tmp_path / "truth.vcf.gz")
    assert (m2["indel_tp"], m2["indel_fp"], m2["indel_fn"]) == (1, 1, 1)
    # identical files score 1
    same = compare_to_truth(tmp_path / "truth.vcf.gz", tmp_path / "truth.vcf.gz", fa)
    assert same["snp_f1"] == 1.0 and same["indel_f1"] == 1.0
