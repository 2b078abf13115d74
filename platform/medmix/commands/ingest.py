"""`medmix ingest dicom|images|qa|reports`: real-format sources -> the shard store.

    medmix ingest dicom scans/ --task cxr_report --labels reports.csv
    medmix ingest images photos/ --task derm_pad --on-error skip
    medmix ingest qa medqa.jsonl --task medqa
    medmix ingest reports                      # the IU chest X-ray reports torchxrayvision ships

Each runs as one store transaction: a failure leaves the store as it was. Folders fan out as
Ray tasks (a local Ray, or the cluster in RAY_ADDRESS). The summary at the end gives rows per
split, skipped items and the quarantine report (with --on-error skip).
"""

from __future__ import annotations

import argparse
import dataclasses


def add_parser(sub) -> None:
    from medmix.cli import add_config_args
    p = sub.add_parser("ingest", help="ingest DICOM, images + labels CSV, QA JSONL or report XML",
                       description="Turn real-format sources into rows of one task in the shard "
                                   "store, in one transaction (a failed ingest changes nothing). "
                                   "Bad items stop the ingest (--on-error raise) or are "
                                   "quarantined and listed in <root>/quarantine/ (--on-error skip).")
    ksub = p.add_subparsers(dest="ingest_kind", metavar="<dicom|images|qa|reports>", required=True)

    def common(q: argparse.ArgumentParser, task_help: str, task_default: str | None = None) -> None:
        q.add_argument("--task", required=task_default is None, default=task_default,
                       help=task_help + " (see `medmix tasks`)")
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

    r = ksub.add_parser("reports", help="IU chest X-ray report XML -> findings->impression rows",
                        description="Report XML (.tgz archive, folder or file) -> summarization "
                                    "rows; reports without FINDINGS or IMPRESSION are skipped and "
                                    "counted. Default source: torchxrayvision's NLMCXR_reports.tgz "
                                    "(CC BY-NC-ND 4.0, read in place, never copied).")
    r.add_argument("path", nargs="?", help="archive, folder or XML file (default: torchxrayvision's)")
    common(r, "summarization task", task_default="mimic3_summary")

    try:  # genomics and 3D volumes register their own kinds (variants, genotypes, volumes)
        from medmix.data.genomics.cli import add_ingest_subparsers
    except ImportError:
        return
    add_ingest_subparsers(ksub)
    ksub.metavar = "<" + "|".join(ksub.choices) + ">"


def run(args: argparse.Namespace) -> int:
    from medmix.cli import resolve_config
    from medmix.data.store import ShardStore
    cfg = resolve_config(args)
    store_cfg = dataclasses.replace(cfg.data, root=args.root or cfg.data.root)
    store = ShardStore(store_cfg.root, store_cfg)
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
    else:
        from medmix.data.ingest.reports import ingest_reports
        summary = ingest_reports(store, args.path, **common)
    print(summary.render())
    return 0
