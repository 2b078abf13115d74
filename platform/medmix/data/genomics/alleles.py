"""Variant alleles: one representation for candidates, truth records and calls.

A `Variant` is one ALT allele at a 0-based anchor position. Candidates, truth VCF records and
calls are all brought to the same normal form before they are compared — indels left-aligned
against the reference and trimmed to one shared anchor base (what `bcftools norm` and vt do)
— so an insertion that an aligner placed at the right end of a repeat still matches the
left-aligned truth record.
"""

from __future__ import annotations

from dataclasses import dataclass

import pysam


@dataclass(frozen=True, order=True)
class Variant:
    contig: str
    pos: int       # 0-based position of REF's first base
    ref: str
    alt: str

    @property
    def kind(self) -> str:
        """`snp` when REF and ALT have equal length (SNVs and MNPs), else `indel`."""
        return "snp" if len(self.ref) == len(self.alt) else "indel"

    @property
    def locus(self) -> str:
        """`chr1:1000 A>G` with a 1-based position: the task's `locus` context field."""
        return f"{self.contig}:{self.pos + 1} {self.ref}>{self.alt}"


def normalize(fasta: pysam.FastaFile | None, contig: str, pos: int, ref: str, alt: str) -> Variant:
    """Left-align and trim (pos 0-based). Without a FASTA only trimming is done."""
    ref, alt = ref.upper(), alt.upper()
    if ref == alt:
        return Variant(contig, pos, ref, alt)
    # shift left while both alleles end in the same base (needs the preceding reference base)
    while True:
        changed = False
        if ref and alt and ref[-1] == alt[-1] and not (len(ref) == 1 and len(alt) == 1):
            ref, alt = ref[:-1], alt[:-1]
            changed = True
        if (not ref or not alt) and pos > 0 and fasta is not None:
            base = fasta.fetch(contig, pos - 1, pos).upper()
            ref, alt, pos = base + ref, base + alt, pos - 1
            changed = True
        elif not ref or not alt:
            break
        if not changed:
            break
    # trim a shared prefix, keeping one anchor base
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    return Variant(contig, pos, ref, alt)


def genotype_count(gt: tuple | None, allele_index: int) -> int | None:
    """How many copies of allele `allele_index` a GT tuple carries (None if GT is missing)."""
    if gt is None or all(a is None for a in gt):
        return None
    return min(2, sum(1 for a in gt if a == allele_index))


def record_variants(rec: pysam.VariantRecord, fasta: pysam.FastaFile | None,
                    sample: int | str = 0) -> list[tuple[Variant, int | None]]:
    """A VCF record -> (normalised Variant, copies of that ALT in the sample's GT) per ALT.

    Symbolic and missing ALTs (`<*>`, `<DEL>`, `.`, `*`) are skipped.
    """
    gt = None
    if len(rec.samples):
        gt = rec.samples[sample].get("GT")
    out = []
    for i, alt in enumerate(rec.alts or (), start=1):
        if not alt or alt.startswith("<") or alt in (".", "*") or "[" in alt or "]" in alt:
            continue
        out.append((normalize(fasta, rec.chrom, rec.start, rec.ref, alt), genotype_count(gt, i)))
    return out
