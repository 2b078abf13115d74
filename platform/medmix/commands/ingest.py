"""`medmix ingest <kind>`: real-format sources -> the shard store. All of the verb's wiring lives here.

    medmix ingest dicom scans/ --task cxr_report --labels reports.csv
    medmix ingest images photos/ --task derm_pad --on-error skip
    medmix ingest qa medqa.jsonl --task medqa
    medmix ingest medqa US/4_options/          # MedQA, MedMCQA, PubMedQA as they are published
    medmix ingest medmcqa medmcqa_data/ && medmix ingest pubmedqa data/ori_pqal.json
    medmix ingest pad-ufes PAD-UFES-20/        # metadata.csv + images, split by patient
    medmix ingest conversations llava_med.json --task vqa_rad    # LLaVA / ShareGPT conversations
    medmix ingest hf vqa_rad ./vqa_rad_hf --map image=img          # a Hugging Face dataset on disk
    medmix ingest vqa-rad VQA_RAD/ ; medmix ingest slake Slake1.0/ ; medmix ingest path-vqa data/
    medmix ingest vindr-mammo vindr-mammo/1.0.0/
    medmix ingest cbis-ddsm CBIS-DDSM/ --task mammo_cbis_calc   # description CSVs + DICOMs, published split
    medmix ingest mimic-notes NOTEEVENTS.csv.gz               # MIMIC-III radiology findings -> impression
    medmix ingest mimic-cxr mimic-cxr-jpg/2.0.0/ --task cxr_report --reports-root mimic-cxr/2.0.0/
    medmix ingest reports                      # the IU chest X-ray reports torchxrayvision ships
    medmix ingest variants --bam reads.bam --ref ref.fa --truth truth.vcf.gz --regions chr20
    medmix ingest genotypes --vcf cohort.vcf.gz --weights gwas.tsv --phenotypes pheno.tsv
    medmix ingest volumes scans/*.nii.gz --reports reports.csv --slices 16

Every kind is always listed: one whose optional dependency (pysam, nibabel) is missing says so,
naming the package to install, when it runs. Each kind parses its flags and calls the one
function tests call too (`ingest_dicom`, ..., `ingest_variants`, `ingest_genotypes`, `ingest_volumes`).

Each runs as one store transaction: a failure leaves the store as it was. Folders fan out as
Ray tasks (a local Ray, or the cluster in RAY_ADDRESS). The summary at the end gives rows per
split, skipped items and the quarantine report (with --on-error skip).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json

from medmix.cli import add_config_args, resolve_config
from medmix.data.genomics.config import CandidateConfig, PileupConfig
from medmix.options import validate
from medmix.tasks.files import register_task_file

SPLIT_CHOICES = ("auto", "train", "val", "test")


def add_parser(sub) -> None:
    p = sub.add_parser("ingest", help="ingest DICOM, images + labels CSV, QA JSONL, report XML, reads, genotypes, volumes",
                       description="Turn real-format sources into rows of one task in the shard "
                                   "store, in one transaction (a failed ingest changes nothing). "
                                   "Bad items stop the ingest (--on-error raise) or are "
                                   "quarantined and listed in <root>/quarantine/ (--on-error skip).")
    ksub = p.add_subparsers(dest="ingest_kind", required=True)
    add_ingest_subparsers(ksub)


def add_ingest_subparsers(ksub) -> None:
    """Register every ingest kind under `ksub` (the ingest verb's subparsers)."""

    def common(q: argparse.ArgumentParser, task_help: str, task_default: str | None = None,
               positional_task: bool = False) -> None:
        if not positional_task:
            q.add_argument("--task", required=task_default is None, default=task_default,
                           help=task_help + " (see `medmix tasks`)")
        q.add_argument("--task-file", action="append", default=[], metavar="TOML",
                       help="define new tasks from a TOML file ([[task]] tables: name, kind, "
                            "instruction, options, metrics, ...; see `medmix tasks --help`) before "
                            "ingesting; the store then carries their definitions (repeatable)")
        q.add_argument("--root", help="shard store directory (default: data.root of the config)")
        q.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                       help="raise: stop at the first bad item, store unchanged (default); "
                            "skip: quarantine bad items, ingest the rest, write a JSONL report")
        q.add_argument("--replace", action="store_true",
                       help="drop the task's existing rows when this ingest commits")
        q.add_argument("--parallel", choices=("auto", "ray", "local"), default="auto",
                       help="auto: Ray tasks for 8+ files, in-process below (default); "
                            "ray / local: force one")
        q.add_argument("--no-progress", action="store_true", help="no progress bar")
        add_config_args(q)
        q.set_defaults(func=run)

    d = ksub.add_parser("dicom", help="DICOM files/folders -> image rows",
                        description="DICOM files or folders (walked recursively) -> one image row "
                                    "per file and label row: Modality LUT, VOI LUT/window, "
                                    "MONOCHROME1 inverted, 8-bit, square-resized PNG; header "
                                    "fields (view, modality, body part, laterality, sex, age) "
                                    "into context. Multi-frame files give their middle frame.")
    d.add_argument("paths", nargs="+", help="DICOM files or folders")
    d.add_argument("--labels", help="CSV: file, label (option tasks) or target (free text); "
                                    "optional split, id, group; other columns -> context")
    d.add_argument("--target", help="one answer for every file (instead of --labels)")
    d.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                   help="a context field for every row, e.g. condition=edema (repeatable)")
    d.add_argument("--pattern", default="*", help="file-name glob inside folders (default: *)")
    common(d, "image task the rows belong to, e.g. cxr_report, cxr_classify, mammo_vindr")

    i = ksub.add_parser("images", help="a folder of PNG/JPEG + labels CSV -> image rows",
                        description="One row per labels-CSV row: file (relative to the folder), "
                                    "label (option text, letter or 0-based index) or target; "
                                    "optional split, id, group; other columns -> context.")
    i.add_argument("folder", help="folder of images")
    i.add_argument("--labels", help="labels CSV (default: FOLDER/labels.csv)")
    i.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                   help="a context field for every row (repeatable)")
    common(i, "image task, e.g. derm_pad, mammo_cbis_mass, cxr_classify")

    q = ksub.add_parser("qa", help="JSONL multiple-choice questions -> MCQ rows",
                        description='One JSON object per line: {"id", "question", "options": [...], '
                                    '"answer": text | letter | 0-based index, optional "split"}.')
    q.add_argument("paths", nargs="+", help="JSONL files or folders of *.jsonl")
    common(q, "text MCQ task: medqa, medmcqa (or pubmedqa)")

    m = ksub.add_parser("medqa", help="MedQA (US) as published: JSON lines with lettered options",
                        description="MedQA's data_clean/questions/US files (the 4_options/ "
                                    "phrases_no_exclude_<split>.jsonl, or the 5-option "
                                    "<split>.jsonl): question, options {A..D|E}, answer_idx, "
                                    "meta_info. Split from the file name (dev -> val).")
    m.add_argument("paths", nargs="+", help="MedQA .jsonl files or a folder of them")
    common(m, "task", task_default="medqa")
    mc = ksub.add_parser("medmcqa", help="MedMCQA as published: train.json / dev.json JSON lines",
                         description="MedMCQA's JSON-lines files: id, question, opa..opd, cop "
                                     "(1-4 in the published files), subject_name, topic_name, exp. "
                                     "dev.json -> test (the reported set), train.json -> train/val.")
    mc.add_argument("paths", nargs="+", help="train.json, dev.json or their folder")
    mc.add_argument("--cop-base", type=int, choices=(0, 1), default=1,
                    help="1: cop counts opa as 1 (published files, default); 0: Hugging Face exports")
    common(mc, "task", task_default="medmcqa")
    pq = ksub.add_parser("pubmedqa", help="PubMedQA PQA-L as published: ori_pqal.json",
                         description="ori_pqal.json {pmid: {QUESTION, CONTEXTS, LABELS, "
                                     "final_decision, LONG_ANSWER, ...}}; the pmids of "
                                     "test_ground_truth.json (beside it, or --test-ids) are the "
                                     "test split.")
    pq.add_argument("paths", nargs="+", help="ori_pqal.json or its folder")
    pq.add_argument("--test-ids", help="test_ground_truth.json (default: the one beside the file)")
    common(pq, "task", task_default="pubmedqa")

    pu = ksub.add_parser("pad-ufes", help="PAD-UFES-20 as published: metadata.csv + images/",
                         description="PAD-UFES-20's metadata.csv (diagnostic ACK/BCC/MEL/NEV/SCC/"
                                     "SEK, fitspatrick, img_id, patient_id, ...) and its images "
                                     "under the folder; split by patient_id.")
    pu.add_argument("folder", help="the PAD-UFES-20 folder (metadata.csv, images/)")
    common(pu, "task", task_default="derm_pad")

    cv = ksub.add_parser("conversations", help="LLaVA / ShareGPT conversation JSON -> rows of any task",
                         description="LLaVA(-Med) {id, image, conversations: [{from, value}]} or "
                                     "ShareGPT/LLaMA-Factory {conversations|messages, images} "
                                     "records (.json list or .jsonl): each user turn + assistant "
                                     "answer is one example; <image> tokens removed.")
    cv.add_argument("paths", nargs="+", help=".json or .jsonl files")
    cv.add_argument("--images-root", help="folder the image paths start from (default: the file's folder)")
    common(cv, "task the turns fill, e.g. vqa_rad, slake_vqa, derm_pad, pubmedqa")

    hf = ksub.add_parser("hf", help="a Hugging Face datasets dataset on disk -> rows of any task",
                         description="A folder written by Dataset(Dict).save_to_disk, or a folder/file "
                                     "of .parquet/.arrow files (a hub repository's files, downloaded "
                                     "first: no hub access), with --map FIELD=COLUMN into the task's "
                                     "fields (answer, question, image, options, context fields, id, "
                                     "split, group); Image columns give the images, ClassLabel "
                                     "columns their class names.")
    hf.add_argument("task", help="registered task the rows fill, e.g. vqa_rad, derm_pad, medqa (see `medmix tasks`)")
    hf.add_argument("path", help="save_to_disk folder, or a folder / file of .parquet or .arrow files")
    hf.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN", dest="map",
                    help="fill a task field from a column (repeatable); a field named like a column "
                         "needs none")
    hf.add_argument("--split", default="auto", choices=SPLIT_CHOICES,
                    help="auto: the dataset's splits (DatasetDict names, file names), a mapped split "
                         "column, else an 80/10/10 hash of group/image/id; or one split for every row")
    common(hf, "", positional_task=True)

    for name, what in (("vqa-rad", 'VQA-RAD: "VQA_RAD Dataset Public.json" + its image folder; '
                                   'phrase_type test_* -> test'),
                       ("slake", "Slake 1.0: train.json, validate.json, test.json + imgs/"),
                       ("path-vqa", "Path-VQA's parquet release ({train,validation,test}-*.parquet; "
                                    "pickles are never opened)")):
        v = ksub.add_parser(name, help=what.split(":")[0] + " as published", description=what)
        v.add_argument("path", help="the dataset's folder (or its annotation file)")
        if name == "slake":
            v.add_argument("--lang", choices=("en", "zh", "all"), default="en",
                           help="question language kept (default en, as MultiMedBench)")
        common(v, "task", task_default={"vqa-rad": "vqa_rad", "slake": "slake_vqa",
                                        "path-vqa": "path_vqa"}[name])

    vm = ksub.add_parser("vindr-mammo", help="VinDr-Mammo as published: breast-level CSV + DICOMs",
                         description="breast-level_annotations.csv (breast_birads, laterality, "
                                     "view_position, breast_density, split training/test) and "
                                     "images/<study_id>/<image_id>.dicom.")
    vm.add_argument("folder", help="the release's top folder")
    common(vm, "task", task_default="mammo_vindr")

    cb = ksub.add_parser("cbis-ddsm", help="CBIS-DDSM as published: case description CSVs + DICOMs",
                         description="{mass,calc}_case_description_{train,test}_set.csv (pathology, "
                                     "cropped image file path, ...) and the DICOM download (classic or "
                                     "descriptive folder names); the abnormality's cropped patch, the "
                                     "published train/test split (val carved by patient).")
    cb.add_argument("folder", help="the folder holding the CSVs and the DICOM tree (or its CBIS-DDSM/)")
    cb.add_argument("--image", choices=("cropped", "full"), default="cropped",
                    help="cropped: the abnormality patch (default, as MultiMedBench); full: the mammogram")
    common(cb, "mammo_cbis_mass (mass CSVs) or mammo_cbis_calc (calc CSVs)", task_default="mammo_cbis_mass")

    mn = ksub.add_parser("mimic-notes", help="MIMIC-III NOTEEVENTS / MIMIC-IV-Note radiology.csv -> findings->impression",
                         description="Radiology reports (CATEGORY Radiology in MIMIC-III's "
                                     "NOTEEVENTS.csv[.gz], or MIMIC-IV-Note's radiology.csv[.gz]): "
                                     "FINDINGS -> IMPRESSION rows, split by subject; streamed.")
    mn.add_argument("path", help="NOTEEVENTS.csv(.gz) or radiology.csv(.gz)")
    common(mn, "summarization task", task_default="mimic3_summary")

    mc2 = ksub.add_parser("mimic-cxr", help="MIMIC-CXR(-JPG) as published -> cxr_classify or cxr_report",
                          description="mimic-cxr-2.0.0-{metadata,split,chexpert}.csv(.gz), images "
                                      "files/p../p<subject>/s<study>/<dicom_id>.jpg|.dcm, reports "
                                      "s<study>.txt; official split; uncertain labels skipped.")
    mc2.add_argument("release", help="the release folder (mimic-cxr-jpg/2.0.0 or mimic-cxr/2.0.0)")
    mc2.add_argument("--reports-root", help="the MIMIC-CXR folder holding the report .txt files "
                                            "(default: RELEASE)")
    mc2.add_argument("--views", default="PA,AP", help="ViewPositions kept, comma-separated (default PA,AP)")
    common(mc2, "cxr_classify or cxr_report", task_default="cxr_classify")

    r = ksub.add_parser("reports", help="IU chest X-ray report XML -> findings->impression rows",
                        description="Report XML (.tgz archive, folder or file) -> summarization "
                                    "rows; reports without FINDINGS or IMPRESSION are skipped and "
                                    "counted. Default source: torchxrayvision's NLMCXR_reports.tgz "
                                    "(CC BY-NC-ND 4.0, read in place, never copied).")
    r.add_argument("path", nargs="?", help="archive, folder or XML file (default: torchxrayvision's)")
    common(r, "summarization task", task_default="mimic3_summary")

    _add_genomics_and_volumes(ksub)
    ksub.metavar = "<" + "|".join(ksub.choices) + ">"


def run(args: argparse.Namespace) -> int:
    store = _store(args)
    if store.exists():
        store.manifest()   # registers the tasks the store already carries definitions of
    for path in getattr(args, "task_file", None) or []:
        register_task_file(path)
    common = dict(task=args.task, on_error=args.on_error, replace=args.replace,
                  parallel=args.parallel, progress=not args.no_progress)
    if args.ingest_kind == "dicom":
        from medmix.data.ingest.dicom import ingest_dicom
        summary = ingest_dicom(store, args.paths, labels=args.labels, target=args.target,
                               context=args.context, pattern=args.pattern, **common)
    elif args.ingest_kind == "images":
        from medmix.data.ingest.image_folder import ingest_images
        summary = ingest_images(store, args.folder, labels=args.labels, context=args.context, **common)
    elif args.ingest_kind == "qa":
        from medmix.data.ingest.qa import ingest_qa
        summary = ingest_qa(store, args.paths, **common)
    elif args.ingest_kind == "conversations":
        from medmix.data.ingest.conversations import ingest_conversations
        summary = ingest_conversations(store, args.paths, images_root=args.images_root, **common)
    elif args.ingest_kind == "hf":
        hf = _require("medmix.data.ingest.hf", "medmix ingest hf", "datasets")
        summary = hf.ingest_hf(store, args.path, mapping=args.map, split=args.split, **common)
    elif args.ingest_kind in ("vqa-rad", "slake", "path-vqa"):
        from medmix.data.ingest.vqa_published import ingest_path_vqa, ingest_slake, ingest_vqa_rad
        if args.ingest_kind == "slake":
            summary = ingest_slake(store, args.path, lang=args.lang, **common)
        else:
            fn = ingest_vqa_rad if args.ingest_kind == "vqa-rad" else ingest_path_vqa
            summary = fn(store, args.path, **common)
    elif args.ingest_kind == "vindr-mammo":
        from medmix.data.ingest.vindr_mammo import ingest_vindr_mammo
        summary = ingest_vindr_mammo(store, args.folder, **common)
    elif args.ingest_kind == "cbis-ddsm":
        from medmix.data.ingest.cbis_ddsm import ingest_cbis_ddsm
        summary = ingest_cbis_ddsm(store, args.folder, image=args.image, **common)
    elif args.ingest_kind == "mimic-notes":
        from medmix.data.ingest.mimic_notes import ingest_mimic_notes
        summary = ingest_mimic_notes(store, args.path, **common)
    elif args.ingest_kind == "mimic-cxr":
        from medmix.data.ingest.mimic_cxr import ingest_mimic_cxr
        summary = ingest_mimic_cxr(store, args.release, reports_root=args.reports_root,
                                   views=args.views.split(","), **common)
    elif args.ingest_kind == "pad-ufes":
        from medmix.data.ingest.pad_ufes import ingest_pad_ufes
        summary = ingest_pad_ufes(store, args.folder, **common)
    elif args.ingest_kind in ("medqa", "medmcqa", "pubmedqa"):
        from medmix.data.ingest.qa_published import ingest_medmcqa, ingest_medqa, ingest_pubmedqa
        fn = {"medqa": ingest_medqa, "medmcqa": ingest_medmcqa, "pubmedqa": ingest_pubmedqa}[args.ingest_kind]
        extra = ({"cop_base": args.cop_base} if args.ingest_kind == "medmcqa" else
                 {"test_ids": args.test_ids} if args.ingest_kind == "pubmedqa" else {})
        summary = fn(store, args.paths, **common, **extra)
    else:
        from medmix.data.ingest.reports import ingest_reports
        summary = ingest_reports(store, args.path, **common)
    print(summary.render())
    return 0


# --- genomics and 3D volumes ----------------------------------------------------------------

def _common(p: argparse.ArgumentParser, task: str, parallel: bool = True) -> None:
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


def _add_genomics_and_volumes(sub) -> None:
    """`variants`, `genotypes` and `volumes`: their defaults come from pysam-free configs."""
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
    from medmix.data.store import ShardStore
    cfg = resolve_config(args)
    store_cfg = dataclasses.replace(cfg.data, root=args.root or cfg.data.root)
    return ShardStore(store_cfg.root, store_cfg)


def run_variants(args: argparse.Namespace) -> int:
    variants = _require("medmix.data.ingest.variants", "medmix ingest variants", "pysam")
    ingest_variants, label_counts = variants.ingest_variants, variants.label_counts
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
    genotypes = _require("medmix.data.ingest.genotypes", "medmix ingest genotypes", "pysam")
    PolygenicConfig, ingest_genotypes = genotypes.PolygenicConfig, genotypes.ingest_genotypes
    cfg = PolygenicConfig(p_thresholds=args.p_thresholds) if args.p_thresholds else PolygenicConfig()
    summary = ingest_genotypes(_store(args), args.vcf, args.weights, args.phenotypes, args.task,
                               args.split, cfg, replace=args.replace, progress=True)
    print(summary.render())
    return 0


def run_volumes(args: argparse.Namespace) -> int:
    volumes = _require("medmix.data.ingest.volumes", "medmix ingest volumes", "nibabel")
    VolumeConfig, ingest_volumes = volumes.VolumeConfig, volumes.ingest_volumes
    cfg = VolumeConfig(num_slices=args.slices, image_size=args.image_size, window=args.window)
    summary = ingest_volumes(_store(args), args.paths, args.reports, args.task, args.split,
                             args.modality, cfg, on_error=args.on_error, parallel=args.parallel,
                             replace=args.replace, progress=True)
    print(summary.render())
    return 0


def _require(module: str, verb: str, package: str):
    """Import the module behind an ingest kind; a missing optional dependency is one clear line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("medmix"):
            hint = package if exc.name == package else exc.name
            raise SystemExit(f"{verb} needs the Python package {exc.name!r}, which is not installed "
                             f"(pip install {hint})") from None
        raise
