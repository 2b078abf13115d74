"""VQA-RAD, Slake and Path-VQA as they are published -> rows of `vqa_rad`, `slake_vqa`, `path_vqa`.

    medmix ingest vqa-rad VQA_RAD/             # "VQA_RAD Dataset Public.json" + its image folder
    medmix ingest slake Slake1.0/ --lang en    # train.json, validate.json, test.json + imgs/
    medmix ingest path-vqa path-vqa/data/      # the parquet release: {train,validation,test}-*.parquet

Layouts:
- VQA-RAD (Lau et al. 2018, OSF release): one JSON list, records with `qid`, `image_name`,
  `question`, `answer`, `answer_type` (OPEN/CLOSED), `question_type`, `image_organ`,
  `phrase_type`; images named by `image_name` anywhere under the folder ("VQA_RAD Image
  Folder/"). Split: `phrase_type` test_freeform / test_para -> test (the 451 questions papers
  report), freeform / para -> train with 10% (by a hash of the image) as val.
- Slake 1.0 (Liu et al. 2021): `train.json`, `validate.json`, `test.json`, JSON lists of
  `{"img_id", "img_name": "xmlab0/source.jpg", "question", "answer", "q_lang": "en"|"zh",
  "location", "modality", "answer_type", "base_type", "content_type", "triple", "qid"}`,
  images under `imgs/`. `--lang en` (default) keeps the English questions (what MultiMedBench
  uses); `--lang all` keeps both. Split from the file name (validate -> val).
- Path-VQA (He et al. 2020): the parquet release (Hugging Face `flaviagiammarino/path-vqa`,
  `data/{train,validation,test}-*.parquet`) with columns `image` (a struct of the image
  `bytes` and its `path`), `question`, `answer`. Read with pyarrow; the original release's
  pickle files are never unpickled (a pickle can run code): convert them elsewhere or use the
  parquet release. Split from the file name (validation -> val).

Context: `question`, plus the record's organ/modality/answer type where published. Example ids:
`vqarad-<qid>`, `slake-<qid>`, `pathvqa-<file stem>-<row>`. Every bad record is an error
naming the file, the record (1-based) and the field.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from medmix.data.images import encode_png, square_resize
from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, check_prompt, guarded,
                                       hash_split, list_files, run_parallel, write_ingest)
from medmix.data.ingest.image_folder import IMAGE_SUFFIXES, decode_file
from medmix.data.ingest.qa_published import file_split
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.tasks import get_task

TRAIN_VAL = (0.9, 0.1, 0.0)


@dataclass(frozen=True)
class VqaItem:
    source: str
    row: int
    example_id: str
    split: str
    question: str
    answer: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    context: dict = field(default_factory=dict)


def process_item(task: str, image_size: int, item: VqaItem) -> ItemResult:
    where = {"source": item.source, "row": item.row}
    if item.image_bytes is not None:
        data, shown = item.image_bytes, "the row's image bytes"
    else:
        shown = str(item.image_path)
        try:
            data = Path(item.image_path or "").read_bytes()
        except OSError as exc:
            raise IngestError(f"image {shown} cannot be read ({exc.strerror or exc})", **where,
                              field="image") from None
    try:
        pixels = decode_file(data)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types
        raise IngestError(f"{shown} does not decode as an image ({type(exc).__name__}: {exc})",
                          **where, field="image") from None
    context = {"question": item.question, **item.context}
    check_prompt(get_task(task), context, 1, **where)
    ex = Example(example_id=item.example_id, task=task, split=item.split, context=context,
                 target=item.answer, label=None, source=f"{item.source}:{item.row}",
                 images=[encode_png(square_resize(pixels, image_size))], image_format="png")
    return ItemResult(name=f"{item.source}#{item.row}", examples=[ex],
                      digest=hashlib.sha256(data + item.question.encode() + item.answer.encode()).hexdigest())


def _text(rec: dict, key: str, where: dict) -> str:
    value = rec.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise IngestError(f"missing or empty (got {value!r})", **where, field=key)
    return value.strip()


def _json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError(f"not a readable JSON file ({exc})", source=str(path)) from None
    if not isinstance(data, list):
        raise IngestError(f"expected a JSON list of questions, got {type(data).__name__}", source=str(path))
    return data


def _images_by_name(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f, _ in list_files([root]):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            out.setdefault(f.name, f)
    return out


def _extra(rec: dict, keys: dict[str, str]) -> dict[str, Any]:
    return {name: str(rec[k]).strip() for k, name in keys.items()
            if isinstance(rec.get(k), (str, int)) and str(rec[k]).strip()}


# --- planning per dataset --------------------------------------------------------------------

def plan_vqa_rad(path: Path) -> tuple[list[VqaItem], list[dict], list[Path]]:
    named = path / "VQA_RAD Dataset Public.json"
    files = [path] if path.is_file() else [named] if named.is_file() else sorted(path.rglob("*.json"))
    if not files:
        raise IngestError('no "VQA_RAD Dataset Public.json" here', source=str(path))
    images = _images_by_name(path.parent if path.is_file() else path)
    items, errors = [], []
    for f in files:
        for n, rec in enumerate(_json_list(f), start=1):
            where = {"source": str(f), "row": n}
            try:
                if not isinstance(rec, dict):
                    raise IngestError("expected an object", **where)
                qid, name = _text(rec, "qid", where), _text(rec, "image_name", where)
                phrase = str(rec.get("phrase_type", "")).strip().lower()
                if phrase not in ("freeform", "para", "test_freeform", "test_para"):
                    raise IngestError(f"{rec.get('phrase_type')!r} is not freeform, para, "
                                      f"test_freeform or test_para (the split)", **where,
                                      field="phrase_type")
                if name not in images:
                    raise IngestError(f"no image {name!r} under {path}", **where, field="image_name")
                split = "test" if phrase.startswith("test") else hash_split(name, TRAIN_VAL)
                items.append(VqaItem(str(f), n, f"vqarad-{qid}", split, _text(rec, "question", where),
                                     _text(rec, "answer", where), str(images[name]),
                                     context=_extra(rec, {"image_organ": "organ",
                                                          "answer_type": "answer_type"})))
            except IngestError as exc:
                errors.append(exc.record())
    return items, errors, files


def plan_slake(path: Path, lang: str) -> tuple[list[VqaItem], list[dict], list[Path]]:
    root = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else [root / n for n in ("train.json", "validate.json", "test.json")
                                          if (root / n).is_file()]
    if not files:
        raise IngestError("no train.json / validate.json / test.json here", source=str(path))
    items, errors = [], []
    for f in files:
        split_of_file = file_split(str(f))
        if split_of_file is None:
            raise IngestError("the file name names no split (train, validate, test)", source=str(f))
        for n, rec in enumerate(_json_list(f), start=1):
            where = {"source": str(f), "row": n}
            try:
                if not isinstance(rec, dict):
                    raise IngestError("expected an object", **where)
                q_lang = str(rec.get("q_lang", "")).strip().lower()
                if q_lang not in ("en", "zh"):
                    raise IngestError(f"{rec.get('q_lang')!r} is not en or zh", **where, field="q_lang")
                if lang != "all" and q_lang != lang:
                    continue
                qid, name = _text(rec, "qid", where), _text(rec, "img_name", where)
                image = root / "imgs" / name
                if not image.is_file():
                    raise IngestError(f"no image {image}", **where, field="img_name")
                items.append(VqaItem(str(f), n, f"slake-{qid}", split_of_file, _text(rec, "question", where),
                                     _text(rec, "answer", where), str(image),
                                     context=_extra(rec, {"location": "organ", "modality": "modality",
                                                          "answer_type": "answer_type"})))
            except IngestError as exc:
                errors.append(exc.record())
    return items, errors, files


def plan_path_vqa(path: Path) -> tuple[list[VqaItem], list[dict], list[Path]]:
    import pyarrow.parquet as pq
    pickles = [f for f, _ in list_files([path]) if f.suffix.lower() in (".pkl", ".pickle")]
    files = [f for f, _ in list_files([path], pattern="*.parquet")]
    if not files:
        hint = (" (found pickle files: medmix never unpickles -- a pickle can run code; use the "
                "parquet release)" if pickles else "")
        raise IngestError(f"no .parquet files{hint}", source=str(path))
    items, errors = [], []
    for f in files:
        split = file_split(str(f))
        if split is None:
            raise IngestError("the file name names no split (train, validation, test)", source=str(f))
        try:
            table = pq.read_table(f)
        except Exception as exc:  # noqa: BLE001 - arrow raises many types
            raise IngestError(f"not a readable parquet file ({exc})", source=str(f)) from None
        missing = [c for c in ("image", "question", "answer") if c not in table.column_names]
        if missing:
            raise IngestError(f"lacks column(s) {', '.join(missing)}; expected image, question, answer",
                              source=str(f), field=missing[0])
        for n, rec in enumerate(table.to_pylist(), start=1):
            where = {"source": str(f), "row": n}
            try:
                img = rec["image"]
                data = img.get("bytes") if isinstance(img, dict) else img if isinstance(img, bytes) else None
                if not data:
                    raise IngestError("no image bytes (expected a struct with `bytes`)", **where, field="image")
                items.append(VqaItem(str(f), n, f"pathvqa-{f.stem}-{n}", split, _text(rec, "question", where),
                                     _text(rec, "answer", where), image_bytes=data))
            except IngestError as exc:
                errors.append(exc.record())
    return items, errors, files


# --- ingest ----------------------------------------------------------------------------------

def _ingest(store: ShardStore, task: str, layout: str, path: str, plan, *, on_error: str,
            replace: bool, parallel: str, progress: bool, extra: dict | None = None) -> IngestSummary:
    started = time.perf_counter()
    if not Path(path).exists():
        raise IngestError(f"{layout} not found", source=str(path))
    items, errors, files = plan(Path(path))
    results = run_parallel(partial(_process, task, store.config.image_size), items, desc=layout,
                           parallel=parallel, progress=progress)
    return write_ingest(store, kind=layout, task=task, results=results,
                        source={"path": str(path), "layout": layout, **(extra or {})},
                        on_error=on_error, replace=replace, unit="questions", plan_errors=errors,
                        extra_digests=[(f.name, hashlib.sha256(f.read_bytes()).hexdigest())
                                       for f in files], started=started)


def _process(task: str, image_size: int, item: VqaItem) -> ItemResult:
    return guarded(partial(process_item, task, image_size), item, f"{item.source}#{item.row}")


def ingest_vqa_rad(store: ShardStore, path: str, *, task: str = "vqa_rad", on_error: str = "raise",
                   replace: bool = False, parallel: str = "auto", progress: bool = True) -> IngestSummary:
    return _ingest(store, task, "vqa-rad", path, plan_vqa_rad, on_error=on_error, replace=replace,
                   parallel=parallel, progress=progress)


def ingest_slake(store: ShardStore, path: str, *, task: str = "slake_vqa", lang: str = "en",
                 on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                 progress: bool = True) -> IngestSummary:
    if lang not in ("en", "zh", "all"):
        raise IngestError(f"--lang {lang!r}: use en, zh or all", field="--lang")
    return _ingest(store, task, "slake", path, partial(plan_slake, lang=lang), on_error=on_error,
                   replace=replace, parallel=parallel, progress=progress, extra={"lang": lang})


def ingest_path_vqa(store: ShardStore, path: str, *, task: str = "path_vqa", on_error: str = "raise",
                    replace: bool = False, parallel: str = "auto", progress: bool = True) -> IngestSummary:
    return _ingest(store, task, "path-vqa", path, plan_path_vqa, on_error=on_error, replace=replace,
                   parallel=parallel, progress=progress)
