"""`medmix call-variants`: a trained model calls genotypes on a BAM and writes an indexed VCF.

    medmix call-variants --model medmix@champion --bam reads.bam --ref ref.fa --out calls.vcf.gz \
        [--truth truth.vcf.gz [--confident-bed confident.bed]] [--regions chr1:1-100000 ...]

Candidates come from pileup allele counts, each candidate becomes the same DeepVariant-style
pileup image the `variant_calling` task trained on, and the model scores the three genotype
options (`score_options`, the evaluation path); the VCF's GT is the best option and QUAL/GQ
the phred-scaled probability that it is wrong. With --truth, SNP-F1 and Indel-F1 are printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medmix.lineage.config import TrackerConfig
from medmix.model.resolve import resolve


def add_parser(sub) -> None:
    p = sub.add_parser(
        "call-variants", help="call genotypes on a BAM with a trained model; write an indexed VCF",
        description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="medmix@champion, medmix/N, an export directory or a checkpoint directory")
    p.add_argument("--bam", required=True, help="sorted, indexed BAM")
    p.add_argument("--ref", required=True, help="reference FASTA (with .fai)")
    p.add_argument("--out", required=True, help="output VCF (.vcf.gz; a .tbi index is written beside it)")
    p.add_argument("--truth", help="truth VCF: print SNP-F1 / Indel-F1 of the calls against it")
    p.add_argument("--confident-bed", help="with --truth: count only variants in these BED "
                                           "intervals (the truth set's confident regions)")
    p.add_argument("--regions", nargs="*", help="regions like chr1 or chr1:1000-2000 (default: all contigs)")
    p.add_argument("--batch-size", type=int, default=64, help="candidates scored per model call")
    p.add_argument("--tracking-root", default="medmix-runs", help="lineage root with the MLflow registry")
    p.set_defaults(func=run)


def model_predict_fn(export_dir: str | Path, task: str = "variant_calling"):
    """predict_fn(images (B,224,224,3) uint8, contexts) -> (B, 3) genotype probabilities."""
    import numpy as np

    from medmix.data.images import encode_png
    from medmix.evaluate.predict import Predictor, predict_rows

    predictor = Predictor.from_export(export_dir)

    def predict(images, contexts):
        rows = [{"example_id": f"candidate-{i}", "task": task, "context": dict(ctx),
                 "images": [encode_png(np.asarray(img))], "image_format": "png", "target": "", "label": None}
                for i, (img, ctx) in enumerate(zip(images, contexts))]
        return np.array([p.option_probs for p in predict_rows(predictor, rows)])
    return predict


def call(model: str, bam: str, ref: str, out: str, *, truth: str | None = None, regions=None,
         batch_size: int = 64, tracking_root: str = "medmix-runs", confident_bed: str | None = None) -> dict:
    from medmix.data.genomics.vcf import call_variants, compare_to_truth
    export = resolve(model, TrackerConfig(root=tracking_root))
    stats = call_variants(model_predict_fn(export.path), bam, ref, out, regions=regions, batch_size=batch_size)
    stats["model"] = export.label
    if truth:
        import pysam

        from medmix.data.genomics.inputs import parse_regions
        with pysam.FastaFile(str(ref)) as fasta:
            parsed = parse_regions(regions, fasta) if regions else None
        stats["truth"] = compare_to_truth(stats["vcf"], truth, ref_fasta=ref, regions=parsed,
                                          confident_bed=confident_bed)
    return stats


def run(args: argparse.Namespace) -> int:
    stats = call(args.model, args.bam, args.ref, args.out, truth=args.truth, regions=args.regions,
                 batch_size=args.batch_size, tracking_root=args.tracking_root,
                 confident_bed=args.confident_bed)
    calls = stats["calls"]
    print(f"{stats['vcf']}: {sum(calls.values())} candidates called by {stats['model']} "
          f"(het {calls['het']}, hom-alt {calls['hom_alt']}, hom-ref {calls['hom_ref']})")
    if "truth" in stats:
        t = stats["truth"]
        print(f"vs truth: SNP-F1 {t['snp_f1']:.3f}  Indel-F1 {t['indel_f1']:.3f}")
    return 0
