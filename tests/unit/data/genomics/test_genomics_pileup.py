"""The DeepVariant-style pileup of a BAM we wrote read by read: every channel at the read and
position level, for a SNP, a deletion and an insertion, and the 224 x 224 image layout."""

from __future__ import annotations

import numpy as np
import pysam
import pytest
from genomics_helpers import CONTIG, LENGTH, other_base, write_bam, write_fasta

from medmix.data.genomics.alleles import Variant, normalize
from medmix.data.genomics.inputs import Region
from medmix.data.genomics.pileup import (BASE_VALUE, PileupConfig, RegionReads, build_pileup,
                                         image_to_tensor, pileup_image)
from medmix.data.genomics.variants import CandidateConfig, find_candidates

SNP_POS = 200
WIN = SNP_POS - 110  # first reference position of the window


def col(p: int) -> int:
    return p - WIN


def base(b: str) -> int:
    return int(BASE_VALUE[ord(b)])


@pytest.fixture
def hand_bam(tmp_path, reference_seq):
    R = reference_seq
    alt = other_base(R[SNP_POS])
    snp_seq = R[150:SNP_POS] + alt + R[SNP_POS + 1:250]
    snp_qual = [20] * 100
    snp_qual[SNP_POS - 150] = 35
    reads = [
        dict(name="r1_snp_fwd", start=150, cigar=[(0, 100)], seq=snp_seq, qual=snp_qual, mapq=60),
        dict(name="r2_ref_rev", start=160, cigar=[(0, 100)], seq=R[160:260], qual=40, mapq=20, reverse=True),
        dict(name="r3_del", start=170, cigar=[(0, 30), (2, 3), (0, 67)], seq=R[170:200] + R[203:270],
             qual=25, mapq=50),
        dict(name="r4_ins_rev", start=155, cigar=[(0, 40), (1, 2), (0, 58)],
             seq=R[155:195] + "TT" + R[195:253], qual=36, mapq=60, reverse=True),
        dict(name="r5_clip", start=199, cigar=[(4, 5), (0, 95)], seq="AAAAA" + R[199:294], qual=20),
        dict(name="r6_secondary", start=180, cigar=[(0, 100)], seq=R[180:280], flag=0x100),
        dict(name="r7_mapq0", start=185, cigar=[(0, 100)], seq=R[185:285], mapq=0),
        dict(name="r8_elsewhere", start=300, cigar=[(0, 50)], seq=R[300:350]),
    ]
    fa = write_fasta(tmp_path / "ref.fa", {CONTIG: R})
    bam = write_bam(tmp_path / "hand.bam", {CONTIG: LENGTH}, reads)
    with pysam.AlignmentFile(str(bam)) as b, pysam.FastaFile(str(fa)) as f:
        yield b, f, R, alt


def test_snp_pileup_channels_per_read_and_position(hand_bam):
    bam, fasta, R, alt = hand_bam
    t = build_pileup(bam, fasta, Variant(CONTIG, SNP_POS, R[SNP_POS], alt))
    assert t.shape == (100, 221, 6) and t.dtype == np.uint8
    # rows: usable reads overlapping 200, by start: r1 (150), r4 (155), r2 (160), r3 (170), r5 (199)
    r1, r4, r2, r3, r5 = t[0], t[1], t[2], t[3], t[4]
    assert not t[5:].any(), "secondary, MAPQ-0 and non-overlapping reads must not appear"

    # r1: forward, MAPQ 60, carries the ALT (Q35) at 200; covers 150..249
    assert r1[col(SNP_POS), 0] == base(alt)
    assert r1[col(150), 0] == base(R[150]) and r1[col(249), 0] == base(R[249])
    assert not r1[col(149)].any() and not r1[col(250)].any()
    assert r1[col(SNP_POS), 1] == 222 and r1[col(160), 1] == 127       # round(254*35/40), 254*20/40
    assert set(r1[col(150):col(250), 2]) == {254}                       # MAPQ 60
    assert set(r1[col(150):col(250), 3]) == {70}                        # forward
    assert set(r1[col(150):col(250), 4]) == {254}                       # supports the ALT
    assert r1[col(SNP_POS), 5] == 254 and r1[col(199), 5] == 50 and r1[col(201), 5] == 50

    # r2: reverse, MAPQ 20, reference base at 200
    assert r2[col(SNP_POS), 0] == base(R[SNP_POS]) and r2[col(SNP_POS), 5] == 50
    assert r2[col(SNP_POS), 1] == 254 and r2[col(SNP_POS), 2] == 85     # Q40; round(254*20/60)
    assert r2[col(SNP_POS), 3] == 240 and r2[col(SNP_POS), 4] == 152
    assert not r2[col(159)].any() and r2[col(259), 0] == base(R[259])

    # r3: deletion of 200..202 -> base 0, differs 254, quality of the base before (Q25 -> 159)
    for p in (200, 201, 202):
        assert list(r3[col(p)]) == [0, 159, 212, 70, 152, 254]
    assert r3[col(199), 0] == base(R[199]) and r3[col(199), 5] == 50
    assert r3[col(203), 0] == base(R[203]) and r3[col(203), 5] == 50

    # r4: insertion after 194 -> the anchor column differs; reverse; Q36 -> 229
    assert r4[col(194), 5] == 254 and r4[col(194), 0] == base(R[194])
    assert r4[col(195), 5] == 50 and r4[col(195), 0] == base(R[195])
    assert r4[col(SNP_POS), 1] == 229 and r4[col(SNP_POS), 3] == 240

    # r5: 5 soft-clipped bases are not drawn; the read starts at 199
    assert not r5[col(198)].any() and r5[col(199), 0] == base(R[199])


def test_deletion_and_insertion_support_channel(hand_bam):
    bam, fasta, R, _ = hand_bam
    deletion = Variant(CONTIG, 199, R[199:203], R[199])
    t = build_pileup(bam, fasta, deletion)
    support = t[:5, 110, 4]  # the candidate's own column (its window starts at 199 - 110)
    assert list(support) == [152, 152, 152, 254, 152]  # only r3 (row 3) carries the deletion
    insertion = Variant(CONTIG, 194, R[194], R[194] + "TT")
    t = build_pileup(bam, fasta, insertion)
    assert list(t[:5, 110, 4]) == [152, 254, 152, 152, 0]  # r1, r4 (the insertion), r2, r3; r5 starts later
    assert t[1, 110, 5] == 254                              # the anchor of r4's insertion differs


def test_image_layout_pads_without_rescaling(hand_bam):
    bam, fasta, R, alt = hand_bam
    t = build_pileup(bam, fasta, Variant(CONTIG, SNP_POS, R[SNP_POS], alt))
    img = pileup_image(t)
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    assert np.array_equal(img[12:112, 1:222], t[..., :3])    # channels 0-2 on top
    assert np.array_equal(img[112:212, 1:222], t[..., 3:])   # channels 3-5 below
    assert not img[:12].any() and not img[212:].any() and not img[:, :1].any() and not img[:, 222:].any()
    assert np.array_equal(image_to_tensor(img), t)


def test_reference_rows_and_region_reads_match(hand_bam):
    bam, fasta, R, alt = hand_bam
    v = Variant(CONTIG, SNP_POS, R[SNP_POS], alt)
    t = build_pileup(bam, fasta, v, PileupConfig(ref_rows=5))
    assert list(t[0, col(SNP_POS)]) == [base(R[SNP_POS]), 254, 254, 70, 152, 50]
    assert np.array_equal(t[4], t[0]) and t[5, col(SNP_POS), 0] == base(alt)
    # the region cache gives the same pileup as per-candidate fetches
    cached = RegionReads(bam, CONTIG, 0, LENGTH, 5)
    assert np.array_equal(build_pileup(cached, fasta, v), build_pileup(bam, fasta, v))


def test_many_reads_are_downsampled_deterministically(tmp_path, reference_seq):
    R = reference_seq
    reads = [dict(name=f"r{i:03d}", start=150 + i % 40, cigar=[(0, 100)], seq=R[150 + i % 40:250 + i % 40])
             for i in range(150)]
    fa = write_fasta(tmp_path / "ref.fa", {CONTIG: R})
    bam_path = write_bam(tmp_path / "deep.bam", {CONTIG: LENGTH}, reads)
    with pysam.AlignmentFile(str(bam_path)) as bam, pysam.FastaFile(str(fa)) as fasta:
        v = Variant(CONTIG, SNP_POS, R[SNP_POS], other_base(R[SNP_POS]))
        a, b = build_pileup(bam, fasta, v), build_pileup(bam, fasta, v)
    assert np.array_equal(a, b)
    assert (a[:, col(SNP_POS), 2] > 0).all()  # all 100 rows hold a read


def test_candidates_from_allele_counts(tmp_path, reference_seq):
    R = reference_seq
    alt = other_base(R[200])
    reads = []
    for i in range(20):  # 8 of 20 reads carry the SNP at 200
        s = 150 + i
        seq = R[s:s + 100]
        if i < 8:
            seq = seq[:200 - s] + alt + seq[201 - s:]
        if i == 10:  # one lone mismatch at 220: below min_alt_count
            seq = seq[:220 - s] + other_base(R[220]) + seq[221 - s:]
        reads.append(dict(name=f"s{i}", start=s, cigar=[(0, 100)], seq=seq))
    for i in range(20):  # 6 of 20 reads carry a 2 bp deletion after 299
        s = 250 + i
        if i < 6:
            reads.append(dict(name=f"d{i}", start=s, cigar=[(0, 300 - s), (2, 2), (0, 98 - (300 - s))],
                              seq=R[s:300] + R[302:s + 100]))
        else:
            reads.append(dict(name=f"d{i}", start=s, cigar=[(0, 100)], seq=R[s:s + 100]))
    fa = write_fasta(tmp_path / "ref.fa", {CONTIG: R})
    bam_path = write_bam(tmp_path / "c.bam", {CONTIG: LENGTH}, reads)
    region = Region(CONTIG, 0, LENGTH)
    with pysam.AlignmentFile(str(bam_path)) as bam, pysam.FastaFile(str(fa)) as fasta:
        found = find_candidates(bam, fasta, region)
        deletion = normalize(fasta, CONTIG, 299, R[299:302], R[299])
        by_variant = {c.variant: c for c in found}
        assert set(by_variant) == {Variant(CONTIG, 200, R[200], alt), deletion}
        snp = by_variant[Variant(CONTIG, 200, R[200], alt)]
        assert (snp.depth, snp.alt_count) == (20, 8)
        assert by_variant[deletion].alt_count == 6
        strict = find_candidates(bam, fasta, region, CandidateConfig(min_alt_fraction=0.5,
                                                                      min_indel_fraction=0.5))
        assert strict == []
        # the cached-reads path finds the same
        assert [c.variant for c in find_candidates(RegionReads(bam, CONTIG, 0, LENGTH, 5), fasta, region)] \
            == [c.variant for c in found]


def test_normalize_left_aligns_indels(tmp_path):
    fa = write_fasta(tmp_path / "n.fa", {"c": "TTGAAAACTT"})
    with pysam.FastaFile(str(fa)) as fasta:
        # an A inserted after the last A of the run goes to the run's left anchor (G at 2)
        assert normalize(fasta, "c", 6, "A", "AA") == Variant("c", 2, "G", "GA")
        # deleting one A of the run: same
        assert normalize(fasta, "c", 5, "AA", "A") == Variant("c", 2, "GA", "G")
        # SNPs and shared suffixes
        assert normalize(fasta, "c", 3, "A", "C") == Variant("c", 3, "A", "C")
        assert normalize(fasta, "c", 2, "GAAAAC", "GAAC") == Variant("c", 2, "GAA", "G")
