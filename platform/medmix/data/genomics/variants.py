"""Variant candidates from reads: candidate sites, their pileups, truth genotypes.

1. The reference is cut into regions (`region_size` bp), spread over Ray tasks
   (`ingest.common.run_parallel`); each region's work opens the BAM/FASTA/VCF itself through
   pysam and reads its reads once (`pileup.RegionReads`).
2. Candidates: every usable read in the region adds its bases (quality >= min_base_quality)
   to per-position allele counts and its insertions/deletions to per-event counts. A SNP
   allele is a candidate at depth >= min_depth with >= min_alt_count reads and an allele
   fraction >= min_alt_fraction; an indel the same with min_indel_fraction. Indels are
   left-aligned (`alleles.normalize`). Each ALT allele of a site is its own candidate.
3. Each candidate becomes a pileup image (`pileup.py`), labelled with the copies of the ALT
   in the truth genotype (0, 1, 2; absent from truth = 0).

Turning candidates into store rows is `medmix.data.ingest.variants`.

Throughput on the bundled simulation is recorded in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pysam

from medmix.data.genomics.alleles import Variant, normalize, record_variants
from medmix.data.genomics.config import CandidateConfig  # noqa: F401 - its home is pysam-free
from medmix.data.genomics.inputs import (GenomicsInputError, Region, open_bam, open_fasta, open_vcf, parse_regions,
                                         split_regions, vcf_records)
from medmix.data.genomics.pileup import PileupConfig, RegionReads, build_pileup, pileup_image, usable
from medmix.data.images import encode_png
from medmix.data.ingest.common import run_parallel
from medmix.options import validate

_CODE = np.full(256, 4, dtype=np.int64)  # A C G T -> 0..3, anything else (N) -> 4
for _i, _b in enumerate("ACGT"):
    _CODE[ord(_b)] = _CODE[ord(_b.lower())] = _i
_BASES = "ACGTN"


@dataclass
class Candidate:
    variant: Variant
    depth: int
    alt_count: int
    label: int | None = None     # truth genotype: copies of ALT (None: no truth given)
    image: object = None         # PNG bytes (ingest) or a 224x224x3 uint8 array (calling)


@dataclass
class RegionResult:
    region: Region
    candidates: list[Candidate] = field(default_factory=list)
    candidate_seconds: float = 0.0
    pileup_seconds: float = 0.0


def find_candidates(bam: pysam.AlignmentFile | RegionReads, fasta: pysam.FastaFile, region: Region,
                    cfg: CandidateConfig | None = None) -> list[Candidate]:
    """Candidate SNPs and indels with position in `region`, from pileup allele counts."""
    cfg = cfg or CandidateConfig()
    start, length = region.start, region.end - region.start
    keys: list[np.ndarray] = []
    indels: Counter = Counter()
    reads = bam.reads if isinstance(bam, RegionReads) else bam.fetch(region.contig, region.start, region.end)
    for read in reads:
        if not usable(read, cfg.min_mapq) or read.reference_end <= start or read.reference_start >= region.end:
            continue
        seq = np.frombuffer(read.query_sequence.encode("ascii"), dtype=np.uint8)
        quals = read.query_qualities
        quals = np.frombuffer(bytes(quals), dtype=np.uint8) if quals is not None else None
        r, q = read.reference_start, 0
        for op, n in read.cigartuples:
            if op in (0, 7, 8):
                lo, hi = max(r, start), min(r + n, region.end)
                if lo < hi:
                    qs = slice(q + lo - r, q + hi - r)
                    idx = (np.arange(lo, hi) - start) * 5 + _CODE[seq[qs]]
                    if quals is not None:
                        idx = idx[quals[qs] >= cfg.min_base_quality]
                    keys.append(idx)
                r, q = r + n, q + n
            elif op == 1:
                if start <= r - 1 < region.end and n <= cfg.max_indel_length and r > read.reference_start:
                    indels[("I", r - 1, read.query_sequence[q:q + n].upper())] += 1
                q += n
            elif op == 2:
                if start <= r - 1 < region.end and n <= cfg.max_indel_length and r > read.reference_start:
                    indels[("D", r - 1, n)] += 1
                r += n
            elif op == 3:
                r += n
            elif op == 4:
                q += n
    counts = (np.bincount(np.concatenate(keys), minlength=length * 5) if keys
              else np.zeros(length * 5, dtype=np.int64)).reshape(length, 5)
    depth = counts.sum(axis=1)
    ref_seq = fasta.fetch(region.contig, region.start, region.end).upper()
    ref_code = _CODE[np.frombuffer(ref_seq.encode("ascii"), dtype=np.uint8)]
    out: dict[Variant, Candidate] = {}
    for b in range(4):
        alt = counts[:, b]
        ok = ((ref_code != b) & (ref_code < 4) & (depth >= cfg.min_depth) & (alt >= cfg.min_alt_count)
              & (alt >= cfg.min_alt_fraction * np.maximum(depth, 1)))
        for i in np.flatnonzero(ok):
            v = Variant(region.contig, start + int(i), ref_seq[i], _BASES[b])
            out[v] = Candidate(v, int(depth[i]), int(alt[i]))
    merged: Counter = Counter()
    anchor_depth: dict[Variant, int] = {}
    for (kind, anchor, what), n in indels.items():
        if kind == "D":
            ref = fasta.fetch(region.contig, anchor, anchor + 1 + what).upper()
            alt = ref[0]
        else:
            ref = fasta.fetch(region.contig, anchor, anchor + 1).upper()
            alt = ref + what
        v = normalize(fasta, region.contig, anchor, ref, alt)
        merged[v] += n
        anchor_depth[v] = max(anchor_depth.get(v, 0), int(depth[anchor - start]))
    for v, n in merged.items():
        d = max(anchor_depth[v], n)
        if d >= cfg.min_depth and n >= cfg.min_alt_count and n >= cfg.min_indel_fraction * d:
            out[v] = Candidate(v, d, n)
    return [out[v] for v in sorted(out)]


def load_truth(vcf: pysam.VariantFile, fasta: pysam.FastaFile, region: Region,
               pad: int = 100) -> dict[Variant, int]:
    """Normalised truth variants near `region` -> copies of the ALT (0, 1, 2)."""
    path = vcf.filename.decode() if isinstance(vcf.filename, bytes) else vcf.filename
    if not len(vcf.header.samples):
        raise GenomicsInputError(f"{path}: the truth VCF has no sample column, so no genotypes")
    length = fasta.get_reference_length(region.contig)
    wide = Region(region.contig, max(0, region.start - pad), min(length, region.end + pad))
    truth: dict[Variant, int] = {}
    for rec in vcf_records(vcf, wide):
        if rec.chrom not in fasta.references:
            raise GenomicsInputError(f"{path}: contig mismatch: record at {rec.chrom}:{rec.pos} "
                                     f"names a contig the reference does not have")
        ref_here = fasta.fetch(rec.chrom, rec.start, rec.start + len(rec.ref)).upper()
        if ref_here != rec.ref.upper():
            raise GenomicsInputError(
                f"{path}: REF mismatch at {rec.chrom}:{rec.pos}: the VCF says {rec.ref}, the "
                f"reference has {ref_here}; is the truth for another reference build?")
        for v, copies in record_variants(rec, fasta):
            if copies:
                truth[v] = max(truth.get(v, 0), copies)
    return truth


def process_region(region: Region, bam_path: str, ref_path: str, truth_path: str | None,
                   ccfg: CandidateConfig, pcfg: PileupConfig, encode: bool = True) -> RegionResult:
    """One unit of parallel work: candidates of `region`, their pileups and truth labels."""
    fasta = open_fasta(ref_path)
    bam = open_bam(bam_path)
    result = RegionResult(region)
    try:
        t0 = time.perf_counter()
        reads = RegionReads(bam, region.contig, region.start - pcfg.width, region.end + pcfg.width,
                            min(ccfg.min_mapq, pcfg.min_mapq))
        cands = find_candidates(reads, fasta, region, ccfg)
        result.candidate_seconds = time.perf_counter() - t0
        truth = None
        if truth_path:
            with open_vcf(truth_path) as vcf:
                truth = load_truth(vcf, fasta, region)
        t0 = time.perf_counter()
        for c in cands:
            image = pileup_image(build_pileup(reads, fasta, c.variant, pcfg))
            c.image = encode_png(image) if encode else image
            c.label = None if truth is None else truth.get(c.variant, 0)
        result.pileup_seconds = time.perf_counter() - t0
    except OSError as exc:  # htslib: a corrupt block in the middle of the file
        raise GenomicsInputError(f"{bam_path}: cannot read the alignments of {region} ({exc}); "
                                 f"the BAM is truncated or corrupt") from exc
    finally:
        bam.close()
        fasta.close()
    result.candidates = cands
    return result


def plan_regions(bam_path: str, ref_path: str, truth_path: str | None, regions: list[str] | None,
                 ccfg: CandidateConfig, pcfg: PileupConfig) -> list[Region]:
    """Check every input once in the driver, then cut the work into `region_size` pieces."""
    validate(ccfg)
    validate(pcfg)
    fasta = open_fasta(ref_path)
    parsed = parse_regions(regions, fasta)
    with open_bam(bam_path, fasta, contigs=sorted({r.contig for r in parsed})) as bam:
        bam_contigs = set(bam.references)
    missing = sorted({r.contig for r in parsed} - bam_contigs)
    if regions and missing:
        raise GenomicsInputError(f"{bam_path}: contig mismatch: the BAM has no {', '.join(missing)} "
                                 f"(asked for by --regions)")
    if truth_path:
        open_vcf(truth_path, fasta).close()
    fasta.close()
    return split_regions([r for r in parsed if r.contig in bam_contigs], ccfg.region_size)


def scan(bam_path: str, ref_path: str, truth_path: str | None = None,
         regions: list[str] | None = None, ccfg: CandidateConfig | None = None,
         pcfg: PileupConfig | None = None, encode: bool = True, parallel: str = "auto",
         progress: bool = False) -> tuple[list[Candidate], dict]:
    """Candidates of every region with their pileups (and labels). Returns (candidates, stats)."""
    ccfg, pcfg = ccfg or CandidateConfig(), pcfg or PileupConfig()
    work = plan_regions(bam_path, ref_path, truth_path, regions, ccfg, pcfg)
    t0 = time.perf_counter()
    fn = partial(process_region, bam_path=str(bam_path), ref_path=str(ref_path),
                 truth_path=str(truth_path) if truth_path else None, ccfg=ccfg, pcfg=pcfg, encode=encode)
    results = list(run_parallel(fn, work, desc="variants", parallel=parallel, progress=progress))
    wall = time.perf_counter() - t0
    cands = _merge(results, ref_path)
    stats = {"regions": len(work), "bases": sum(r.end - r.start for r in work),
             "candidates": len(cands), "wall_seconds": wall,
             "candidate_seconds": sum(r.candidate_seconds for r in results),
             "pileup_seconds": sum(r.pileup_seconds for r in results)}
    stats["candidates_per_s"] = len(cands) / max(stats["candidate_seconds"], 1e-9)
    stats["pileups_per_s"] = len(cands) / max(stats["pileup_seconds"], 1e-9)
    return cands, stats


def _merge(results: list[RegionResult], ref_path: str) -> list[Candidate]:
    """Candidates of all regions in reference order; an indel left-aligned across a region
    border can come from both sides: keep the one with more ALT reads."""
    seen: dict[Variant, Candidate] = {}
    for res in results:
        for c in res.candidates:
            if c.variant not in seen or c.alt_count > seen[c.variant].alt_count:
                seen[c.variant] = c
    with pysam.FastaFile(str(ref_path)) as fa:
        order = {c: i for i, c in enumerate(fa.references)}
    return [seen[v] for v in sorted(seen, key=lambda v: (order.get(v.contig, 1 << 30), v))]
