"""`medmix tokenizer train|show`: train the BPE tokenizer on the store's text, or inspect one."""

from __future__ import annotations

import argparse
import json
import time

from medmix.cli import add_config_args, resolve_config
from medmix.data.tokenizer import META_FILE, MedmixTokenizer, load_tokenizer, train_tokenizer


def add_parser(sub) -> None:
    p = sub.add_parser("tokenizer", help="train the BPE tokenizer on the store's text, or inspect one",
                       description="`train` learns a byte-level BPE (tokenizer.vocab_size, "
                                   "tokenizer.min_frequency) on the rendered prompts and targets of the "
                                   "store's train rows and saves it next to the store with its digest. "
                                   "`show` prints the tokenizer the config resolves to and, with --text, "
                                   "how it splits a text.")
    tsub = p.add_subparsers(dest="tokenizer_verb", metavar="<train|show>", required=True)
    t = tsub.add_parser("train", help="train on the store's train text (data.root)",
                        description="Train a byte-level BPE on the store at data.root; writes "
                                    "<data.root>/tokenizer/tokenizer.json and tokenizer.meta.json "
                                    "(sha256, store digest). Reuses an existing one trained on the same "
                                    "store with the same settings unless --force.")
    add_config_args(t)
    t.add_argument("--force", action="store_true", help="train again even if an up-to-date tokenizer exists")
    t.set_defaults(func=run_train)
    s = tsub.add_parser("show", help="print the tokenizer the config uses and how it splits --text",
                        description="Load tokenizer.path (or the store's trained tokenizer) and print "
                                    "its size, special ids and digest.")
    add_config_args(s)
    s.add_argument("--text", help="a text to encode and show token by token")
    s.set_defaults(func=run_show)


def run_train(args: argparse.Namespace) -> int:

    from medmix.data.store import ShardStore
    cfg = resolve_config(args)
    start = time.time()
    path = train_tokenizer(ShardStore(cfg.data.root), cfg.tokenizer, force=args.force)
    meta = json.loads(path.with_name(META_FILE).read_text())
    tok = MedmixTokenizer.from_file(path)
    print(f"tokenizer: {path} ({len(tok)} tokens, {meta['rows']} train rows, "
          f"{time.time() - start:.1f} s)")
    print(f"digest {tok.digest[:16]}  store digest {meta['store_digest'][:16]}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root)
    print(tok)
    if args.text is not None:
        ids = tok.encode(args.text)
        print(f"{len(ids)} tokens: {ids}")
        print(" | ".join(tok.decode([i], skip_special_tokens=False) for i in ids))
    return 0
