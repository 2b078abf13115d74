"""Open BAM, FASTA and VCF inputs through pysam, checking them first.

Every problem a user can cause with a file (missing, not the format it claims, truncated, no
index, a contig named or sized differently from the reference, a VCF REF that is not the
reference base) raises `GenomicsInputError` with the file's path and what to do, instead of
an htslib message from deep inside a worker.

    fasta = open_fasta("ref.fa")
    bam = open_bam("reads.bam", fasta)        # index + contigs checked against the FASTA
    regions = parse_regions(["chr1:1-5000"], fasta)
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pysam

from medmix.data.ingest.common import IngestError


log = logging.getLogger(__name__)


class GenomicsInputError(IngestError):
    """A BAM/FASTA/VCF input that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Region:
    """A 0-based half-open interval on one contig."""

    contig: str
    start: int
    end: int

    def __str__(self) -> str:  # samtools style: 1-based inclusive
        return f"{self.contig}:{self.start + 1}-{self.end}"


def _require_file(path: str | os.PathLike, what: str) -> str:
    p = Path(path)
    if not p.exists():
        raise GenomicsInputError(f"{p}: {what} not found")
    if not p.is_file():
        raise GenomicsInputError(f"{p}: {what} is not a regular file")
    if p.stat().st_size == 0:
        raise GenomicsInputError(f"{p}: {what} is empty")
    return str(p)


def open_fasta(path: str | os.PathLike) -> pysam.FastaFile:
    """The reference, with its .fai (built next to it by pysam when missing)."""
    path = _require_file(path, "reference FASTA")
    if gzip_kind(path) == "gzip":
        name = Path(path).name
        raise GenomicsInputError(f"{path}: plain gzip, which cannot be indexed for random access: "
                                 f"`gunzip -c {name} | bgzip > {name.removesuffix('.gz')}.bgz.gz` "
                                 f"(or decompress it) and pass that file")
    try:
        fasta = pysam.FastaFile(path)
    except (OSError, ValueError) as exc:
        hint = ("" if Path(path + ".fai").exists() or os.access(Path(path).parent, os.W_OK)
                else " (and its folder is not writable, so no .fai could be built next to it)")
        raise GenomicsInputError(f"{path}: not a readable FASTA file{hint}: {exc}. Expected "
                                 f"'>name' lines followed by sequence lines") from exc
    if not fasta.references:
        raise GenomicsInputError(f"{path}: the FASTA holds no sequence")
    return fasta


def open_bam(path: str | os.PathLike, fasta: pysam.FastaFile | None = None,
             contigs: list[str] | None = None) -> pysam.AlignmentFile:
    """A coordinate-indexed BAM/CRAM whose contigs agree with the reference.

    Args:
        fasta: check the BAM header's contigs against it (name and length).
        contigs: only these contigs must agree (default: every contig both files name).
    """
    path = _require_file(path, "alignment file (BAM)")
    try:
        bam = pysam.AlignmentFile(path, "rc" if path.endswith(".cram") else "rb",
                                  reference_filename=fasta.filename.decode() if fasta is not None
                                  and path.endswith(".cram") else None)
    except (OSError, ValueError) as exc:
        if "EOF" in str(exc) or "truncated" in str(exc):
            raise GenomicsInputError(f"{path}: cannot read the BAM: it is truncated ({exc}); "
                                     f"copy or re-create it") from exc
        raise GenomicsInputError(f"{path}: not a BAM file ({exc}); a BAM is BGZF-compressed "
                                 f"binary SAM (not SAM text, not gzipped again)") from exc
    if not bam.references:
        raise GenomicsInputError(f"{path}: the BAM header lists no reference sequences (@SQ); "
                                 f"reads must be aligned to a reference")
    if not bam.has_index():
        raise GenomicsInputError(f"{path}: no index (.bai or .csi) next to it; create one with "
                                 f"`samtools index {path}` or python -c \"import pysam; "
                                 f"pysam.index('{path}')\"")
    if fasta is not None:
        check_contigs(path, dict(zip(bam.references, bam.lengths)), fasta, contigs)
    return bam


def check_contigs(path: str, named: dict[str, int], fasta: pysam.FastaFile,
                  contigs: list[str] | None = None) -> None:
    """Contig names and lengths of a BAM/VCF header must match the reference FASTA."""
    ref = dict(zip(fasta.references, fasta.lengths))
    fa = fasta.filename.decode() if isinstance(fasta.filename, bytes) else fasta.filename
    shared = [c for c in named if c in ref]
    if not shared:
        hint = ""
        if any(("chr" + c) in ref or c.removeprefix("chr") in ref for c in named):
            hint = " (one uses 'chr' prefixes and the other does not)"
        raise GenomicsInputError(
            f"{path}: contig mismatch with the reference {fa}: no contig in common{hint}; "
            f"{Path(path).name} has {', '.join(list(named)[:5])}, the FASTA has "
            f"{', '.join(list(ref)[:5])}")
    for name in contigs or shared:
        if name not in named:
            continue
        if name not in ref:
            raise GenomicsInputError(f"{path}: contig mismatch: {name!r} is not in the reference "
                                     f"{fa} (reference contigs: {', '.join(list(ref)[:8])})")
        if named[name] and named[name] != ref[name]:
            raise GenomicsInputError(
                f"{path}: contig mismatch: {name} is {named[name]} bp here but {ref[name]} bp in "
                f"the reference {fa}; the reads were aligned to another reference build, or the "
                f"FASTA is truncated")


def gzip_kind(path: str | os.PathLike) -> str | None:
    """"bgzf" (blocked gzip, what htslib seeks in), "gzip" (plain gzip) or None (not gzip)."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] != b"\x1f\x8b":
        return None
    # BGZF: the FEXTRA flag and a 'BC' subfield first in the extra field (SAM spec, 4.1)
    return "bgzf" if len(head) >= 14 and head[3] & 4 and head[12:14] == b"BC" else "gzip"


def _bgzip_copy(path: str) -> str:
    """A plain-gzip VCF recompressed to BGZF in a temporary folder (same file name, so pysam's
    messages still name it); the caller unlinks it once opened."""
    folder = tempfile.mkdtemp(prefix="medmix-bgzip-")
    out = os.path.join(folder, Path(path).name)
    try:
        with gzip.open(path, "rb") as src, pysam.BGZFile(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError, zlib.error) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise GenomicsInputError(f"{path}: a gzip file that does not decompress ({exc}); the file "
                                 f"is truncated or corrupt: download or compress it again "
                                 f"(`bgzip {Path(path).name.removesuffix('.gz')}`)") from exc
    return out


def open_vcf(path: str | os.PathLike, fasta: pysam.FastaFile | None = None) -> pysam.VariantFile:
    """A VCF/BCF (plain, bgzipped or plain-gzipped); contigs in its header are checked against
    the FASTA. A plain-gzip VCF (htslib cannot seek in one) is recompressed to bgzip in a
    temporary file first, read by scanning (it has no index), and a log line says how to
    bgzip it once instead."""
    path = _require_file(path, "VCF")
    copy = None
    if gzip_kind(path) == "gzip":
        log.warning("%s: plain gzip, not bgzip: recompressing it to a temporary bgzip file for "
                    "this read; `gunzip -c %s | bgzip > %s.bgz.vcf.gz` (and `tabix -p vcf`) once "
                    "saves that work", path, path, Path(path).name.split(".")[0])
        copy = _bgzip_copy(path)
    try:
        vcf = pysam.VariantFile(copy or path)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise GenomicsInputError(f"{path}: not a readable VCF ({exc}); a .vcf.gz must be gzip or "
                                 f"bgzip compressed and complete") from exc
    finally:
        if copy:  # open: the file lives on until pysam closes it
            shutil.rmtree(os.path.dirname(copy), ignore_errors=True)
    if fasta is not None and vcf.header.contigs:
        named = {c: (vcf.header.contigs[c].length or 0) for c in vcf.header.contigs}
        check_contigs(path, named, fasta)
    return vcf


def vcf_records(vcf: pysam.VariantFile, region: Region | None = None):
    """Records of one region: by the index when there is one, else by scanning the file."""
    path = vcf.filename.decode() if isinstance(vcf.filename, bytes) else vcf.filename
    try:
        if region is not None and vcf.index is not None:
            if region.contig not in vcf.header.contigs:
                return
            yield from vcf.fetch(region.contig, region.start, region.end)
            return
        for rec in vcf:
            if region is None or (rec.chrom == region.contig and region.start <= rec.start < region.end):
                yield rec
    except (OSError, ValueError) as exc:
        raise GenomicsInputError(f"{path}: unreadable record ({exc}); the file is truncated or "
                                 f"malformed") from exc


def read_bed(path: str | os.PathLike) -> list[Region]:
    """A BED file (0-based, half-open; e.g. a truth set's confident regions) -> Regions, sorted and
    merged; a malformed line is an error naming the file, the line and the column."""
    path = _require_file(path, "BED")
    out: list[Region] = []
    opener = gzip.open if gzip_kind(path) else open
    with opener(path, "rt") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3:
                raise GenomicsInputError(f"{path}: line {n}: {len(cols)} tab-separated column(s); "
                                         f"BED needs chrom, start, end")
            try:
                start, end = int(cols[1]), int(cols[2])
            except ValueError:
                raise GenomicsInputError(f"{path}: line {n}: start {cols[1]!r} / end {cols[2]!r} "
                                         f"are not integers") from None
            if not 0 <= start < end:
                raise GenomicsInputError(f"{path}: line {n}: interval {start}-{end} is empty or "
                                         f"negative (BED is 0-based, half-open)")
            out.append(Region(cols[0], start, end))
    if not out:
        raise GenomicsInputError(f"{path}: no intervals")
    merged: list[Region] = []
    for r in sorted(out, key=lambda r: (r.contig, r.start)):
        if merged and merged[-1].contig == r.contig and r.start <= merged[-1].end:
            merged[-1] = Region(r.contig, merged[-1].start, max(merged[-1].end, r.end))
        else:
            merged.append(r)
    return merged


def intersect_regions(a: list[Region], b: list[Region]) -> list[Region]:
    """The parts of `a` that `b` covers."""
    out = []
    for x in a:
        for y in b:
            if x.contig == y.contig and max(x.start, y.start) < min(x.end, y.end):
                out.append(Region(x.contig, max(x.start, y.start), min(x.end, y.end)))
    return out


def parse_regions(specs: list[str] | None, fasta: pysam.FastaFile,
                  contigs: list[str] | None = None) -> list[Region]:
    """`chr1`, `chr1:1000-2000` (1-based, inclusive) -> Regions; default every contig given."""
    lengths = dict(zip(fasta.references, fasta.lengths))
    if not specs:
        return [Region(c, 0, lengths[c]) for c in (contigs or fasta.references) if c in lengths]
    out = []
    for spec in specs:
        name, _, span = spec.partition(":")
        if name not in lengths:
            raise GenomicsInputError(f"region {spec!r}: contig {name!r} is not in the reference "
                                     f"(contigs: {', '.join(list(lengths)[:8])})")
        if not span:
            out.append(Region(name, 0, lengths[name]))
            continue
        try:
            a, _, b = span.replace(",", "").partition("-")
            start, end = int(a) - 1, (int(b) if b else lengths[name])
        except ValueError:
            raise GenomicsInputError(f"region {spec!r}: expected contig:start-end "
                                     f"(1-based, inclusive)") from None
        if start < 0 or end <= start or end > lengths[name]:
            raise GenomicsInputError(f"region {spec!r}: outside {name} (1-{lengths[name]}) or empty")
        out.append(Region(name, start, end))
    return out


def split_regions(regions: list[Region], size: int) -> list[Region]:
    """Cut regions into chunks of at most `size` bp: the unit of parallel work."""
    out = []
    for r in regions:
        for s in range(r.start, r.end, size):
            out.append(Region(r.contig, s, min(s + size, r.end)))
    return out
