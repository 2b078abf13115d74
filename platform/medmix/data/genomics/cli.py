"""`medmix ingest variants | genotypes | volumes`: the genomics and 3D sources of the ingest verb.

The ingest verb calls `add_ingest_subparsers(its_subparsers)`; each subcommand parses its
flags and calls the one function tests call too (`ingest_variants`, `ingest_genotypes`,
`ingest_volumes`).

    medmix ingest variants --bam reads.bam --ref ref.fa --truth truth.vcf.gz --regions chr20
    medmix ingest genotypes --vcf cohort.vcf.gz --weights gwas.tsv --phenotypes pheno.tsv
    medmix ingest volumes scans/*.nii.gz --reports reports.csv --slices 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json

SPLIT_CHOICES = ("auto", "train", "val", "test")


def _common(p: argparse.ArgumentParser, task: str, parallel: bool = True) -> None:
    from medmix.cli import add_config_args
    g = p.add_argument_group("where rows go")
    g.add_argument("--root", help="shard store directory (default: data.root of the config)")
    g.add_argument("--task", default=task, help=f"registered task the rows belong to (default: {task})")
    g.add_argument("--split", default="auto", choices=SPLIT_CHOICES,
                   help="split of every row, or auto: 80/10/10 by a stable hash (default: auto)")
    g.add_argument("--replace", action="store_true",
                   help="drop the task's existing rows when this ingest commits")
    if parallel:
        g.add_argument("--parallel", choices=("auto", "ray", "local"), default="auto",
                       help="auto: Ray tasks from 8 work items on, in-process below (default); "
                            "ray / local: force one")
    add_config_args(p)


def add_ingest_subparsers(sub) -> None:
    """Register `variants`, `genotypes` and `volumes` under the ingest verb's subparsers."""
    from medmix.data.genomics.pileup import PileupConfig
    from medmix.data.genomics.variants import CandidateConfig
    c, pc = CandidateConfig(), PileupConfig()
    v = sub.add_parser("variants", help="BAM + reference (+ truth VCF) -> variant-calling pileups",
                       description="Find candidate variants from pileup allele counts and store "
                                   "one DeepVariant-style pileup image per candidate, labelled with "
                                   "its genotype in the truth VCF (absent = hom-ref).")
    v.add_argument("--bam", required=True, help="coordinate-sorted, indexed BAM")
    v.add_argument("--ref", required=True, help="reference FASTA the reads were aligned to")
    v.add_argument("--truth", required=True,
                   help="truth VCF (bgzipped + tabix, or plain) giving the labels; candidates "
                        "absent from it are hom-ref")
    v.add_argument("--regions", nargs="+", metavar="REGION",
                   help="contig or contig:start-end (1-based, inclusive); default: every contig")
    v.add_argument("--sample", help="sample name in example ids (default: the BAM's file name)")
    t = v.add_argument_group("candidate thresholds")
    t.add_argument("--min-depth", type=int, default=c.min_depth, help=f"default {c.min_depth}")
    t.add_argument("--min-alt-count", type=int, default=c.min_alt_count, help=f"default {c.min_alt_count}")
    t.add_argument("--min-alt-fraction", type=float, default=c.min_alt_fraction,
                   help=f"SNPs (default {c.min_alt_fraction})")
    t.add_argument("--min-indel-fraction", type=float, default=c.min_indel_fraction,
                   help=f"indels (default {c.min_indel_fraction})")
    t.add_argument("--min-base-quality", type=int, default=c.min_base_quality, help=f"default {c.min_base_quality}")
    t.add_argument("--min-mapq", type=int, default=c.min_mapq, help=f"default {c.min_mapq}")
    t.add_argument("--region-size", type=int, default=c.region_size, help=f"bp per Ray task (default {c.region_size})")
    t.add_argument("--ref-rows", type=int, default=pc.ref_rows,
                   help="reference rows atop the pileup (default 0: 100 read rows)")
    _common(v, "variant_calling")
    v.set_defaults(func=run_variants)

    g = sub.add_parser("genotypes", help="genotype VCF + GWAS weights -> polygenic risk images",
                       description="Compute polygenic scores per trait at each p-value threshold "
                                   "(one image channel each), draw them as 8x8 blocks, and store "
                                   "one yes/no row per sample and outcome.")
    g.add_argument("--vcf", required=True, help="genotypes of many samples (VCF/BCF)")
    g.add_argument("--weights", required=True, help="TSV: trait chrom pos effect_allele other_allele beta p")
    g.add_argument("--phenotypes", required=True, help="TSV: sample <trait>... with 1/0 (yes/no; NA = unknown)")
    g.add_argument("--p-thresholds", nargs="+", type=float, metavar="P",
                   help="1 to 3 GWAS p-value thresholds (default 1e-4 1e-2 1)")
    _common(g, "polygenic_risk", parallel=False)
    g.set_defaults(func=run_genotypes)

    o = sub.add_parser("volumes", help="NIfTI files / DICOM series -> sequences of windowed slices",
                       description="Resample each volume to N axial slices along depth, window "
                                   "them, and store them as one row of N images.")
    o.add_argument("paths", nargs="+", help="NIfTI files (.nii, .nii.gz) or DICOM series folders")
    o.add_argument("--reports", required=True, help="CSV file,report[,modality][,split]: the target text per volume")
    o.add_argument("--modality", help="modality of every volume (default: DICOM tag; NIfTI: MR)")
    o.add_argument("--slices", type=int, default=16, help="slices per volume (default 16)")
    o.add_argument("--image-size", type=int, default=224, help="side of each slice image (default 224)")
    o.add_argument("--window", default="auto", help="auto, percentile, or centre,width (e.g. 40,400)")
    o.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="raise: stop at the first bad volume, store unchanged (default); "
                        "skip: quarantine bad volumes, ingest the rest")
    _common(o, "volume_report")
    o.set_defaults(func=run_volumes)


def _store(args):
    from medmix.cli import resolve_config
    from medmix.data.store import ShardStore
    cfg = resolve_config(args)
    store_cfg = dataclasses.replace(cfg.data, root=args.root or cfg.data.root)
    return ShardStore(store_cfg.root, store_cfg)


def run_variants(args: argparse.Namespace) -> int:
    from medmix.config import validate
    from medmix.data.genomics.pileup import PileupConfig
    from medmix.data.genomics.variants import CandidateConfig, ingest_variants, label_counts
    ccfg = CandidateConfig(min_depth=args.min_depth, min_alt_count=args.min_alt_count,
                           min_alt_fraction=args.min_alt_fraction, min_indel_fraction=args.min_indel_fraction,
                           min_base_quality=args.min_base_quality, min_mapq=args.min_mapq,
                           region_size=args.region_size)
    validate(ccfg)
    store = _store(args)
    summary = ingest_variants(store, args.bam, args.ref, args.truth, args.regions, args.task,
                              args.split, args.sample, ccfg, PileupConfig(ref_rows=args.ref_rows),
                              parallel=args.parallel, replace=args.replace, progress=True)
    print(summary.render())
    print(f"genotypes: {json.dumps(label_counts(store, summary))}")
    return 0


def run_genotypes(args: argparse.Namespace) -> int:
    from medmix.data.genomics.polygenic import PolygenicConfig, ingest_genotypes
    cfg = PolygenicConfig(p_thresholds=args.p_thresholds) if args.p_thresholds else PolygenicConfig()
    summary = ingest_genotypes(_store(args), args.vcf, args.weights, args.phenotypes, args.task,
                               args.split, cfg, replace=args.replace, progress=True)
    print(summary.render())
    return 0


def run_volumes(args: argparse.Namespace) -> int:
    from medmix.data.volumes import VolumeConfig, ingest_volumes
    cfg = VolumeConfig(num_slices=args.slices, image_size=args.image_size, window=args.window)
    summary = ingest_volumes(_store(args), args.paths, args.reports, args.task, args.split,
                             args.modality, cfg, on_error=args.on_error, parallel=args.parallel,
                             replace=args.replace, progress=True)
    print(summary.render())
    return 0
