"""Hand-built genomics inputs: a reference and a BAM whose every read we wrote ourselves.

A plain module (not conftest) so tests import it unambiguously: `from genomics_helpers import ...`."""

from __future__ import annotations

from array import array
from pathlib import Path

import pysam

CONTIG, LENGTH = "ctg", 400


def write_fasta(path: Path, seqs: dict[str, str]) -> Path:
    with open(path, "w") as f:
        for name, seq in seqs.items():
            f.write(f">{name}\n")
            f.writelines(seq[i:i + 60] + "\n" for i in range(0, len(seq), 60))
    pysam.faidx(str(path))
    return path


def write_bam(path: Path, contigs: dict[str, int], reads: list[dict], index: bool = True) -> Path:
    """reads: dicts with name, start, cigar (tuples), seq, qual (int or list), mapq, reverse, flag."""
    header = {"HD": {"VN": "1.6", "SO": "coordinate"},
              "SQ": [{"SN": n, "LN": ln} for n, ln in contigs.items()]}
    names = list(contigs)
    segs = []
    for r in reads:
        a = pysam.AlignedSegment()
        a.query_name = r["name"]
        a.query_sequence = r["seq"]
        a.flag = r.get("flag", 0) | (16 if r.get("reverse") else 0)
        a.reference_id = names.index(r.get("contig", names[0]))
        a.reference_start = r["start"]
        a.cigartuples = r["cigar"]
        a.mapping_quality = r.get("mapq", 60)
        q = r.get("qual", 30)
        a.query_qualities = array("B", [q] * len(r["seq"]) if isinstance(q, int) else q)
        segs.append(a)
    segs.sort(key=lambda a: (a.reference_id, a.reference_start))
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for a in segs:
            bam.write(a)
    if index:
        pysam.index(str(path))
    return path


def other_base(b: str) -> str:
    return {"A": "G", "G": "A", "C": "T", "T": "C"}[b]
