"""The genomics ingest's settings, importable without pysam (the ingest CLI builds its flags from them).

`CandidateConfig`: which pileup allele counts make a candidate variant; `PileupConfig`: the
pileup image's shape and read selection. medmix.data.genomics.variants / .pileup re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import ConfigError, option

IMAGE_SIDE = 224   # pileup images are IMAGE_SIDE x IMAGE_SIDE x 3


@dataclass
class CandidateConfig:
    """Which pileup allele counts make a candidate variant, and how work is cut."""

    min_depth: int = option(4, "reads (counted bases) at the site, at least", ge=1)
    min_alt_count: int = option(2, "reads carrying the ALT allele, at least", ge=1)
    min_alt_fraction: float = option(0.12, "ALT reads / depth for a SNP candidate, at least", ge=0.0, le=1.0)
    min_indel_fraction: float = option(0.06, "ALT reads / depth for an indel candidate, at least", ge=0.0, le=1.0)
    min_base_quality: int = option(10, "bases below this Phred quality are not counted", ge=0)
    min_mapq: int = option(5, "reads below this mapping quality are not counted", ge=0)
    max_indel_length: int = option(50, "longer insertions/deletions are not candidates, bp", ge=1)
    region_size: int = option(100_000, "bp per parallel work item", ge=1000)


@dataclass
class PileupConfig:
    """Shape and read selection of the pileup image (DeepVariant's defaults)."""

    width: int = option(221, "window width in reference bases, candidate in the middle column", ge=3)
    rows: int = option(100, "image rows: reference rows + read rows", ge=2)
    ref_rows: int = option(0, "rows at the top showing the reference (DeepVariant uses 5; the paper 0)", ge=0)
    min_mapq: int = option(5, "reads with a lower mapping quality are left out", ge=0)

    def validate(self) -> None:
        if self.width % 2 == 0:
            raise ConfigError(f"width = {self.width} must be odd so the candidate has a middle column")
        if self.ref_rows >= self.rows:
            raise ConfigError(f"ref_rows = {self.ref_rows} must be below rows = {self.rows}")
        if 2 * self.rows > IMAGE_SIDE or self.width > IMAGE_SIDE:
            raise ConfigError(f"a {2 * self.rows} x {self.width} stacked pileup does not fit the "
                              f"{IMAGE_SIDE} x {IMAGE_SIDE} image")
