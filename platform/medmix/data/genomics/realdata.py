"""Real reads that registry packages ship, and a silver truth for them.

`ex1.bam` + `ex1.fa` (real NA18507 reads on two 1.6 kb contigs, from the samtools examples)
ship in Debian's `python-pysam-tests` package (gzipped, under
/usr/share/doc/python-pysam/tests/pysam_data/) and in the Biopython source distribution
(`Tests/SamBam/`). No truth VCF ships with them; `silver_truth` makes one with the bcftools
that pysam embeds (`mpileup` + `call -mv`, QUAL >= min_qual), which is what the ex1 ingest
is labelled with.

    found = find_ex1()                     # None when neither is installed
    bam, fa = prepare_ex1(found, workdir)  # plain, indexed copies
    truth = silver_truth(bam, fa, workdir / "ex1.silver.vcf.gz")
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pysam
from pysam import bcftools

from medmix.data.genomics.inputs import GenomicsInputError, open_bam, open_fasta

DEBIAN_DIR = Path("/usr/share/doc/python-pysam/tests/pysam_data")
ENV_DIR = "MEDMIX_EX1_DIR"   # a folder holding ex1.bam (or .bam.gz) and ex1.fa (e.g. Biopython's Tests/SamBam)
INSTALL_HINT = ("ex1.bam/ex1.fa not installed: `apt-get install python-pysam-tests` (Debian/Ubuntu) "
                f"or point {ENV_DIR} at Biopython's sdist Tests/SamBam folder")


def find_ex1() -> tuple[Path, Path] | None:
    """(ex1.bam or ex1.bam.gz, ex1.fa or ex1.fa.gz) from $MEDMIX_EX1_DIR or Debian's package."""
    for folder in [os.environ.get(ENV_DIR), DEBIAN_DIR]:
        if not folder:
            continue
        folder = Path(folder)
        bam = next((folder / n for n in ("ex1.bam", "ex1.bam.gz") if (folder / n).is_file()), None)
        fa = next((folder / n for n in ("ex1.fa", "ex1.fa.gz") if (folder / n).is_file()), None)
        if bam and fa:
            return bam, fa
    return None


def _plain_copy(src: Path, dst: Path) -> Path:
    if src.suffix == ".gz":
        with gzip.open(src, "rb") as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
    else:
        shutil.copyfile(src, dst)
    return dst


def prepare_ex1(found: tuple[Path, Path], workdir: str | Path) -> tuple[Path, Path]:
    """Copy ex1 into workdir uncompressed (Debian gzips its docs), then index BAM and FASTA."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bam = _plain_copy(found[0], workdir / "ex1.bam")
    fa = _plain_copy(found[1], workdir / "ex1.fa")
    pysam.index(str(bam))
    pysam.faidx(str(fa))
    return bam, fa


def silver_truth(bam: str | Path, ref: str | Path, out_vcf: str | Path, min_qual: float = 20.0) -> Path:
    """bcftools mpileup + call -mv on the BAM -> bgzipped, indexed VCF of calls with QUAL >= min_qual.

    Meant for small test BAMs: pysam's bcftools hands back the pileup as one string.
    """
    fasta = open_fasta(ref)
    open_bam(bam, fasta).close()
    fasta.close()
    out_vcf = Path(out_vcf)
    raw = out_vcf.with_name(out_vcf.name.replace(".vcf.gz", "") + ".mpileup.vcf")
    try:
        raw.write_text(bcftools.mpileup("-Ov", "-a", "AD,DP", "-f", str(ref), str(bam)))
        called = bcftools.call("-mv", "-Ov", str(raw))
    except pysam.utils.SamtoolsError as exc:
        raise GenomicsInputError(f"{bam}: bcftools mpileup/call failed: {exc}") from exc
    finally:
        raw.unlink(missing_ok=True)
    text = out_vcf.with_name(out_vcf.name.replace(".vcf.gz", "") + ".calls.vcf")
    # bcftools call declares INFO/MQ an Integer while writing floats; htslib warns on every read
    text.write_text(called.replace("##INFO=<ID=MQ,Number=1,Type=Integer", "##INFO=<ID=MQ,Number=1,Type=Float"))
    try:
        with pysam.VariantFile(str(text)) as src, \
                pysam.VariantFile(str(out_vcf), "wz", header=src.header) as dst:
            for rec in src:
                if rec.qual is not None and rec.qual >= min_qual:
                    dst.write(rec)
    finally:
        text.unlink(missing_ok=True)
    pysam.tabix_index(str(out_vcf), preset="vcf", force=True)
    return out_vcf
