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


def test_allele_counts_agree_with_bcftools_norm_and_isec(tmp_path, ref):
    """bcftools norm -m- -a (split, atomise, left-align) + isec -c none, on the same hand-made
    calls and truth, counts the same allele-level TP/FP/FN as the medmix comparison."""
    from pysam import bcftools
    fa, R = ref
    third = next(b for b in "ACGT" if b not in (R[70], alt(R[70])))
    truth = {Variant(CONTIG, 20, R[20:22], alt(R[20]) + alt(R[21])): 1,   # an MNP
             Variant(CONTIG, 70, R[70], alt(R[70])): 1, Variant(CONTIG, 70, R[70], third): 1,  # 1/2 below
             Variant(CONTIG, 299, "G", "GA"): 2,                             # left-aligned insertion
             Variant(CONTIG, 150, R[150:153], R[150]): 1}                    # missed deletion
    calls = [Call(Variant(CONTIG, 20, R[20], alt(R[20])), (0, 1, 0)),        # the MNP as two SNPs
             Call(Variant(CONTIG, 21, R[21], alt(R[21])), (0, 1, 0)),
             Call(Variant(CONTIG, 70, R[70], alt(R[70])), (0, 1, 0)),
             Call(Variant(CONTIG, 305, "A", "AA"), (0, 0, 1)),                # right-shifted spelling
             Call(Variant(CONTIG, 90, R[90], alt(R[90])), (0, 1, 0))]         # not in truth
    truth_vcf = write_truth_vcf(tmp_path / "truth.vcf.gz", fa, {v: g for v, g in truth.items()
                                                                 if v.pos != 70}, "s1")
    # the two alleles at 70 as one multi-allelic record (GT 1/2), as published truth sets do
    with pysam.VariantFile(str(truth_vcf)) as src, \
            pysam.VariantFile(str(tmp_path / "t2.vcf.gz"), "wz", header=src.header) as out:
        done = False
        for rec in src:
            if rec.pos > 71 and not done:
                multi = out.new_record(contig=CONTIG, start=70, alleles=(R[70], alt(R[70]), third))
                multi.samples["s1"]["GT"] = (1, 2)
                out.write(multi)
                done = True
            out.write(rec)
    pysam.tabix_index(str(tmp_path / "t2.vcf.gz"), preset="vcf", force=True)
    calls_vcf = write_calls(calls, fa, tmp_path / "calls.vcf.gz", sample="s1")
    ours = compare_to_truth(calls_vcf, tmp_path / "t2.vcf.gz", fa, match_genotype=False)

    def norm(src, name):
        out = str(tmp_path / name)
        bcftools.norm("-m-", "-a", "-f", str(fa), "-Oz", "-o", out, str(src), catch_stdout=False)
        pysam.tabix_index(out, preset="vcf", force=True)
        return out + ".gz" if not out.endswith(".gz") else out
    c, t = norm(calls_vcf, "c.norm.vcf.gz"), norm(tmp_path / "t2.vcf.gz", "t.norm.vcf.gz")
    isec = tmp_path / "isec"
    bcftools.isec("-c", "none", "-p", str(isec), c, t, catch_stdout=False)
    count = lambda f: sum(1 for x in open(isec / f) if not x.startswith("#"))  # noqa: E731
    fp, fn, tp = count("0000.vcf"), count("0001.vcf"), count("0002.vcf")
    assert (tp, fp, fn) == (ours["snp_tp"] + ours["indel_tp"], ours["snp_fp"] + ours["indel_fp"],
                            ours["snp_fn"] + ours["indel_fn"])
    assert (ours["snp_tp"], ours["snp_fp"], ours["snp_fn"]) == (3, 1, 1)      # 70's second allele missed
    assert (ours["indel_tp"], ours["indel_fp"], ours["indel_fn"]) == (1, 0, 1)


def test_confident_bed_limits_both_sides_and_a_bad_bed_line_is_named(tmp_path, ref):
    from medmix.data.genomics.inputs import GenomicsInputError
    fa, R = ref
    truth = {Variant(CONTIG, 20, R[20], alt(R[20])): 1, Variant(CONTIG, 60, R[60], alt(R[60])): 1}
    write_truth_vcf(tmp_path / "truth.vcf.gz", fa, truth, "s1")
    calls = write_calls([Call(Variant(CONTIG, 20, R[20], alt(R[20])), (0, 1, 0)),
                         Call(Variant(CONTIG, 90, R[90], alt(R[90])), (0, 1, 0))], fa,
                        tmp_path / "c.vcf.gz", sample="s1")
    everywhere = compare_to_truth(calls, tmp_path / "truth.vcf.gz", fa)
    assert (everywhere["snp_tp"], everywhere["snp_fp"], everywhere["snp_fn"]) == (1, 1, 1)
    (tmp_path / "conf.bed").write_text(f"# confident\n{CONTIG}\t0\t30\n{CONTIG}\t25\t50\n")
    inside = compare_to_truth(calls, tmp_path / "truth.vcf.gz", fa, confident_bed=tmp_path / "conf.bed")
    assert (inside["snp_tp"], inside["snp_fp"], inside["snp_fn"]) == (1, 0, 0)   # 60 and 90 outside
    (tmp_path / "bad.bed").write_text(f"{CONTIG}\t0\t30\n{CONTIG}\tten\t50\n")
    with pytest.raises(GenomicsInputError, match=r"bad\.bed: line 2: start 'ten'"):
        compare_to_truth(calls, tmp_path / "truth.vcf.gz", fa, confident_bed=tmp_path / "bad.bed")
