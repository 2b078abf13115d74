"""Reads -> variant-calling rows: one row per candidate site, its pileup image as the input.

    medmix ingest variants --bam reads.bam --ref ref.fa --truth truth.vcf.gz [--regions chr1:1-50000]

Candidates, pileups and truth genotypes come from `medmix.data.genomics.variants` (one Ray
task per region). Each candidate is one row of the `variant_calling` task: label = copies of
the ALT in the truth genotype (0, 1, 2; absent from truth = 0). A truth VCF is required: like
every medmix ingest we store no unlabelled rows (calling an unlabelled BAM is
`genomics.vcf.call_variants`' job, which needs no store). Rows are written in one store
transaction (`common.write_ingest`); the split is `auto` (a hash of the example id, 80/10/10)
or one split for every row — hold out whole contigs by ingesting them with
`--regions chr20 --split test`, as DeepVariant does.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from pathlib import Path

import pysam

from medmix.data.genomics import compare
from medmix.data.genomics.config import CandidateConfig, PileupConfig
from medmix.data.genomics.alleles import Variant, record_variants
from medmix.data.genomics.inputs import (GenomicsInputError, Region, open_fasta, open_vcf,
                                         parse_regions, vcf_records)
from medmix.data.genomics.variants import Candidate, plan_regions, process_region
from medmix.data.ingest.common import (IngestSummary, ItemResult, guarded, hash_split, run_parallel,
                                       write_ingest)
from medmix.data.schema import Example
from medmix.data.store import sha256_file
from medmix.tasks.builtin import GENOTYPES


def example_id_of(sample: str, v: Variant) -> str:
    return f"{sample}:{v.contig}:{v.pos + 1}:{v.ref}>{v.alt}"


def candidate_example(c: Candidate, sample: str, task: str, split: str, source: str) -> Example:
    v = c.variant
    example_id = example_id_of(sample, v)
    return Example(
        example_id=example_id, task=task, split=hash_split(example_id) if split == "auto" else split,
        context={"locus": v.locus, "chrom": v.contig, "pos": v.pos + 1, "ref": v.ref, "alt": v.alt,
                 "kind": v.kind, "depth": c.depth, "alt_count": c.alt_count, "sample": sample},
        target=GENOTYPES[c.label], label=c.label,
        source=f"{source}#{v.contig}:{v.pos + 1}", images=[c.image], image_format="png")


def _region_rows(region: Region, *, sample: str, task: str, split: str, **kwargs) -> ItemResult:
    def rows(r: Region) -> ItemResult:
        res = process_region(r, **kwargs)
        return ItemResult(name=str(r), examples=[candidate_example(c, sample, task, split, kwargs["bam_path"])
                                                 for c in res.candidates])
    return guarded(rows, region, str(region))


def ingest_variants(store, bam: str, ref: str, truth: str, regions: list[str] | None = None,
                    task: str = "variant_calling", split: str = "auto", sample: str | None = None,
                    ccfg: CandidateConfig | None = None, pcfg: PileupConfig | None = None,
                    parallel: str = "auto", replace: bool = False, progress: bool = False) -> IngestSummary:
    """BAM + reference + truth VCF -> one row per candidate in `store` (Ray task per region).

    Args:
        split: `auto` (80/10/10 by a hash of the example id) or one split for every row.
        sample: name in example ids (default: the BAM file's stem).
        parallel: "ray", "local" (this process) or "auto" (Ray from 8 regions on).
        replace: drop the task's earlier rows instead of adding to them.
    """
    started = time.perf_counter()
    if not truth:
        raise GenomicsInputError(f"{bam}: no truth VCF given; a candidate without a genotype can "
                                 f"neither train nor be scored, so it is not stored (to call an "
                                 f"unlabelled BAM use medmix.data.genomics.vcf.call_variants)")
    ccfg, pcfg = ccfg or CandidateConfig(), pcfg or PileupConfig()
    sample = sample or Path(bam).name.split(".")[0]
    work = plan_regions(str(bam), str(ref), str(truth), regions, ccfg, pcfg)
    fn = partial(_region_rows, sample=sample, task=task, split=split, bam_path=str(bam),
                 ref_path=str(ref), truth_path=str(truth), ccfg=ccfg, pcfg=pcfg)
    results = run_parallel(fn, work, desc="variants", parallel=parallel, progress=progress)
    digests = [(Path(p).name, sha256_file(p)) for p in (bam, ref, truth)]
    source = {"path": str(bam), "reference": str(ref), "truth": str(truth),
              "regions": regions or "all", "split": split, "sample": sample, "min_depth": ccfg.min_depth,
              "min_alt_fraction": ccfg.min_alt_fraction, "min_indel_fraction": ccfg.min_indel_fraction}
    return write_ingest(store, kind="variants", task=task, results=_unique(results), source=source,
                        replace=replace, extra_digests=digests, unit="regions", started=started)


def variant_truth(store, task: str, split: str) -> tuple[list[tuple] | None, str]:
    """Every truth variant of `task`'s `split`, read back from the truth VCFs its ingests
    recorded: (chrom, 1-based pos, ref, alt, copies) per normalised (MNPs atomised) item in
    the ingested regions, in this split — a variant no candidate covered lands in the split
    its row would have had. Returns (None, why) when the truth cannot be rebuilt (an ingest
    from before the split was recorded, or a truth/reference file no longer there)."""
    sources = [s for s in store.manifest().get("sources", [])
               if s.get("kind") == "variants" and s.get("task") == task]
    if not sources:
        return None, f"no variants ingest recorded for task {task}"
    out: list[tuple] = []
    for src in sources:
        if "split" not in src or "sample" not in src:
            return None, (f"the ingest of {src.get('path')} predates recorded splits; re-ingest it "
                          f"(--replace) to score recall against its whole truth set")
        missing = [src[k] for k in ("truth", "reference") if not Path(src[k]).is_file()]
        if missing:
            return None, f"truth inputs no longer there: {', '.join(missing)}"
        if src["split"] not in ("auto", split):
            continue
        fasta = open_fasta(src["reference"])
        try:
            regions = parse_regions(None if src["regions"] == "all" else list(src["regions"]), fasta)
            if src["regions"] == "all" and Path(src["path"]).is_file():
                with pysam.AlignmentFile(src["path"]) as bam:  # candidates came from its contigs only
                    regions = [r for r in regions if r.contig in set(bam.references)]
            entries = []
            with open_vcf(src["truth"], fasta) as vcf:
                for region in regions:
                    for rec in vcf_records(vcf, region):
                        entries.extend(record_variants(rec, fasta))
        finally:
            fasta.close()
        for v, copies in sorted(compare.items(entries).items()):
            here = hash_split(example_id_of(src["sample"], v)) if src["split"] == "auto" else src["split"]
            if here == split:
                out.append((v.contig, v.pos + 1, v.ref, v.alt, copies))
    return out, f"{len(out)} truth variants from {', '.join(sorted({s['truth'] for s in sources}))}"


def _unique(results):
    """Drop a candidate already seen in an earlier region (see `_merge`)."""
    seen: set[str] = set()
    for r in results:
        r.examples = [ex for ex in r.examples if ex.example_id not in seen]
        seen.update(ex.example_id for ex in r.examples)
        yield r


def label_counts(store, summary: IngestSummary) -> dict[str, int]:
    """Rows per genotype among the shards an ingest wrote."""
    counts: Counter = Counter()
    for shard in summary.shards:
        counts.update(store.read_shard(shard, columns=["target"]).column(0).to_pylist())
    return dict(counts)
