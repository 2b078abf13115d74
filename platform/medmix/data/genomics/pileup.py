"""DeepVariant-style pileup images: what the model sees of one candidate variant.

For a candidate at 0-based position `p`, the window holds `width` = 221 reference columns,
`p - 110 ... p + 110` (the candidate in column 110), and `rows` = 100 rows, one read each
(the reads that overlap `p`, ordered by alignment start then name; above 100 reads a subset
is drawn with a seed made from the locus, so the same BAM gives the same image). Optionally
the first `ref_rows` rows show the reference itself (DeepVariant's reference band); the
paper's and our default layout is 100 read rows. Six uint8 channels, 0 meaning "no read here":

| ch | meaning                    | encoding                                                    |
|----|----------------------------|-------------------------------------------------------------|
| 0  | read base                  | A 250, G 180, T 100, C 30, N/other 0; a deleted reference   |
|    |                            | position inside the read (CIGAR D) is 0 too                 |
| 1  | base quality               | round(254 * min(Q, 40) / 40); at a deletion: the quality of |
|    |                            | the read base before it                                     |
| 2  | mapping quality            | round(254 * min(MAPQ, 60) / 60), on every column the read   |
|    |                            | covers                                                      |
| 3  | strand                     | forward 70, reverse 240                                     |
| 4  | read supports the ALT      | 254 if the read carries the candidate allele, else 152      |
|    |                            | (whole row)                                                 |
| 5  | base differs from the ref. | 254 for a mismatch, a deleted position, or the base just    |
|    |                            | before an insertion; 50 for a match                         |

Reference rows (when `ref_rows` > 0): reference base, quality 254, MAPQ 254, forward (70),
supports-ALT 152, differs 50. Columns outside the contig and read columns a read does not
cover are 0 in every channel; soft-clipped bases are not shown.

`pileup_image` stacks channels 0-2 over channels 3-5 into a (200, 221, 3) image and pads it
with zeros (no rescaling) to 224 x 224: 12 rows above and below, 1 column left, 2 right —
the (200, 221, 3) -> 224 x 224 x 3 framing Med-PaLM M used.
"""

from __future__ import annotations

import zlib

import numpy as np
import pysam

from medmix.data.genomics.alleles import Variant
from medmix.data.genomics.config import IMAGE_SIDE, PileupConfig  # noqa: F401 - their home is pysam-free

NUM_CHANNELS = 6
MAX_PIXEL = 254
BASE_VALUE = np.zeros(256, dtype=np.uint8)
for _b, _v in {"A": 250, "G": 180, "T": 100, "C": 30}.items():
    BASE_VALUE[ord(_b)] = BASE_VALUE[ord(_b.lower())] = _v
DELETED_BASE = 0
STRAND_FORWARD, STRAND_REVERSE = 70, 240
SUPPORTS_ALT, SUPPORTS_OTHER = 254, 152
DIFFERS, MATCHES = 254, 50
MAX_BASE_QUALITY, MAX_MAPQ = 40, 60

# CIGAR operations (pysam codes)
_M, _I, _D, _N, _S, _EQ, _X = 0, 1, 2, 3, 4, 7, 8
# reads never shown: unmapped, secondary, QC fail, duplicate, supplementary
SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400 | 0x800


def _scale(values: np.ndarray, cap: int) -> np.ndarray:
    return np.rint(np.minimum(values, cap) * (MAX_PIXEL / cap)).astype(np.uint8)


def usable(read: pysam.AlignedSegment, min_mapq: int) -> bool:
    return not (read.flag & SKIP_FLAGS) and read.mapping_quality >= min_mapq and read.query_sequence is not None


def read_allele(read: pysam.AlignedSegment, pos: int) -> tuple[str | None, tuple[str, object] | None]:
    """What the read shows at reference position `pos`: (its base or None if deleted/absent,
    the indel right after `pos`: ("D", length) or ("I", inserted bases) or None)."""
    r, q = read.reference_start, 0
    seq = read.query_sequence
    base, event = None, None
    for op, n in read.cigartuples:
        if op in (_M, _EQ, _X):
            if r <= pos < r + n:
                base = seq[q + pos - r]
            r, q = r + n, q + n
        elif op == _I:
            if r - 1 == pos:
                event = ("I", seq[q:q + n].upper())
            q += n
        elif op in (_D, _N):
            if op == _D and r - 1 == pos and base is not None:
                event = ("D", n)
            r += n
        elif op == _S:
            q += n
        if r > pos + 1:  # later operations lie past the anchor
            break
    return (base.upper() if base else None), event


def supports(read: pysam.AlignedSegment, v: Variant) -> bool:
    base, event = read_allele(read, v.pos)
    if len(v.ref) == 1 and len(v.alt) == 1:
        return base == v.alt
    if len(v.ref) > len(v.alt) and len(v.alt) == 1:
        return event == ("D", len(v.ref) - 1)
    if len(v.alt) > len(v.ref) and len(v.ref) == 1:
        return event == ("I", v.alt[1:])
    return False


def encode_read(read: pysam.AlignedSegment, win_start: int, ref_codes: np.ndarray,
                alt_support: bool) -> np.ndarray:
    """One read -> (6, width) uint8 row over the window starting at `win_start`."""
    width = len(ref_codes)
    row = np.zeros((NUM_CHANNELS, width), dtype=np.uint8)
    seq = np.frombuffer(read.query_sequence.encode("ascii"), dtype=np.uint8)
    quals = read.query_qualities
    quals = (np.frombuffer(bytes(quals), dtype=np.uint8) if quals is not None
             else np.zeros(len(seq), dtype=np.uint8))
    upper = seq & 0xDF  # ASCII upper case
    mq = _scale(np.array([read.mapping_quality]), MAX_MAPQ)[0]
    strand = STRAND_REVERSE if read.is_reverse else STRAND_FORWARD
    support = SUPPORTS_ALT if alt_support else SUPPORTS_OTHER
    lo_win, hi_win = win_start, win_start + width
    r, q = read.reference_start, 0
    any_covered = False
    for op, n in read.cigartuples:
        if op in (_M, _EQ, _X) or op == _D:
            lo, hi = max(r, lo_win), min(r + n, hi_win)
            if lo < hi:
                cols = slice(lo - win_start, hi - win_start)
                if op == _D:
                    row[0, cols] = DELETED_BASE
                    row[1, cols] = _scale(quals[max(q - 1, 0)], MAX_BASE_QUALITY) if len(quals) else 0
                    row[5, cols] = DIFFERS
                else:
                    qs = slice(q + lo - r, q + hi - r)
                    row[0, cols] = BASE_VALUE[seq[qs]]
                    row[1, cols] = _scale(quals[qs], MAX_BASE_QUALITY)
                    row[5, cols] = np.where(upper[qs] == ref_codes[cols], MATCHES, DIFFERS)
                any_covered = True
            r += n
            if op != _D:
                q += n
        elif op == _I:
            anchor = r - 1
            if lo_win <= anchor < hi_win and anchor >= read.reference_start:
                row[5, anchor - win_start] = DIFFERS
            q += n
        elif op == _N:
            r += n
        elif op == _S:
            q += n
        if r > hi_win:
            break
    if any_covered:
        # every column the read covers has a nonzero differs-channel (match 50 or 254); N
        # (spliced) gaps stay empty
        covered = row[5] > 0
        row[2, covered] = mq
        row[3, covered] = strand
        row[4, covered] = support
    return row


class RegionReads:
    """The usable reads of one region, loaded once and looked up by position.

    `bam.fetch(contig, p, p + 1)` scans every read from the start of the index bin (16 kb) to
    find the ~30 that overlap `p`; per candidate that costs more than building the image.
    """

    def __init__(self, bam: pysam.AlignmentFile, contig: str, start: int, end: int, min_mapq: int):
        self.reads = [r for r in bam.fetch(contig, max(0, start), end) if usable(r, min_mapq)]
        self.starts = np.array([r.reference_start for r in self.reads], dtype=np.int64)
        self.ends = np.array([r.reference_end for r in self.reads], dtype=np.int64)
        self.longest = int((self.ends - self.starts).max()) if self.reads else 0
        self.min_mapq = min_mapq

    def overlapping(self, pos: int) -> list[pysam.AlignedSegment]:
        lo = int(np.searchsorted(self.starts, pos - self.longest, side="left"))
        hi = int(np.searchsorted(self.starts, pos, side="right"))
        return [self.reads[i] for i in range(lo, hi) if self.ends[i] > pos]


def select_reads(bam: pysam.AlignmentFile | RegionReads, v: Variant,
                 cfg: PileupConfig) -> list[pysam.AlignedSegment]:
    """Usable reads overlapping the candidate position, at most rows - ref_rows, ordered."""
    if isinstance(bam, RegionReads) and bam.min_mapq <= cfg.min_mapq:
        reads = [r for r in bam.overlapping(v.pos) if r.mapping_quality >= cfg.min_mapq]
    else:
        reads = [r for r in bam.fetch(v.contig, v.pos, v.pos + 1) if usable(r, cfg.min_mapq)
                 and r.reference_start <= v.pos < r.reference_end]
    limit = cfg.rows - cfg.ref_rows
    if len(reads) > limit:
        rng = np.random.default_rng(zlib.crc32(v.locus.encode()))
        keep = np.sort(rng.choice(len(reads), size=limit, replace=False))
        reads = [reads[i] for i in keep]
    reads.sort(key=lambda r: (r.reference_start, r.query_name, r.is_reverse))
    return reads


def reference_codes(fasta: pysam.FastaFile, contig: str, start: int, width: int) -> np.ndarray:
    """Upper-case ASCII codes of the window; 0 outside the contig."""
    length = fasta.get_reference_length(contig)
    codes = np.zeros(width, dtype=np.uint8)
    lo, hi = max(start, 0), min(start + width, length)
    if lo < hi:
        codes[lo - start:hi - start] = np.frombuffer(fasta.fetch(contig, lo, hi).upper().encode("ascii"),
                                                      dtype=np.uint8)
    return codes


def build_pileup(bam: pysam.AlignmentFile | RegionReads, fasta: pysam.FastaFile, v: Variant,
                 cfg: PileupConfig | None = None) -> np.ndarray:
    """The (rows, width, 6) uint8 pileup tensor of candidate `v`.

    `bam` is an indexed BAM or, when building many pileups of one region, its `RegionReads`.
    """
    cfg = cfg or PileupConfig()
    win_start = v.pos - cfg.width // 2
    ref_codes = reference_codes(fasta, v.contig, win_start, cfg.width)
    tensor = np.zeros((cfg.rows, NUM_CHANNELS, cfg.width), dtype=np.uint8)
    if cfg.ref_rows:
        inside = ref_codes > 0
        band = np.zeros((NUM_CHANNELS, cfg.width), dtype=np.uint8)
        band[0] = BASE_VALUE[ref_codes]
        band[1, inside] = band[2, inside] = MAX_PIXEL
        band[3, inside], band[4, inside], band[5, inside] = STRAND_FORWARD, SUPPORTS_OTHER, MATCHES
        tensor[:cfg.ref_rows] = band
    for i, read in enumerate(select_reads(bam, v, cfg)):
        tensor[cfg.ref_rows + i] = encode_read(read, win_start, ref_codes, supports(read, v))
    return np.ascontiguousarray(tensor.transpose(0, 2, 1))


def pileup_image(tensor: np.ndarray, side: int = IMAGE_SIDE) -> np.ndarray:
    """(rows, width, 6) -> channels 0-2 stacked over 3-5, zero-padded (centred) to side x side x 3."""
    rows, width, channels = tensor.shape
    if channels != NUM_CHANNELS:
        raise ValueError(f"pileup tensor has {channels} channels, expected {NUM_CHANNELS}")
    stacked = np.concatenate([tensor[..., :3], tensor[..., 3:]], axis=0)
    h, w = stacked.shape[:2]
    if h > side or w > side:
        raise ValueError(f"stacked pileup {h} x {w} does not fit a {side} x {side} image")
    top, left = (side - h) // 2, (side - w) // 2
    out = np.zeros((side, side, 3), dtype=np.uint8)
    out[top:top + h, left:left + w] = stacked
    return out


def image_to_tensor(image: np.ndarray, rows: int = 100, width: int = 221) -> np.ndarray:
    """Invert `pileup_image`: (side, side, 3) -> (rows, width, 6). For predictors and tests."""
    side = image.shape[0]
    top, left = (side - 2 * rows) // 2, (side - width) // 2
    core = image[top:top + 2 * rows, left:left + width]
    return np.concatenate([core[:rows], core[rows:]], axis=2)
