"""Simulated sequencing with planted variants at known genotypes: real files, known answers.

`simulate_sample(out_dir, SimulationConfig(...))` writes

- `ref.fa` (+ `.fai`): random contigs;
- `reads.bam` (+ `.bai`): a coordinate-sorted BAM of single-end reads drawn from the two
  haplotypes of a diploid sample that carries the planted SNPs and indels — het variants on
  one haplotype, hom-alt on both — with substitution errors, Phred base qualities that track
  them, a few low-MAPQ reads, and CIGARs (M/I/D/S) that place every indel exactly;
- `truth.vcf.gz` (+ `.tbi`): the planted variants with GT 0/1 or 1/1, left-aligned;
- "artifact" sites that are *not* variants: a minority of reads on one strand show the same
  low-quality mismatch, so candidate finding picks them up and their label is hom-ref (0).

All randomness comes from `seed`; the same config writes the same reads.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam

from medmix.data.genomics.alleles import Variant

_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


@dataclass
class SimulationConfig:
    contigs: dict[str, int] = field(default_factory=lambda: {"chr1": 30_000, "chr2": 30_000})
    coverage: float = 30.0          # mean read depth
    read_length: int = 100
    site_spacing: int = 300         # mean bp between planted sites (>= window width keeps pileups apart)
    indel_fraction: float = 0.35    # of variant sites
    homalt_fraction: float = 0.4    # of variant sites
    artifact_fraction: float = 0.2  # of all sites: systematic low-quality errors, not variants
    max_indel_length: int = 6
    error_rate: float = 0.003       # per-base substitution rate
    low_mapq_fraction: float = 0.03
    seed: int = 0
    sample: str = "sim"


@dataclass
class SimulatedSample:
    reference: Path
    bam: Path
    truth: Path
    variants: dict[Variant, int]          # planted variant -> copies of ALT (1 or 2)
    artifacts: list[Variant]              # planted systematic errors (truth: not variants)
    num_reads: int = 0


def _haplotype(ref: np.ndarray, planted: list[tuple[int, str, bytes, bytes]], hap: int,
               gts: list[int], which: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Haplotype sequence and, per base, its reference position (-1 for inserted bases)."""
    seq_parts, pos_parts, cursor = [], [], 0
    for (pos, kind, r, a), gt, w in zip(planted, gts, which):
        if not (gt == 2 or w == hap):
            continue
        end = pos + len(r)
        seq_parts.append(ref[cursor:pos])
        pos_parts.append(np.arange(cursor, pos))
        if kind == "snp":
            seq_parts.append(np.frombuffer(a, dtype=np.uint8))
            pos_parts.append(np.array([pos]))
        elif kind == "del":  # keep the anchor, drop the rest of REF
            seq_parts.append(ref[pos:pos + 1])
            pos_parts.append(np.array([pos]))
        else:  # insertion after the anchor
            seq_parts.append(np.frombuffer(a, dtype=np.uint8))
            pos_parts.append(np.concatenate([[pos], np.full(len(a) - 1, -1)]))
        cursor = end
    seq_parts.append(ref[cursor:])
    pos_parts.append(np.arange(cursor, len(ref)))
    return np.concatenate(seq_parts).astype(np.uint8), np.concatenate(pos_parts).astype(np.int64)


def _cigar(ref_pos: np.ndarray) -> tuple[int, list[tuple[int, int]]] | None:
    """Reference start and CIGAR of a read whose bases map to `ref_pos` (-1 = inserted)."""
    aligned = np.flatnonzero(ref_pos >= 0)
    if len(aligned) == 0:
        return None
    first, last = aligned[0], aligned[-1]
    if last - first == ref_pos[last] - ref_pos[first] and len(aligned) == last - first + 1:
        ops = [(0, last - first + 1)]
    else:
        ops, run = [], 0
        prev = ref_pos[first]
        for i in range(first, last + 1):
            p = ref_pos[i]
            if p < 0:
                if run:
                    ops.append((0, run)); run = 0
                if ops and ops[-1][0] == 1:
                    ops[-1] = (1, ops[-1][1] + 1)
                else:
                    ops.append((1, 1))
                continue
            if i > first and p > prev + 1:
                if run:
                    ops.append((0, run)); run = 0
                ops.append((2, int(p - prev - 1)))
            run += 1
            prev = p
        if run:
            ops.append((0, run))
    if first:
        ops.insert(0, (4, int(first)))
    if last < len(ref_pos) - 1:
        ops.append((4, int(len(ref_pos) - 1 - last)))
    return int(ref_pos[first]), ops


def _plant(rng: np.random.Generator, ref: np.ndarray, cfg: SimulationConfig):
    """Sites spaced >= 150 bp apart; each a SNP, deletion, insertion or artifact."""
    n = len(ref)
    margin = cfg.read_length + 120
    positions, p = [], margin
    while True:
        p += int(rng.integers(max(150, cfg.site_spacing // 2), cfg.site_spacing * 3 // 2 + 150))
        if p >= n - margin:
            break
        positions.append(p)
    planted, artifacts = [], []
    for p in positions:
        anchor = ref[p]
        roll = rng.random()
        if roll < cfg.artifact_fraction:
            alt = rng.choice([b for b in _BASES if b != anchor])
            artifacts.append((p, bytes([anchor]), bytes([alt])))
            continue
        if rng.random() >= cfg.indel_fraction:
            alt = rng.choice([b for b in _BASES if b != anchor])
            planted.append((p, "snp", bytes([anchor]), bytes([alt])))
            continue
        length = int(rng.integers(1, cfg.max_indel_length + 1))
        if rng.random() < 0.5:  # deletion of ref[p+1 : p+1+length]; left-aligned iff last deleted != anchor
            if ref[p + length] == anchor:
                continue
            planted.append((p, "del", ref[p:p + 1 + length].tobytes(), bytes([anchor])))
        else:
            ins = rng.choice(_BASES, size=length)
            if ins[-1] == anchor:  # keep it left-aligned: the inserted run may not end in the anchor base
                ins[-1] = rng.choice([b for b in _BASES if b != anchor])
            planted.append((p, "ins", bytes([anchor]), bytes([anchor]) + ins.tobytes()))
    return planted, artifacts


def simulate_sample(out_dir: str | Path, cfg: SimulationConfig | None = None) -> SimulatedSample:
    """Write ref.fa, reads.bam, truth.vcf.gz (with indexes) under out_dir."""
    cfg = cfg or SimulationConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    refs = {name: rng.choice(_BASES, size=length) for name, length in cfg.contigs.items()}
    fasta_path = out / "ref.fa"
    with open(fasta_path, "w") as f:
        for name, seq in refs.items():
            f.write(f">{name}\n")
            text = seq.tobytes().decode()
            f.writelines(text[i:i + 60] + "\n" for i in range(0, len(text), 60))
    pysam.faidx(str(fasta_path))

    header = {"HD": {"VN": "1.6", "SO": "coordinate"},
              "SQ": [{"SN": n, "LN": len(s)} for n, s in refs.items()],
              "RG": [{"ID": cfg.sample, "SM": cfg.sample}],
              "PG": [{"ID": "medmix-simulate", "PN": "medmix"}]}
    records, truth, artifacts = [], {}, []
    for tid, (name, ref) in enumerate(refs.items()):
        planted, arts = _plant(rng, ref, cfg)
        gts = [2 if rng.random() < cfg.homalt_fraction else 1 for _ in planted]
        which = [int(rng.integers(0, 2)) for _ in planted]
        for (pos, _, r, a), gt in zip(planted, gts):
            truth[Variant(name, pos, r.decode(), a.decode())] = gt
        art_by_pos = {p: (r, a, float(rng.uniform(0.15, 0.3)), bool(rng.random() < 0.5))
                      for p, r, a in arts}
        artifacts += [Variant(name, p, r.decode(), a.decode()) for p, r, a in arts]
        for hap in (0, 1):
            hseq, hpos = _haplotype(ref, planted, hap, gts, which)
            num = int(cfg.coverage * len(hseq) / cfg.read_length / 2)
            starts = np.sort(rng.integers(0, len(hseq) - cfg.read_length, size=num))
            for k, s in enumerate(starts):
                rp = hpos[s:s + cfg.read_length]
                placed = _cigar(rp)
                if placed is None:
                    continue
                seq = hseq[s:s + cfg.read_length].copy()
                qual = np.clip(rng.normal(34, 4, size=len(seq)), 20, 40).astype(np.uint8)
                errors = np.flatnonzero(rng.random(len(seq)) < cfg.error_rate)
                for e in errors:
                    seq[e] = rng.choice([b for b in _BASES if b != seq[e]])
                    qual[e] = int(rng.integers(8, 25))
                reverse = bool(rng.random() < 0.5)
                for i in np.flatnonzero(rp >= 0):  # systematic errors at artifact sites
                    art = art_by_pos.get(int(rp[i]))
                    if art and art[3] == reverse and rng.random() < 2 * art[2]:
                        seq[i] = art[1][0]
                        qual[i] = int(rng.integers(10, 16))
                a = pysam.AlignedSegment()
                a.query_name = f"{name}_h{hap}_{k}"
                a.query_sequence = seq.tobytes().decode()
                a.flag = 16 if reverse else 0
                a.reference_id = tid
                a.reference_start, a.cigartuples = placed
                a.mapping_quality = (int(rng.integers(0, 30)) if rng.random() < cfg.low_mapq_fraction
                                     else 60)
                a.query_qualities = array("B", qual.tolist())
                a.set_tag("RG", cfg.sample)
                records.append(a)
    records.sort(key=lambda a: (a.reference_id, a.reference_start, a.query_name))
    bam_path = out / "reads.bam"
    with pysam.AlignmentFile(str(bam_path), "wb", header=header) as bam:
        for a in records:
            bam.write(a)
    pysam.index(str(bam_path))
    truth_path = write_truth_vcf(out / "truth.vcf.gz", fasta_path, truth, cfg.sample)
    return SimulatedSample(fasta_path, bam_path, truth_path, truth, artifacts, len(records))


def write_truth_vcf(path: str | Path, fasta_path: str | Path, genotypes: dict[Variant, int],
                    sample: str) -> Path:
    """Variants with GT 0/1 (1 copy) or 1/1 (2 copies) as a bgzipped, tabix-indexed VCF."""
    path = Path(path)
    with pysam.FastaFile(str(fasta_path)) as fa:
        contigs = list(zip(fa.references, fa.lengths))
    header = pysam.VariantHeader()
    for name, length in contigs:
        header.contigs.add(name, length=length)
    header.add_meta("FORMAT", items=[("ID", "GT"), ("Number", 1), ("Type", "String"),
                                     ("Description", "Genotype")])
    header.add_sample(sample)
    order = {name: i for i, (name, _) in enumerate(contigs)}
    with pysam.VariantFile(str(path), "wz", header=header) as vcf:
        for v in sorted(genotypes, key=lambda v: (order[v.contig], v.pos, v.ref, v.alt)):
            rec = vcf.new_record(contig=v.contig, start=v.pos, alleles=(v.ref, v.alt))
            rec.samples[sample]["GT"] = (0, 1) if genotypes[v] == 1 else (1, 1)
            vcf.write(rec)
    pysam.tabix_index(str(path), preset="vcf", force=True)
    return path
