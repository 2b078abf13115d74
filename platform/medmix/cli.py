"""`medmix <verb>`: the command line. Each verb lives in `medmix/commands/<verb>.py` with
`add_parser(subparsers)` and a `run(args)` that calls one function tests also call.

    medmix --help
    medmix synth --preset debug --set synth.size=small
    medmix train --preset debug --dry-run
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from medmix import __version__
from medmix.config import load_config, to_toml
from medmix.options import ConfigError
from medmix.storage import StorageError
from medmix.tasks.spec import UnknownTaskError

# verb module names, in the order `--help` lists them
VERBS = ["tasks", "synth", "data", "tokenizer", "ingest", "train", "sweep", "evaluate", "report", "submit", "deploy", "lineage", "model", "export", "call-variants", "serve", "demo", "metrics", "tracking-server"]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """--preset / --set / --dry-run, shared by every verb that runs configured work."""
    g = p.add_argument_group("configuration")
    g.add_argument("--preset", default="debug", metavar="NAME|PATH",
                   help="preset shipped with medmix (debug, demo, ...) or a .toml file (default: debug)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.steps=50 (repeatable; TOML values)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the resolved configuration as TOML and exit without doing any work")


def resolve_config(args: argparse.Namespace):
    """Load preset + overrides; with --dry-run print the TOML and exit 0."""
    cfg = load_config(args.preset, args.overrides)
    if getattr(args, "dry_run", False):
        sys.stdout.write(to_toml(cfg))
        raise SystemExit(0)
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmix",
        description="Train, sweep and serve a generalist biomedical multimodal model on Ray.\n\n"
                    "Typical flow: `medmix synth` (bundled data) -> `medmix train` -> "
                    "`medmix sweep` -> `medmix serve`. Every verb that runs work takes "
                    "--preset, --set KEY=VALUE and --dry-run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medmix {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for name in VERBS:
        module = importlib.import_module(f"medmix.commands.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "verb", None) in ("submit", "deploy"):
        if "--" in extra:  # `-- ARGS`: ARGS go to the job even where medmix knows them (--dry-run)
            extra.remove("--")
        args.job_args = extra  # everything medmix does not know goes to the job
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        result = args.func(args)
    except ConfigError as exc:
        print(f"medmix: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medmix: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user-facing errors print one clear line
        if os.environ.get("MEDMIX_TRACEBACK") or not _is_user_error(exc):
            raise
        print(f"medmix: error: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


def _is_user_error(exc: Exception) -> bool:
    """Errors that describe bad input (file, row, field) print without a traceback."""
    from medmix.data.schema import RowError
    from medmix.data.store import StoreError
    user = (RowError, StoreError, StorageError, UnknownTaskError, FileNotFoundError, ValueError)
    extra = []
    try:
        from medmix.data.ingest.common import IngestError
        extra.append(IngestError)
    except ImportError:
        pass
    return isinstance(exc, user + tuple(extra))


if __name__ == "__main__":
    raise SystemExit(main())
