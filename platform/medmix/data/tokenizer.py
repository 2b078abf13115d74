"""The text tokenizer: a byte-level BPE trained on the store's text, or a decoder's own.

    medmix tokenizer train --preset debug          # -> <store root>/tokenizer/tokenizer.json
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)  # given, the decoder's, or the store's
    tok.encode("Q: Is there an effusion? A:")      # plain text -> ids

Training reads the train split of the store, renders every row's prompt (instruction,
exemplar, example) and target exactly as the model will see them, and learns a byte-level BPE
with `tokenizers`. The special tokens are `<pad>` `<bos>` `<eos>` `<unk>` `<img>` (ids 0-4).

`<img>` is the image token, but `encode()` never produces it: special-token strings in text
are encoded as ordinary bytes (`encode_special_tokens`), so a prompt that *mentions* `<img>`
(the text-only exemplar) or a user who types `<eos>` cannot inject control tokens. Only
`medmix.data.encode` inserts image ids, at the positions it chooses.

A decoder with its own tokenizer keeps it (`tokenizer.path` = a tokenizer.json, a Hugging
Face model directory — `tokenizer.json`, or SentencePiece's `tokenizer.model` alone — or a
.gguf file); `<img>` and `<pad>` are added when missing, and the decoder's own BOS/EOS are used.

Its chat template comes along (`chat_template.jinja` beside tokenizer.json, tokenizer_config.json's
`chat_template`, a GGUF's `tokenizer.chat_template`) unless `tokenizer.chat_template = "none"`;
with one, prompts are rendered through it (`medmix.data.chat`), EOS is the template's end-of-turn
token, and `save()` writes the template beside tokenizer.json, so an export carries it to
evaluation and serving.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from medmix.data.chat import end_of_turn
from medmix.data.config import TokenizerConfig
from medmix.model.gguf import load_gguf_tokenizer
from medmix.model.paths import resolve_local_path
from medmix.storage import Location, is_uri, location
from medmix.tasks import get_task, render_prompt, render_target

PAD, BOS, EOS, UNK, IMG = "<pad>", "<bos>", "<eos>", "<unk>", "<img>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMG)
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "tokenizer.meta.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SENTENCEPIECE_FILE = "tokenizer.model"
CHAT_TEMPLATE_MODES = ("auto", "none")

# Names other tokenizers give their control tokens, most specific first.
_BOS_NAMES = (BOS, "<s>", "<|begin_of_text|>", "<|startoftext|>", "[CLS]")
_EOS_NAMES = (EOS, "</s>", "<|end_of_text|>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", "[SEP]")
_PAD_NAMES = (PAD, "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>")


class TokenizerError(ValueError):
    """A tokenizer that is missing, unreadable or lacks what medmix needs; names the file."""


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class MedmixTokenizer:
    """A `tokenizers.Tokenizer` plus the ids medmix needs (image, pad, bos, eos).

    `digest` is the sha256 of the tokenizer's canonical JSON (`to_str()`): what checkpoints
    and lineage record, and what `tokenizer.meta.json` holds for a trained one.
    """

    def __init__(self, tokenizer, *, bos: str, eos: str, pad: str = PAD, image: str = IMG,
                 source: str = "<memory>", chat_template: str | None = None):
        from tokenizers import AddedToken
        special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        missing = [t for t in dict.fromkeys((image, pad, bos, eos)) if t not in special]
        if missing:
            # registered as *special* (a token already in the vocabulary keeps its id), so that
            # decode(skip_special_tokens=True) drops them and encode() leaves their text alone
            tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        self._tok = tokenizer
        self._names = {"bos": bos, "eos": eos, "pad": pad, "image": image}
        self.source = source
        self.chat_template = chat_template or None
        """The Jinja chat template prompts are rendered through (None: medmix's plain prompts)."""
        if self.chat_template:
            turn_end = end_of_turn(self.chat_template, self._markup(), bos=bos, eos=eos, source=source)
            self._names["turn_end"] = turn_end or eos
        self._setup()

    def _markup(self) -> tuple[str, ...]:
        skip = {self._names["image"], self._names["pad"]}
        return tuple(sorted({t.content for t in self._tok.get_added_tokens_decoder().values()} - skip))

    def _setup(self) -> None:
        # Not serialised by `tokenizers`: must be set again after every load/unpickle.
        self._tok.encode_special_tokens = True
        self._tok.no_padding()
        self._tok.no_truncation()
        self.bos_id = self._tok.token_to_id(self._names["bos"])
        # with a chat template an answer ends with the template's end-of-turn token
        self.eos_id = self._tok.token_to_id(self._names.get("turn_end") or self._names["eos"])
        self.pad_id = self._tok.token_to_id(self._names["pad"])
        self.image_token_id = self._tok.token_to_id(self._names["image"])
        self.markup_tokens = self._markup()
        """Added tokens a chat template writes as themselves (control tokens), not as text."""
        text = self._tok.to_str()
        self.digest = _sha256_text(text + "\0" + self.chat_template if self.chat_template else text)

    @property
    def bos_token(self) -> str:
        return self._names["bos"]

    @property
    def eos_token(self) -> str:
        """The tokenizer's own EOS string (what a chat template sees as `eos_token`)."""
        return self._names["eos"]

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike | Location, chat_template: str = "auto") -> "MedmixTokenizer":
        """A tokenizer.json, a directory holding one (a Hugging Face model) or only SentencePiece's
        tokenizer.model, or a .gguf file; a tokenizer.json on object storage too (a store's own,
        `s3://…/tokenizer/tokenizer.json`).

        Args:
            chat_template: "auto" keeps the chat template found with the tokenizer; "none" drops it.
        """
        if chat_template not in CHAT_TEMPLATE_MODES:
            raise TokenizerError(f"tokenizer.chat_template = {chat_template!r}: use one of "
                                 f"{', '.join(CHAT_TEMPLATE_MODES)}")
        use = chat_template == "auto"
        if is_uri(path) or (isinstance(path, Location) and not path.is_local):
            return cls._from_object(location(path))
        p = Path(path)
        if p.suffix == ".gguf":
            return cls._from_gguf(p, use)
        if p.name == SENTENCEPIECE_FILE and p.is_file():
            p = p.parent
        if p.is_dir():
            if not (p / TOKENIZER_FILE).is_file() and (p / SENTENCEPIECE_FILE).is_file():
                return cls._from_sentencepiece(p, use)
            p = p / TOKENIZER_FILE
        if not p.is_file():
            raise TokenizerError(f"{p}: no tokenizer here (train one with `medmix tokenizer train`, "
                                 f"or set tokenizer.path to a tokenizer.json, a model directory with "
                                 f"tokenizer.json or tokenizer.model, or a .gguf)")
        from tokenizers import Tokenizer
        try:
            tok = Tokenizer.from_file(str(p))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"{p}: not a readable tokenizers JSON file ({exc})") from exc
        names = _hf_special_names(p.parent)
        return cls(tok, bos=names.get("bos") or _find(tok, _BOS_NAMES, BOS),
                   eos=names.get("eos") or _find(tok, _EOS_NAMES, EOS),
                   pad=_find(tok, _PAD_NAMES, PAD), image=names.get("image") or IMG, source=str(p),
                   chat_template=_hf_chat_template(p.parent) if use else None)

    @classmethod
    def _from_sentencepiece(cls, folder: Path, use_template: bool) -> "MedmixTokenizer":
        """A Hugging Face directory with SentencePiece's tokenizer.model and no tokenizer.json:
        transformers converts it (tokenizer_config.json names the class; Llama's by default)."""
        try:
            import sentencepiece  # noqa: F401 - transformers' converter needs it
        except ImportError as exc:
            raise TokenizerError(f"{folder / SENTENCEPIECE_FILE}: a SentencePiece tokenizer needs the "
                                 f"`sentencepiece` package (pip install sentencepiece)") from exc
        from transformers import AutoTokenizer, LlamaTokenizer
        try:
            if (folder / "tokenizer_config.json").is_file():
                hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            else:
                hf = LlamaTokenizer(vocab_file=str(folder / SENTENCEPIECE_FILE))
        except Exception as exc:  # noqa: BLE001 - converters raise many kinds
            raise TokenizerError(f"{folder / SENTENCEPIECE_FILE}: transformers could not load this "
                                 f"SentencePiece tokenizer ({type(exc).__name__}: {exc})") from exc
        tok = getattr(hf, "backend_tokenizer", None)
        if tok is None:
            raise TokenizerError(f"{folder / SENTENCEPIECE_FILE}: transformers gave no fast tokenizer for it")
        template = (_hf_chat_template(folder) or _as_template(getattr(hf, "chat_template", None))) \
            if use_template else None
        return cls(tok, bos=hf.bos_token or _find(tok, _BOS_NAMES, BOS),
                   eos=hf.eos_token or _find(tok, _EOS_NAMES, EOS), pad=_find(tok, _PAD_NAMES, PAD),
                   source=str(folder / SENTENCEPIECE_FILE), chat_template=template)

    @classmethod
    def _from_object(cls, loc: Location) -> "MedmixTokenizer":
        if not loc.is_file():
            raise TokenizerError(f"{loc}: no tokenizer here (train one with `medmix tokenizer train`)")
        from tokenizers import Tokenizer
        try:
            tok = Tokenizer.from_str(loc.read_text())
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise TokenizerError(f"{loc}: not a readable tokenizers JSON file ({exc})") from exc
        return cls(tok, bos=_find(tok, _BOS_NAMES, BOS), eos=_find(tok, _EOS_NAMES, EOS),
                   pad=_find(tok, _PAD_NAMES, PAD), source=loc.uri)

    @classmethod
    def _from_gguf(cls, path: Path, use_template: bool = True) -> "MedmixTokenizer":
        if not path.is_file():
            raise TokenizerError(f"{path}: no such GGUF file")
        hf = load_gguf_tokenizer(path)   # converted once, then read from the medmix cache
        tok = hf.backend_tokenizer
        bos = hf.bos_token or _find(tok, _BOS_NAMES, BOS)
        eos = hf.eos_token or _find(tok, _EOS_NAMES, EOS)
        template = _as_template(getattr(hf, "chat_template", None)) if use_template else None
        return cls(tok, bos=bos, eos=eos, pad=_find(tok, _PAD_NAMES, PAD), source=str(path),
                   chat_template=template)

    @classmethod
    def from_str(cls, text: str, **names: str) -> "MedmixTokenizer":
        from tokenizers import Tokenizer
        return cls(Tokenizer.from_str(text), **({"bos": BOS, "eos": EOS} | names))

    # -- pickling: Ray ships the tokenizer to preprocessing tasks --------------------------
    def __getstate__(self) -> dict:
        return {"json": self._tok.to_str(), "names": self._names, "source": self.source,
                "chat_template": self.chat_template}

    def __setstate__(self, state: dict) -> None:
        from tokenizers import Tokenizer
        self._tok = Tokenizer.from_str(state["json"])
        self._names = state["names"]
        self.source = state["source"]
        self.chat_template = state.get("chat_template")
        self._setup()

    # -- use ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Plain text -> ids. Special-token strings in `text` stay text; no BOS/EOS added."""
        if not text:
            return []
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def to_str(self) -> str:
        return self._tok.to_str()

    def save(self, path: str | os.PathLike | Location) -> str:
        """Write the canonical JSON atomically (local or object storage), and the chat template
        beside it as chat_template.jinja when there is one; returns the JSON's sha256."""
        text = self._tok.to_str()
        loc = location(path)
        loc.write_text(text)
        beside = loc.with_name(CHAT_TEMPLATE_FILE)
        if self.chat_template:
            beside.write_text(self.chat_template)
        elif beside.exists():
            beside.delete()  # a stale template would change how the saved tokenizer prompts
        return _sha256_text(text)

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __repr__(self) -> str:
        return (f"MedmixTokenizer({len(self)} tokens, bos={self.bos_id} eos={self.eos_id} "
                f"pad={self.pad_id} image={self.image_token_id}, digest={self.digest[:12]}, "
                f"{'chat template, ' if self.chat_template else ''}from {self.source})")


def _find(tok, names: tuple[str, ...], default: str) -> str:
    return next((n for n in names if tok.token_to_id(n) is not None), default)


def _hf_special_names(folder: Path) -> dict[str, str]:
    """bos/eos (and the image token, e.g. a LLaVA's `<image>`) named by a Hugging Face model
    directory's tokenizer_config.json, if any."""
    out: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for key in ("bos", "eos", "image"):
            v = data.get(f"{key}_token")
            v = v.get("content") if isinstance(v, dict) else v
            if isinstance(v, str) and v and key not in out:
                out[key] = v
    return out


def _as_template(value) -> str | None:
    """A chat template as transformers/tokenizer_config.json hold it: a string, or a list of
    named templates ({"name", "template"}) of which medmix uses "default"."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, dict):
        return _as_template(value.get("default"))
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return _as_template(named.get("default"))
    return None


def _hf_chat_template(folder: Path) -> str | None:
    """A Hugging Face tokenizer directory's chat template: chat_template.jinja, else
    tokenizer_config.json's `chat_template`."""
    f = folder / CHAT_TEMPLATE_FILE
    if f.is_file():
        return _as_template(f.read_text(encoding="utf-8"))
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            return _as_template(json.loads(cfg.read_text()).get("chat_template"))
        except (OSError, json.JSONDecodeError, AttributeError):
            return None
    return None


# -- training on the store ---------------------------------------------------------------

def default_path(store_root: str | os.PathLike | Location) -> Path | Location:
    """`<store>/tokenizer/tokenizer.json`: a Path for a local store, a Location on object storage."""
    return _plain(location(store_root).join(TOKENIZER_DIR, TOKENIZER_FILE))


def _plain(loc: Location) -> Path | Location:
    return loc.local_path() if loc.is_local else loc


def resolve_path(tcfg: TokenizerConfig, store_root: str | os.PathLike | Location,
                 decoder_path: str = "") -> Path | Location:
    """Which tokenizer a config means, in this order:

    1. `tokenizer.path` (a tokenizer.json, a model directory or a .gguf; `pkg:` paths allowed);
    2. the decoder's own tokenizer when `model.decoder_path` names a pretrained decoder;
    3. the one trained on the store, `<data.root>/tokenizer/tokenizer.json`.

    Callers holding the root config pass `cfg.tokenizer, cfg.data.root, cfg.model.decoder_path`.
    """
    if tcfg.path:
        return resolve_local_path(tcfg.path, what="tokenizer.path", must_exist=False)
    if decoder_path:
        return resolve_local_path(decoder_path, what="model.decoder_path", must_exist=False)
    return default_path(store_root)


def load_tokenizer(tcfg: TokenizerConfig, store_root: str | os.PathLike | Location,
                   decoder_path: str = "") -> MedmixTokenizer:
    """The tokenizer a config means (see `resolve_path`), with its chat template unless
    `tokenizer.chat_template = "none"`."""
    return MedmixTokenizer.from_file(resolve_path(tcfg, store_root, decoder_path),
                                     chat_template=tcfg.chat_template)


def ensure_tokenizer(tcfg: TokenizerConfig, store_root: str | os.PathLike | Location,
                     decoder_path: str = "") -> Path | Location:
    """Make sure the config's tokenizer exists: train it on the store when that is the one meant.

    A trained tokenizer is reused when it was trained on the same store digest with the same
    settings (otherwise retrained); a given or decoder-owned one must exist.
    """
    from medmix.data.store import ShardStore
    path = resolve_path(tcfg, store_root, decoder_path)
    if tcfg.path or decoder_path:
        key = "tokenizer.path" if tcfg.path else "model.decoder_path"
        if not path.exists():
            raise TokenizerError(f"{key}: {path} does not exist (a tokenizer.json, a model directory "
                                 f"or a .gguf file)")
        if path.is_dir() and not any((Path(path) / f).is_file() for f in (TOKENIZER_FILE, SENTENCEPIECE_FILE)):
            raise TokenizerError(f"{key}: {path} holds no tokenizer (tokenizer.json or SentencePiece's "
                                 f"tokenizer.model); save the decoder's tokenizer beside it "
                                 f"(tokenizer.save_pretrained) or set tokenizer.path")
        return path
    return train_tokenizer(ShardStore(store_root), tcfg)


def store_texts(store, split: str = "train") -> Iterator[str]:
    """Every row's rendered prompt + target, as the model sees them, in manifest order."""
    import pyarrow.parquet as pq

    for shard in store.shards(split=split):
        spec = get_task(shard.task)
        table = store.read_shard(shard, columns=["context", "target"])
        for context, target in zip(table.column("context").to_pylist(), table.column("target").to_pylist()):
            yield render_prompt(spec, json.loads(context)) + render_target(spec, target)


def train_tokenizer(store, cfg: TokenizerConfig, out: str | os.PathLike | None = None,
                    force: bool = False) -> Path | Location:
    """Train a byte-level BPE on the store's train text; returns the tokenizer.json path.

    Writes `tokenizer.json` and `tokenizer.meta.json` (sha256 of the JSON, the store digest it
    was trained on, vocab size, row count). If a tokenizer trained on the same store digest with
    the same settings is already there, it is reused unless `force`.

    Args:
        store: a `ShardStore` (or its root path).
        out: where to write tokenizer.json (default `<store root>/tokenizer/tokenizer.json`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from medmix.data.store import ShardStore
    if not isinstance(store, ShardStore):
        store = ShardStore(store)
    path = _plain(location(out)) if out else default_path(store.loc)
    meta_path = location(path).with_name(META_FILE)
    store_digest = store.digest()
    settings = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency}
    if not force and path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            meta = {}
        if (meta.get("store_digest") == store_digest and meta.get("settings") == settings
                and meta.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()):
            return path
    rows = sum(s.rows for s in store.shards(split="train"))
    if rows == 0:
        raise TokenizerError(f"{store.root}: the store has no train rows to train a tokenizer on "
                             f"(build the suite with `medmix synth` or ingest data first)")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    start = time.time()
    tok.train_from_iterator(store_texts(store), trainer=trainer, length=rows)
    wrapped = MedmixTokenizer(tok, bos=BOS, eos=EOS, source=str(path))
    sha = wrapped.save(path)
    meta = {
        "sha256": sha, "store_digest": store_digest, "settings": settings,
        "vocab_size": len(wrapped), "rows": rows, "seconds": round(time.time() - start, 2),
        "special_tokens": {t: wrapped.token_to_id(t) for t in SPECIAL_TOKENS},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return path
