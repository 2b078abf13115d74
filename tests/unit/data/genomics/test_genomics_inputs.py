"""Malformed BAM/VCF/FASTA inputs: each gets one clear error naming the file and the problem,
from the library functions and from `medmix ingest variants` on the command line."""

from __future__ import annotations

import gzip
import shutil

import pytest
from genomics_helpers import CONTIG, LENGTH, write_bam, write_fasta

from medmix.data.genomics.alleles import Variant
from medmix.data.genomics.inputs import GenomicsInputError, open_bam, open_fasta, open_vcf, parse_regions
from medmix.data.genomics.simulate import write_truth_vcf
from medmix.data.ingest.variants import ingest_variants
from medmix.data.ingest.common import IngestError
from medmix.data.store import ShardStore


@pytest.fixture
def files(tmp_path, reference_seq):
    R = reference_seq
    reads = [dict(name=f"r{i}", start=100 + i, cigar=[(0, 100)], seq=R[100 + i:200 + i]) for i in range(30)]
    fa = write_fasta(tmp_path / "ref.fa", {CONTIG: R})
    bam = write_bam(tmp_path / "reads.bam", {CONTIG: LENGTH}, reads)
    truth = write_truth_vcf(tmp_path / "truth.vcf.gz", fa, {Variant(CONTIG, 150, R[150], "T" if R[150] != "T" else "A"): 1}, "s")
    return tmp_path, fa, bam, truth, R


def test_error_is_an_ingest_error():
    assert issubclass(GenomicsInputError, IngestError) and issubclass(GenomicsInputError, ValueError)


def test_bam_without_index(files):
    d, fa, bam, _, _ = files
    unindexed = d / "noindex.bam"
    shutil.copy(bam, unindexed)
    with pytest.raises(GenomicsInputError, match=r"noindex\.bam: no index \(\.bai or \.csi\)"):
        open_bam(unindexed, open_fasta(fa))


def test_truncated_bam(files):
    d, fa, bam, _, _ = files
    data = bam.read_bytes()
    cut = d / "cut.bam"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(GenomicsInputError, match=r"cut\.bam: cannot read the BAM: it is truncated"):
        open_bam(cut, open_fasta(fa))


def test_not_a_bam(files):
    d, fa, _, _, _ = files
    junk = d / "junk.bam"
    junk.write_bytes(b"hello, not a bam")
    with pytest.raises(GenomicsInputError, match=r"junk\.bam: not a BAM file"):
        open_bam(junk)
    with pytest.raises(GenomicsInputError, match=r"missing\.bam: alignment file \(BAM\) not found"):
        open_bam(d / "missing.bam")


def test_contig_mismatch_between_bam_and_reference(files):
    d, _, bam, _, R = files
    shorter = write_fasta(d / "short.fa", {CONTIG: R[:300]})      # same name, other length
    with pytest.raises(GenomicsInputError, match=r"reads\.bam: contig mismatch: ctg is 400 bp here but "
                                                 r"300 bp in the reference .*short\.fa"):
        open_bam(bam, open_fasta(shorter))
    renamed = write_fasta(d / "chr.fa", {"chrctg": R})             # no contig in common
    with pytest.raises(GenomicsInputError, match=r"contig mismatch .*no contig in common"):
        open_bam(bam, open_fasta(renamed))


def test_bad_fasta(files):
    d = files[0]
    bad = d / "bad.fa"
    bad.write_text("this is not a fasta file\n")
    with pytest.raises(GenomicsInputError, match=r"bad\.fa: not a readable FASTA"):
        open_fasta(bad)
    with pytest.raises(GenomicsInputError, match=r"nope\.fa: reference FASTA not found"):
        open_fasta(d / "nope.fa")


def test_truncated_fasta_shows_as_contig_mismatch(files):
    d, fa, bam, _, R = files
    cut = d / "cut.fa"
    cut.write_text(fa.read_text()[:200])
    with pytest.raises(GenomicsInputError, match=r"contig mismatch: ctg is 400 bp here but \d+ bp .*truncated"):
        open_bam(bam, open_fasta(cut))


def test_truncated_and_mismatched_vcf(files):
    d, fa, bam, truth, R = files
    data = truth.read_bytes()
    cut = d / "cut.vcf.gz"
    cut.write_bytes(data[:len(data) - 40])
    with pytest.raises(GenomicsInputError, match=r"cut\.vcf\.gz: "):
        vcf = open_vcf(cut)
        list(vcf)
    other = write_fasta(d / "other.fa", {CONTIG: R + "ACGT"})
    with pytest.raises(GenomicsInputError, match=r"truth\.vcf\.gz: contig mismatch: ctg is 400 bp"):
        open_vcf(truth, open_fasta(other))


def test_truth_ref_mismatch_names_the_record(files):
    d, fa, bam, _, R = files
    wrong = "A" if R[150] != "A" else "C"
    bad_truth = d / "bad_truth.vcf"
    bad_truth.write_text("##fileformat=VCFv4.2\n##contig=<ID=ctg,length=400>\n"
                         '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                         "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts\n"
                         f"ctg\t151\t.\t{wrong}\tT\t.\t.\t.\tGT\t0/1\n")
    with pytest.raises(IngestError, match=rf"bad_truth\.vcf: REF mismatch at ctg:151: the VCF says {wrong}"):
        ingest_variants(ShardStore(d / "store"), str(bam), str(fa), str(bad_truth), parallel="local")
    assert not (d / "store" / "manifest.json").exists()


def test_regions_are_checked(files):
    _, fa, _, _, _ = files
    f = open_fasta(fa)
    assert [str(r) for r in parse_regions(["ctg:11-20"], f)] == ["ctg:11-20"]
    with pytest.raises(GenomicsInputError, match="contig 'chr9' is not in the reference"):
        parse_regions(["chr9:1-10"], f)
    with pytest.raises(GenomicsInputError, match="outside ctg"):
        parse_regions(["ctg:300-500"], f)


def test_cli_prints_one_clear_line(files, capsys):
    """`medmix ingest variants` on an unindexed BAM: exit 1, one line naming the file."""
    import argparse

    from medmix.cli import _is_user_error
    from medmix.commands.ingest import add_ingest_subparsers
    d, fa, bam, truth, _ = files
    unindexed = d / "plain.bam"
    shutil.copy(bam, unindexed)
    parser = argparse.ArgumentParser(prog="medmix ingest")
    add_ingest_subparsers(parser.add_subparsers(dest="kind", required=True))
    args = parser.parse_args(["variants", "--bam", str(unindexed), "--ref", str(fa), "--truth", str(truth),
                              "--root", str(d / "store"), "--parallel", "local"])
    with pytest.raises(GenomicsInputError) as info:
        args.func(args)
    assert _is_user_error(info.value)
    assert "plain.bam: no index" in str(info.value) and "\n" not in str(info.value)


def test_gzipped_bam_is_not_a_bam(files):
    """Debian ships ex1.bam gzipped again: reading it directly must say what is wrong."""
    d, fa, bam, _, _ = files
    gz = d / "double.bam"
    with open(bam, "rb") as f, gzip.open(gz, "wb") as g:
        g.write(f.read())
    with pytest.raises(GenomicsInputError, match=r"double\.bam: not a BAM file .*not gzipped again"):
        open_bam(gz, open_fasta(fa))


def test_plain_gzip_vcf_reads_like_the_bgzipped_one(files, monkeypatch):
    import tempfile

    from medmix.data.genomics.inputs import gzip_kind
    from medmix.data.genomics.vcf import compare_to_truth
    tmp, fa, _, truth, _ = files
    plain = tmp / "plain.vcf.gz"
    with gzip.open(truth, "rb") as src, gzip.open(plain, "wb") as dst:  # Python's gzip: not BGZF
        shutil.copyfileobj(src, dst)
    assert (gzip_kind(truth), gzip_kind(plain), gzip_kind(fa)) == ("bgzf", "gzip", None)
    scratch = tmp / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with open_vcf(plain, open_fasta(fa)) as a, open_vcf(truth) as b:
        assert [str(r) for r in a] == [str(r) for r in b] != []
    assert list(scratch.iterdir()) == []  # the temporary bgzip copy is gone
    m = compare_to_truth(plain, truth, fa)
    assert m["snp_tp"] == 1 and m["snp_f1"] == 1.0


def test_corrupt_plain_gzip_vcf_and_plain_gzip_fasta_get_one_clear_error(files):
    tmp, fa, _, truth, _ = files
    data = gzip.compress(gzip.decompress(truth.read_bytes()))
    cut = tmp / "cut.vcf.gz"
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(GenomicsInputError, match=r"cut\.vcf\.gz: a gzip file that does not decompress"):
        open_vcf(cut)
    gz = tmp / "ref.fa.gz"
    gz.write_bytes(gzip.compress(fa.read_bytes()))
    with pytest.raises(GenomicsInputError, match=r"ref\.fa\.gz: plain gzip.*bgzip"):
        open_fasta(gz)
