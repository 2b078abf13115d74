"""Genomics ingest throughput: candidates/s and pileups/s per core, and a Ray ingest's wall time.

    .venv/bin/python benchmarks/genomics.py [--bp 100000] [--coverage 30] [--workers 4]

Simulates one sample (two contigs of --bp each), then
1. runs `process_region` in this process over every region: per-core candidates/s (reading
   the region's reads + allele counts) and pileups/s (pileup tensor + 224 px image + PNG);
2. runs `ingest_variants` through Ray tasks (a local Ray with --workers logical CPUs) into a
   temporary store: rows/s end to end (Ray started before the clock).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bp", type=int, default=100_000, help="bp per contig (two contigs)")
    ap.add_argument("--coverage", type=float, default=30.0)
    ap.add_argument("--region-size", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=4, help="logical CPUs of the local Ray")
    args = ap.parse_args()

    from medmix.data.genomics.inputs import Region, split_regions
    from medmix.data.genomics.pileup import PileupConfig
    from medmix.data.genomics.simulate import SimulationConfig, simulate_sample
    from medmix.data.genomics.config import CandidateConfig
    from medmix.data.genomics.variants import process_region
    from medmix.data.ingest.variants import ingest_variants
    from medmix.data.store import ShardStore

    work = Path(tempfile.mkdtemp(prefix="medmix-bench-genomics-"))
    t0 = time.perf_counter()
    sim = simulate_sample(work / "sim", SimulationConfig(contigs={"chr1": args.bp, "chr2": args.bp},
                                                         coverage=args.coverage))
    simulate_s = time.perf_counter() - t0
    ccfg, pcfg = CandidateConfig(region_size=args.region_size), PileupConfig()
    regions = split_regions([Region(c, 0, args.bp) for c in ("chr1", "chr2")], args.region_size)
    cand_s = pile_s = 0.0
    n = 0
    for r in regions:
        res = process_region(r, str(sim.bam), str(sim.reference), str(sim.truth), ccfg, pcfg)
        cand_s += res.candidate_seconds
        pile_s += res.pileup_seconds
        n += len(res.candidates)

    import ray
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    summary = ingest_variants(ShardStore(work / "store"), str(sim.bam), str(sim.reference), str(sim.truth),
                              ccfg=ccfg, parallel="ray")
    ray_s = time.perf_counter() - t0
    ray.shutdown()
    print(json.dumps({
        "bp": 2 * args.bp, "reads": sim.num_reads, "candidates": n, "simulate_s": round(simulate_s, 2),
        "candidates_per_s_per_core": round(n / cand_s, 1), "pileups_per_s_per_core": round(n / pile_s, 1),
        "ray_ingest_rows": summary.total_rows, "ray_ingest_s": round(ray_s, 2),
        "ray_rows_per_s": round(summary.total_rows / ray_s, 1), "workers": args.workers}, indent=1))


if __name__ == "__main__":
    main()
