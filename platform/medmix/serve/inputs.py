"""An HTTP request -> the model's inputs, through the same code training uses.

    prep = Preprocessor.from_export("exports/debug-20")          # tokenizer + export meta
    item = prep.prepare(get_task("cxr_classify"), inputs, GenerationOptions(), limits)
    item.prompt_ids, item.pixel_values                           # what generate() gets

Images: base64 PNG/JPEG go through `medmix.data.images.decode_image` and `to_model_input`,
exactly as the stream decodes a shard row. DICOM goes through ingest's `to_display`
(modality LUT, VOI window, MONOCHROME1 inversion), then the square pad/resize ingest stores at
the store's image size, then `to_model_input` — so a DICOM posted here and the same file
ingested and trained on give identical pixels. Header fields (view, laterality, ...) fill
context fields the request leaves out, as ingest does.

Prompts: `medmix.data.encode.encode_prompt` / `encode_options` with the export's
max_seq_len, image token count and exemplar setting. Option tasks generate at most the
longest option (+ end of text) by default, which gives the generation prompt the same token
budget as option scoring and training.

Every problem raises `InputError` with the HTTP status, the field and what to do; nothing
here lets an exception of another type escape for a bad request.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from medmix.data.encode import EncodeError, encode_options, encode_prompt
from medmix.data.images import ImageDecodeError, decode_image, encode_png, square_resize, to_model_input
from medmix.data.tokenizer import MedmixTokenizer
from medmix.model.export_meta import TOKENIZER_FILE, ExportMeta
from medmix.tasks import OPTION_KINDS, TaskSpec
from medmix.tasks.builtin import GENOTYPES

if TYPE_CHECKING:
    from medmix.serve.config import ServeConfig

SCALARS = (str, int, float, bool)
IMAGE_KEYS = ("image", "images")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
GENOTYPE_GT = ("0/0", "0/1", "1/1")  # the variant task's option order: hom-ref, het, hom-alt


class InputError(ValueError):
    """A bad request: HTTP status, the field at fault, and a message saying what to do."""

    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


@dataclass
class Limits:
    """The request limits the ingress enforces (from `ServeConfig`)."""

    max_image_pixels: int = 40_000_000
    max_images: int = 32
    max_input_chars: int = 20_000
    max_new_tokens: int = 256
    default_max_new_tokens: int = 64
    max_options: int = 26

    @classmethod
    def from_config(cls, cfg: ServeConfig) -> "Limits":
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__})


@dataclass
class ModelInputs:
    """One request, tokenized and decoded: what the model deployment receives."""

    task: str
    prompt_ids: list[int]
    pixel_values: np.ndarray
    """(N, 3, S, S) float32, the images in prompt order (N may be 0)."""
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    score_prompt_ids: list[int] | None = None
    """The prompt option scoring continues (equal to prompt_ids unless max_new_tokens was raised)."""
    option_ids: list[list[int]] | None = None
    """Token ids of each option + end of text."""
    options: list[str] | None = None
    exemplar: bool = True
    truncated: bool = False
    ignored_fields: list[str] = field(default_factory=list)
    logprobs: int | None = None
    """None: no per-token log-probabilities; k >= 0: each generated token's, with the top k."""


# --- task input schemas ----------------------------------------------------------------------

def _text(value: str, where: str, field: str | None = None) -> str:
    """`value` if it is encodable text (JSON can carry lone surrogates; tokenizers cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where} is not valid Unicode text (it holds a lone surrogate code point)",
                         field or where) from None
    return value


def _placeholders(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def takes_options(spec: TaskSpec) -> bool:
    """Tasks whose examples carry their own options (multiple choice without fixed classes)."""
    return spec.kind in OPTION_KINDS and not spec.options


def task_fields(spec: TaskSpec) -> list[dict[str, Any]]:
    """The input fields of a task: name, type, required, description (GET /v1/tasks)."""
    out: list[dict[str, Any]] = []
    if spec.has_image:
        if spec.multi_image:
            out.append({"name": "images", "type": "array of base64 strings", "required": True,
                        "description": "the ordered images (e.g. volume slices), each base64 PNG, JPEG or DICOM"})
        else:
            out.append({"name": "image", "type": "base64 string", "required": True,
                        "description": "base64 PNG, JPEG or DICOM (a data: URL prefix is accepted)"})
    q_needs = _placeholders(spec.question)
    out.append({"name": "question", "type": "string", "required": not spec.question,
                "description": f"the question (default: {spec.question!r})" if spec.question else "the question"})
    if takes_options(spec):
        out.append({"name": "options", "type": "array of strings", "required": True,
                    "description": "the answer options, in order; rendered as (A) ... (B) ..."})
    seen = {f["name"] for f in out}
    for name in q_needs:
        if name not in seen:
            out.append({"name": name, "type": "string", "required": True,
                        "description": f"fills {{{name}}} in the default question (not needed with `question`)"})
            seen.add(name)
    for name in _placeholders(spec.image_phrase):
        if name not in seen:
            default = spec.image_defaults.get(name)
            out.append({"name": name, "type": "string", "required": default is None,
                        "description": f"describes the image (default: {default!r})" if default else
                        "describes the image"})
            seen.add(name)
    for name, label in spec.context_fields:
        if name not in seen:
            out.append({"name": name, "type": "string or number", "required": False, "description": label})
            seen.add(name)
    return out


def example_image(size: int = 32, seed: int = 0) -> str:
    """A small base64 PNG (a smooth grey blob) that makes every task's example runnable."""
    yy, xx = np.mgrid[0:size, 0:size]
    blob = np.exp(-(((yy - size / 2 - seed) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 5) ** 2)))
    return base64.b64encode(encode_png((blob * 200 + 30).astype(np.uint8))).decode()


def task_example(spec: TaskSpec) -> dict[str, Any]:
    """A complete POST /v1/predict body for the task, built from its one-shot exemplar."""
    inputs: dict[str, Any] = dict(spec.exemplar.context)
    for f in task_fields(spec):
        if f["required"] and f["name"] not in inputs and f["name"] not in IMAGE_KEYS:
            inputs[f["name"]] = spec.image_defaults.get(f["name"], "unknown")
    if spec.has_image:
        if spec.multi_image:
            inputs["images"] = [example_image(seed=k) for k in range(max(spec.exemplar.num_images, 2))]
        else:
            inputs["image"] = example_image()
    return {"task": spec.name, "inputs": inputs, "options": {"max_new_tokens": 16}}


# --- images -----------------------------------------------------------------------------------

def b64decode(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"{where} must be a base64 string, got {type(text).__name__}", where)
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise InputError(f"{where}: a data: URL must be base64 (data:image/png;base64,...)", where)
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{where} is not valid base64 ({exc})", where) from None
    if not data:
        raise InputError(f"{where} is empty", where)
    return data


def sniff_format(data: bytes) -> str | None:
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data[128:132] == b"DICM":
        return "dicom"
    return None


def _check_pixels(width: int, height: int, frames: int, limits: Limits, where: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{where}: image has size {width}x{height}", where)
    if width * height * frames > limits.max_image_pixels:
        raise InputError(f"{where}: image is {width}x{height}" + (f"x{frames} frames" if frames > 1 else "")
                         + f" = {width * height * frames:,} pixels, over the limit of "
                           f"{limits.max_image_pixels:,} (serve.max_image_pixels); downscale it first",
                         where, status=413)
    side = max(width, height)
    if side * side > limits.max_image_pixels:  # square_resize pads to side x side before resizing
        raise InputError(f"{where}: image is {width}x{height}; padded to a square it is {side}x{side} = "
                         f"{side * side:,} pixels, over the limit of {limits.max_image_pixels:,} "
                         f"(serve.max_image_pixels); crop or downscale it first", where, status=413)


def decode_raster(data: bytes, fmt: str, limits: Limits, where: str) -> np.ndarray:
    """PNG/JPEG bytes -> HxWx3 uint8 through `decode_image`, after checking the pixel count
    from the header (a small file can declare a huge image)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{where}: {exc}; the limit here is {limits.max_image_pixels:,} pixels "
                         f"(serve.max_image_pixels)", where, status=413) from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad headers
        raise InputError(f"{where}: not a readable {fmt.upper()} image ({type(exc).__name__}: {exc})", where) from None
    _check_pixels(width, height, 1, limits, where)
    try:
        return decode_image(data, fmt)
    except ImageDecodeError as exc:
        raise InputError(f"{where}: {exc} (truncated or corrupt?)", where) from None


def decode_dicom(data: bytes, limits: Limits, where: str, store_image_size: int) -> tuple[np.ndarray, dict]:
    """DICOM bytes -> (HxWx3 uint8 as ingest stores it, header context)."""
    import pydicom

    from medmix.data.ingest.dicom import header_context, to_display
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd VRs in real headers warn on every read
        try:
            ds = pydicom.dcmread(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - truncated headers raise many types
            raise InputError(f"{where}: unreadable DICOM ({type(exc).__name__}: {exc})", where) from None
        if "PixelData" not in ds:
            raise InputError(f"{where}: DICOM has no pixel data (truncated, or not an image)", where)
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{where}: DICOM lacks a valid Rows/Columns ({exc})", where) from None
        _check_pixels(cols, rows, frames, limits, where)
        try:
            display = to_display(ds)
            header = header_context(ds)
        except Exception as exc:  # noqa: BLE001 - pixel decoders raise many types
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            hint = (" (compressed transfer syntax: the server needs pylibjpeg/gdcm to decode it)"
                    if syntax is not None and getattr(syntax, "is_compressed", False) else "")
            raise InputError(f"{where}: cannot decode DICOM pixels ({type(exc).__name__}: {exc}){hint}",
                             where) from None
    # ingest stores this square image (as a lossless PNG); the stream then resizes it again
    return square_resize(display, store_image_size), header


# --- the preprocessor -------------------------------------------------------------------------

@dataclass
class Preprocessor:
    """One served model's view of a request: its tokenizer and the export's input settings."""

    tokenizer: Any
    image_size: int
    num_image_tokens: int
    max_seq_len: int
    exemplar: bool = True
    store_image_size: int = 0
    """Side of the images ingest stored for training (DICOM requests are resized to it first)."""
    image_mean: tuple[float, ...] | None = None
    """The tower's per-channel normalisation, as training applied it (None = ImageNet's)."""
    image_std: tuple[float, ...] | None = None

    @classmethod
    def from_export(cls, path: str | Path) -> "Preprocessor":
        """The tokenizer and input settings of the export at `path` (ValueError if it lacks them)."""
        meta = ExportMeta.read(path)
        max_seq_len, image_size = meta.require(path, "max_seq_len", "image_size")
        store_size = ((meta.train_config or {}).get("data") or {}).get("image_size") or image_size
        return cls(tokenizer=MedmixTokenizer.from_file(Path(path) / TOKENIZER_FILE), image_size=image_size,
                   num_image_tokens=meta.num_image_tokens, max_seq_len=max_seq_len, exemplar=meta.exemplar,
                   store_image_size=int(store_size), image_mean=meta.image_mean, image_std=meta.image_std)

    # -- pieces -----------------------------------------------------------------------------
    def images(self, spec: TaskSpec, inputs: dict[str, Any], limits: Limits) -> tuple[list[np.ndarray], dict]:
        """The request's images as model inputs (3xSxS float32), and DICOM header context."""
        given = [k for k in IMAGE_KEYS if inputs.get(k) is not None]
        if not spec.has_image:
            if given:
                raise InputError(f"inputs.{given[0]}: task {spec.name} is text-only and takes no image",
                                 f"inputs.{given[0]}")
            return [], {}
        if len(given) == 2:
            raise InputError("inputs: give either `image` or `images`, not both", "inputs.images")
        if not given:
            key = "images" if spec.multi_image else "image"
            raise InputError(f"inputs.{key}: task {spec.name} needs "
                             f"{'a list of images' if spec.multi_image else 'an image'} (base64 PNG, JPEG or DICOM)",
                             f"inputs.{key}")
        raw = inputs[given[0]]
        items = raw if given[0] == "images" else [raw]
        if not isinstance(items, list):
            raise InputError(f"inputs.images must be a list of base64 strings, got {type(items).__name__}",
                             "inputs.images")
        if not items:
            raise InputError("inputs.images is empty", "inputs.images")
        if len(items) > limits.max_images:
            raise InputError(f"inputs.images holds {len(items)} images, over the limit of {limits.max_images} "
                             f"(serve.max_images)", "inputs.images", status=413)
        if not spec.multi_image and len(items) != 1:
            raise InputError(f"inputs.images: task {spec.name} takes exactly one image, got {len(items)}",
                             "inputs.images")
        out, header = [], {}
        for i, text in enumerate(items):
            where = f"inputs.images[{i}]" if given[0] == "images" else "inputs.image"
            pixels, head = self.image(b64decode(text, where), limits, where)
            header = {**head, **header}
            out.append(pixels)
        return out, header

    def image(self, data: bytes, limits: Limits, where: str) -> tuple[np.ndarray, dict]:
        """One image's bytes (PNG, JPEG or DICOM) -> (3xSxS float32 model input, DICOM header context)."""
        fmt = sniff_format(data)
        if fmt is None:
            raise InputError(f"{where}: unsupported image format (first bytes {data[:8]!r}); send PNG, "
                             f"JPEG or DICOM", where, status=415)
        head: dict = {}
        if fmt == "dicom":
            array, head = decode_dicom(data, limits, where, self.store_image_size or self.image_size)
        else:
            array = decode_raster(data, fmt, limits, where)
        return to_model_input(array, self.image_size, self.image_mean, self.image_std), head

    def context(self, spec: TaskSpec, inputs: dict[str, Any], header: dict, limits: Limits) -> tuple[dict, list[str]]:
        """The task context from the request's text fields (+ DICOM header defaults)."""
        known = {f["name"] for f in task_fields(spec)}
        ctx: dict[str, Any] = {}
        ignored: list[str] = []
        chars = 0
        for key, value in inputs.items():
            if key in IMAGE_KEYS:
                continue
            where = f"inputs.{_text(key, 'inputs: a field name', 'inputs')}"
            if key == "options":
                if not takes_options(spec):
                    raise InputError(f"{where}: task {spec.name} has fixed options "
                                     f"({', '.join(spec.options) or 'none'}); do not send `options`", where)
                if not isinstance(value, list) or not all(isinstance(o, str) and o.strip() for o in value):
                    raise InputError(f"{where} must be a list of non-empty strings", where)
                for i, o in enumerate(value):
                    _text(o, f"{where}[{i}]")
                if not 2 <= len(value) <= limits.max_options:
                    raise InputError(f"{where} holds {len(value)} options; give 2 to {limits.max_options}", where)
                chars += sum(len(o) for o in value)
                ctx[key] = list(value)
                continue
            if value is None:
                continue
            if not isinstance(value, SCALARS):
                raise InputError(f"{where} must be a string or number, got {type(value).__name__}", where)
            if isinstance(value, float) and not np.isfinite(value):
                raise InputError(f"{where} must be a finite number", where)
            if isinstance(value, str):
                _text(value, where)
            chars += len(str(value))
            ctx[key] = value
            if key not in known:
                ignored.append(key)
        if chars > limits.max_input_chars:
            raise InputError(f"inputs: {chars:,} characters of text, over the limit of {limits.max_input_chars:,} "
                             f"(serve.max_input_chars)", "inputs", status=413)
        if takes_options(spec) and "options" not in ctx:
            raise InputError(f"inputs.options: task {spec.name} needs its answer options (a list of strings)",
                             "inputs.options")
        for key, value in header.items():
            ctx.setdefault(key, value)
        return ctx, sorted(ignored)

    # -- the whole request ------------------------------------------------------------------
    def prepare(self, spec: TaskSpec, inputs: dict[str, Any], options: Any, limits: Limits,
                images: tuple[list[np.ndarray], dict] | None = None) -> ModelInputs:
        """Validate and encode one request. `options` is a `GenerationOptions`; `images` are
        already decoded images and their header context (then `inputs` carries none)."""
        if not isinstance(inputs, dict):
            raise InputError("inputs must be an object", "inputs")
        pixels, header = images if images is not None else self.images(spec, inputs, limits)
        ctx, ignored = self.context(spec, inputs, header, limits)
        exemplar = self.exemplar if options.exemplar is None else options.exemplar
        tok = self.tokenizer
        score_prompt = option_ids = option_texts = None
        longest = 0
        try:
            if spec.has_options and options.score_options:
                option_texts = [str(o) for o in spec.options_for(ctx)]
                encoded = encode_options(tok, spec, ctx, len(pixels), self.num_image_tokens, self.max_seq_len,
                                         options=option_texts, exemplar=exemplar)
                n = encoded[0].num_prompt_tokens
                score_prompt = encoded[0].input_ids[:n]
                option_ids = [e.input_ids[n:] for e in encoded]
                longest = max(map(len, option_ids))
            default = longest if longest else limits.default_max_new_tokens
            max_new = options.max_new_tokens or min(default, limits.max_new_tokens)
            if max_new > limits.max_new_tokens:
                raise InputError(f"options.max_new_tokens = {max_new} is over the limit of {limits.max_new_tokens} "
                                 f"(serve.max_new_tokens)", "options.max_new_tokens")
            if max_new >= self.max_seq_len:
                raise InputError(f"options.max_new_tokens = {max_new} leaves no room for the prompt within the "
                                 f"model's max_seq_len = {self.max_seq_len}", "options.max_new_tokens")
            prompt = encode_prompt(tok, spec, ctx, len(pixels), self.num_image_tokens,
                                   self.max_seq_len - max_new, exemplar=exemplar)
        except InputError:
            raise
        except EncodeError as exc:
            raise InputError(f"{exc} (this model fits {self.max_seq_len} tokens; shorten the inputs or lower "
                             f"options.max_new_tokens)", "inputs", status=413) from None
        except (ValueError, KeyError) as exc:  # render_prompt: a field its templates need is missing
            missing = str(exc).split("lacks field ")[-1].split(" ")[0].strip("'\"") if "lacks field" in str(exc) else None
            raise InputError(f"task {spec.name}: {exc}", f"inputs.{missing}" if missing else "inputs") from None
        stack = (np.stack(pixels).astype(np.float32, copy=False) if pixels
                 else np.zeros((0, 3, self.image_size, self.image_size), np.float32))
        return ModelInputs(
            task=spec.name, prompt_ids=prompt.input_ids, pixel_values=stack, max_new_tokens=max_new,
            temperature=options.temperature, top_p=options.top_p, seed=options.seed,
            ignore_eos=options.ignore_eos, score_prompt_ids=score_prompt, option_ids=option_ids,
            options=option_texts, exemplar=prompt.exemplar, truncated=prompt.truncated, ignored_fields=ignored)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids).strip()


def genotype(probs: list[float]) -> dict[str, Any]:
    """The variant task's option probabilities (hom-ref, het, hom-alt) as a VCF-style call."""
    k = int(np.argmax(probs))
    gq = min(99.0, -10.0 * math.log10(max(1.0 - float(probs[k]), 1e-10)))
    return {"call": GENOTYPES[k], "gt": GENOTYPE_GT[k], "gq": round(gq, 2), "probs": [float(p) for p in probs]}


def task_info(spec: TaskSpec) -> dict[str, Any]:
    """GET /v1/tasks entry: what the task takes, and a request body that works."""
    return {"name": spec.name, "title": spec.title, "kind": spec.kind, "modality": spec.modality,
            "images": "several" if spec.multi_image else ("one" if spec.has_image else "none"),
            "fields": task_fields(spec), "options": list(spec.options) or None, "example": task_example(spec)}
