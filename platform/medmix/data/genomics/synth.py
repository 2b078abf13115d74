"""The bundled genomics, polygenic and 3D-volume part of the synthetic suite.

`synth_genomics(cfg, store)` writes real input files under `<store root>/_sources/` (a scratch
folder when the store is on object storage) and then
ingests them through the same functions `medmix ingest variants|genotypes|volumes` calls:

- variant_calling: a simulated reference + reads with planted SNPs/indels (sorted, indexed
  BAM; FASTA + .fai; truth VCF bgzipped + tabix). Contigs are split like DeepVariant holds
  out chromosomes: chr1-chr2 train, chr3 val, chr4 test — so `call_variants` +
  `compare_to_truth(..., regions=chr4)` scores held-out loci only.
- polygenic_risk: a simulated cohort with known heritability per trait, GWAS weights from a
  separate discovery cohort, phenotypes by liability threshold.
- volume_report: CT-like NIfTI volumes with a lesion whose slice and side the report states.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from medmix.data.genomics.inputs import Region

# per suite size: (train contig bp, held-out contig bp, cohort samples, SNPs, volumes)
SIZES = {
    "tiny": (6_000, 3_000, 120, 300, 8),
    "small": (20_000, 8_000, 300, 600, 24),
    "medium": (100_000, 40_000, 2_000, 5_000, 200),
}
VARIANT_SPLITS = {"chr1": "train", "chr2": "train", "chr3": "val", "chr4": "test"}
TASKS = ("variant_calling", "polygenic_risk", "volume_report")


def synth_genomics(cfg, store, workdir: str | Path | None = None, num_slices: int | None = None,
                   parallel: str | None = None) -> dict[str, dict]:
    """Write and ingest the genomics/polygenic/volume tasks of the suite; returns per task stats
    and the paths of its source files.

    Args:
        cfg: the root MedmixConfig (uses synth.size, synth.seed, synth.tasks).
        workdir: where the source files go (default: <store root>/_sources for a local store;
            for one on object storage, a temporary folder removed once they are ingested).
        num_slices: slices per volume (default 8 for tiny/small, 16 for medium).
        parallel: "ray", "local" or "auto" (Ray from 8 work items on); None = "auto" if Ray
            is already initialised, else "local" (starting Ray costs more than this work).
    """
    from medmix.data.genomics.polygenic import CohortConfig, simulate_cohort
    from medmix.data.genomics.simulate import SimulationConfig, simulate_sample
    from medmix.data.ingest.genotypes import ingest_genotypes
    from medmix.data.ingest.variants import ingest_variants
    from medmix.data.ingest.volumes import VolumeConfig, ingest_volumes, synthetic_volumes

    if parallel is None:
        running = "ray" in sys.modules and sys.modules["ray"].is_initialized()
        parallel = "auto" if running else "local"
    size, seed = cfg.synth.size, cfg.synth.seed
    wanted = [t for t in TASKS if not cfg.synth.tasks or t in cfg.synth.tasks]
    train_bp, held_bp, samples, snps, volumes = SIZES[size]
    if workdir is None and not store.loc.is_local:  # a store on object storage: sources are scratch
        with tempfile.TemporaryDirectory(prefix="medmix-sources-") as scratch:
            return synth_genomics(cfg, store, scratch, num_slices, parallel)
    root = Path(workdir) if workdir else store.loc.local_path() / "_sources"
    out: dict[str, dict] = {}

    if "variant_calling" in wanted:
        t0 = time.perf_counter()
        contigs = {c: (train_bp if split == "train" else held_bp) for c, split in VARIANT_SPLITS.items()}
        sim = simulate_sample(root / "variants", SimulationConfig(contigs=contigs, seed=seed, sample="sim"))
        rows, stats = 0, {}
        for i, split in enumerate(("train", "val", "test")):
            regions = [c for c, s in VARIANT_SPLITS.items() if s == split]
            stats = ingest_variants(store, str(sim.bam), str(sim.reference), str(sim.truth), regions,
                                    split=split, parallel=parallel, replace=(i == 0))
            rows += stats.total_rows
        out["variant_calling"] = {
            "rows": rows, "bam": str(sim.bam), "reference": str(sim.reference), "truth": str(sim.truth),
            "test_regions": [str(Region(c, 0, contigs[c])) for c, s in VARIANT_SPLITS.items() if s == "test"],
            "planted": len(sim.variants), "artifacts": len(sim.artifacts),
            "seconds": time.perf_counter() - t0}

    if "polygenic_risk" in wanted:
        t0 = time.perf_counter()
        cohort = simulate_cohort(root / "polygenic", CohortConfig(num_samples=samples, num_snps=snps, seed=seed))
        stats = ingest_genotypes(store, cohort["vcf"], cohort["weights"], cohort["phenotypes"], replace=True)
        out["polygenic_risk"] = {"rows": stats.total_rows, "vcf": str(cohort["vcf"]),
                                 "weights": str(cohort["weights"]), "phenotypes": str(cohort["phenotypes"]),
                                 "heritability": cohort["heritability"],
                                 "realised_heritability": cohort["realised_heritability"],
                                 "seconds": time.perf_counter() - t0}

    if "volume_report" in wanted:
        t0 = time.perf_counter()
        n = num_slices or (16 if size == "medium" else 8)
        folder = root / "volumes"
        meta = synthetic_volumes(folder, volumes, n, seed=seed)
        stats = ingest_volumes(store, [folder / m["file"] for m in meta], folder / "reports.csv",
                               cfg=VolumeConfig(num_slices=n), parallel=parallel, replace=True)
        out["volume_report"] = {"rows": stats.total_rows, "folder": str(folder), "num_slices": n,
                                "seconds": time.perf_counter() - t0}
    return out
