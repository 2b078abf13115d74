"""Calls out as VCF, and SNP/indel F1 against a truth VCF.

    call_variants(predict_fn, "reads.bam", "ref.fa", "calls.vcf.gz")   # model -> indexed VCF
    compare_to_truth("calls.vcf.gz", "truth.vcf.gz")                    # {"snp_f1": ..., ...}

`predict_fn(images, contexts) -> probabilities` is any predictor over pileup images: images
is a (B, 224, 224, 3) uint8 array (`pileup.pileup_image`), contexts the rows' context dicts,
the result a (B, 3) array of probabilities for (hom-ref, het, hom-alt) — the order of the
task's options. The model plugs in here through its option scores.

VCF written: one record per candidate ALT, GT from the most probable genotype, QUAL and
FORMAT/GQ = phred(1 - p(called genotype)) capped at 99, FORMAT/GP the three probabilities,
FILTER `RefCall` for hom-ref calls (kept, as DeepVariant does, so every candidate is
accounted for), `PASS` otherwise; contigs in the header from the reference's .fai.

Matching (`compare_to_truth`): `medmix.data.genomics.compare` — multi-allelics split, indels
left-aligned against the reference, MNPs split into SNPs, genotype-aware counting of every
truth item in the regions; the one comparison `medmix evaluate` uses too.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pysam

from medmix.data.genomics import compare
from medmix.data.genomics.alleles import Variant, record_variants
from medmix.data.genomics.inputs import (GenomicsInputError, Region, intersect_regions, open_fasta,
                                         open_vcf, read_bed, vcf_records)

MAX_QUAL = 99.0
PredictFn = Callable[[np.ndarray, list[dict]], np.ndarray]


@dataclass
class Call:
    """One candidate ALT and the predicted probabilities of (hom-ref, het, hom-alt)."""

    variant: Variant
    probs: Sequence[float]

    @property
    def genotype(self) -> int:
        return int(np.argmax(self.probs))

    @property
    def quality(self) -> float:
        p = float(self.probs[self.genotype])
        return min(MAX_QUAL, -10.0 * math.log10(max(1.0 - p, 1e-10)))


def write_calls(calls: Sequence[Call], ref_fasta: str | Path, out_path: str | Path,
                sample: str = "sample") -> Path:
    """Calls -> bgzipped VCF with a .tbi index; returns the VCF's path (ends in .vcf.gz)."""
    out_path = Path(out_path)
    if not out_path.name.endswith(".vcf.gz"):
        raise GenomicsInputError(f"{out_path}: the calls VCF is bgzipped and indexed; name it *.vcf.gz")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fasta = open_fasta(ref_fasta)
    order = {c: i for i, c in enumerate(fasta.references)}
    header = pysam.VariantHeader()
    for name, length in zip(fasta.references, fasta.lengths):
        header.contigs.add(name, length=length)
    header.add_line(f"##reference=file://{Path(ref_fasta).resolve()}")
    header.add_meta("FILTER", items=[("ID", "RefCall"), ("Description", "Genotype called hom-ref")])
    for fid, num, typ, desc in (("GT", 1, "String", "Genotype"),
                                ("GQ", 1, "Integer", "Genotype quality: phred(1 - p(GT))"),
                                ("GP", "G", "Float", "Genotype probabilities (0/0, 0/1, 1/1)")):
        header.add_meta("FORMAT", items=[("ID", fid), ("Number", num), ("Type", typ), ("Description", desc)])
    header.add_sample(sample)
    ordered = sorted(calls, key=lambda c: (order.get(c.variant.contig, 1 << 30), c.variant.pos,
                                           c.variant.ref, c.variant.alt))
    with pysam.VariantFile(str(out_path), "wz", header=header) as vcf:
        for c in ordered:
            v = c.variant
            if v.contig not in order:
                raise GenomicsInputError(f"call at {v.locus}: contig {v.contig} is not in {ref_fasta}")
            ref_here = fasta.fetch(v.contig, v.pos, v.pos + len(v.ref)).upper()
            if ref_here != v.ref:
                raise GenomicsInputError(f"call at {v.locus}: REF {v.ref} is not the reference "
                                         f"base(s) {ref_here} of {ref_fasta}")
            rec = vcf.new_record(contig=v.contig, start=v.pos, alleles=(v.ref, v.alt))
            gt = c.genotype
            rec.qual = round(c.quality, 2)
            rec.filter.add("RefCall" if gt == 0 else "PASS")
            s = rec.samples[sample]
            s["GT"] = ((0, 0), (0, 1), (1, 1))[gt]
            s["GQ"] = int(round(c.quality))
            s["GP"] = tuple(round(float(p), 4) for p in c.probs)
            vcf.write(rec)
    fasta.close()
    pysam.tabix_index(str(out_path), preset="vcf", force=True)
    return out_path


def _variant_items(path: str | Path, fasta: pysam.FastaFile | None,
                   regions: list[Region] | None) -> dict[Variant, int]:
    """Non-reference genotype items of a VCF, normalised as `compare.items` says."""
    entries: list[tuple[Variant, int | None]] = []
    with open_vcf(path, fasta) as vcf:
        if not len(vcf.header.samples):
            raise GenomicsInputError(f"{path}: no sample column, so no genotypes to compare")
        for region in regions or [None]:
            for rec in vcf_records(vcf, region):
                if fasta is not None and rec.chrom not in fasta.references:
                    raise GenomicsInputError(f"{path}: contig mismatch: {rec.chrom} (record at "
                                             f"{rec.chrom}:{rec.pos}) is not in the reference")
                entries.extend(record_variants(rec, fasta))
    return compare.items(entries)


def compare_to_truth(calls_vcf: str | Path, truth_vcf: str | Path, ref_fasta: str | Path | None = None,
                     regions: list[Region] | None = None, match_genotype: bool = True,
                     confident_bed: str | Path | None = None) -> dict[str, float]:
    """SNP and indel precision/recall/F1 of calls against truth (`medmix.data.genomics.compare`:
    the same normalisation and counting as `medmix evaluate`).

    Returns flat keys: snp_f1, snp_precision, snp_recall, snp_tp, snp_fp, snp_fn, and the same
    for indel (precision/recall NaN when there is nothing to divide by). Without `ref_fasta`
    indels are only trimmed, not left-aligned. `match_genotype=False` counts alleles only (what
    `bcftools isec -c none` on `bcftools norm -m- -a` output counts).
    """
    fasta = open_fasta(ref_fasta) if ref_fasta else None
    if confident_bed:
        bed = read_bed(confident_bed)
        regions = intersect_regions(regions, bed) if regions else bed
    calls = _variant_items(calls_vcf, fasta, regions)
    truth = _variant_items(truth_vcf, fasta, regions)
    return compare.compare(calls, truth, match_genotype)


def call_variants(predict_fn: PredictFn, bam: str | Path, ref: str | Path, out_vcf: str | Path,
                  regions: list[str] | None = None, ccfg=None, pcfg=None, batch_size: int = 64,
                  sample: str | None = None, parallel: str = "auto") -> dict:
    """Candidates of `bam` -> pileups (Ray tasks per region) -> predict_fn in batches -> VCF.

    Returns stats: candidates, calls by genotype, seconds, and the VCF path.
    """
    from medmix.data.genomics.variants import scan
    cands, stats = scan(str(bam), str(ref), None, regions, ccfg, pcfg, encode=False, parallel=parallel)
    t0 = time.perf_counter()
    calls: list[Call] = []
    for i in range(0, len(cands), batch_size):
        batch = cands[i:i + batch_size]
        images = np.stack([c.image for c in batch])
        contexts = [{"locus": c.variant.locus, "chrom": c.variant.contig, "pos": c.variant.pos + 1,
                     "ref": c.variant.ref, "alt": c.variant.alt, "kind": c.variant.kind,
                     "depth": c.depth, "alt_count": c.alt_count} for c in batch]
        probs = np.asarray(predict_fn(images, contexts), dtype=np.float64)
        if probs.shape != (len(batch), 3):
            raise ValueError(f"predict_fn returned shape {probs.shape}; expected ({len(batch)}, 3) "
                             f"probabilities of hom-ref, het, hom-alt")
        calls += [Call(c.variant, p) for c, p in zip(batch, probs)]
    stats["predict_seconds"] = time.perf_counter() - t0
    path = write_calls(calls, ref, out_vcf, sample=sample or Path(bam).name.split(".")[0])
    stats["vcf"] = str(path)
    stats["calls"] = {name: sum(1 for c in calls if c.genotype == g)
                      for g, name in enumerate(("hom_ref", "het", "hom_alt"))}
    return stats
