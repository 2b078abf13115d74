"""Model-side batch prediction: shard-store rows -> answers and option probabilities.

    predictor = Predictor.from_export("medmix-runs/exports/debug-step20", max_new_tokens=64)
    preds = predict_rows(predictor, rows)        # rows: dicts as the shard store holds them
    preds[0].prediction                          # "melanoma" (the best option, or generated text)
    preds[0].option_probs                        # [0.05, 0.01, ..., 0.81]: sums to 1 (option kinds)

`predict_rows` is the one prediction path. `medmix evaluate` runs it inside Ray Data actors
(`BatchPredictor`, one model per actor) and in-process (`eval.use_ray = false`, tests,
`evaluate_export`) — same rows, same batches, same numbers.

How each kind is answered (the Med-PaLM M framing the model was trained with):
- option kinds (mcq, qa, classify, variant, risk): every option is scored as a continuation of
  the prompt (`score_options`: summed log-likelihood of " option" + EOS), the probabilities are
  the softmax over the options, and the prediction is the most likely option;
- free-text kinds (summarize, report, vqa): greedy decoding (`generate`, temperature 0) up to
  `max_new_tokens` or EOS.
Both are deterministic: greedy, fixed batches, no sampling RNG.

Images go through the same preprocessing as training (`decode_image` + `to_model_input` at
the export's image size). `blank_images=True` replaces every image with an all-black one
(`blank_like`): the control showing how much of an answer depends on the image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmix.data.encode import EncodeError, encode_options, encode_prompt
from medmix.data.images import ImageDecodeError, blank_like, decode_image, to_model_input
from medmix.data.tokenizer import MedmixTokenizer
from medmix.model import generate, load_exported, score_options
from medmix.model.export_meta import TOKENIZER_FILE, ExportMeta
from medmix.tasks import get_task


class PredictError(ValueError):
    """A row the model cannot be asked about; the message names the example and its source."""


@dataclass
class Prediction:
    """The model's answer to one row."""

    example_id: str
    task: str
    prediction: str
    """The chosen option (option kinds) or the generated text (free-text kinds)."""
    option_probs: list[float] | None = None
    """Probability per option, in the task's option order (softmax over options; sums to 1)."""
    num_prompt_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"example_id": self.example_id, "task": self.task, "prediction": self.prediction,
                "option_probs": self.option_probs, "num_prompt_tokens": self.num_prompt_tokens}


@dataclass
class Predictor:
    """A loaded model, its tokenizer and the preprocessing it was trained with."""

    model: Any
    """A `MultimodalLM` in eval mode."""
    tokenizer: Any
    """The export's `MedmixTokenizer`."""
    image_size: int
    """Side of the square image the ViT sees, px (the export's `image_size`)."""
    num_image_tokens: int
    max_seq_len: int
    """Training sequence length: prompts are fitted to it the way training fitted them."""
    exemplar: bool = True
    max_new_tokens: int = 64
    blank_images: bool = False
    option_batch_size: int = 64
    """(prompt, option) rows per decoder forward when scoring options."""
    meta: ExportMeta | None = None
    """What the export's config.json and medmix.json say (lineage facts for reports)."""
    image_mean: tuple[float, ...] | None = None
    """The tower's per-channel normalisation, as training applied it (None = ImageNet's)."""
    image_std: tuple[float, ...] | None = None

    @classmethod
    def from_export(cls, export_dir: str | os.PathLike, *, max_new_tokens: int = 64,
                    blank_images: bool = False, device: str = "cpu",
                    num_threads: int | None = None) -> "Predictor":
        """Load an export directory (`medmix export` / `export_checkpoint`) onto `device`.

        Args:
            num_threads: torch CPU threads (an actor with 1 logical CPU uses 1, so actors
                sharing a machine do not oversubscribe it); None leaves torch's default.
        """
        import torch

        if num_threads:
            torch.set_num_threads(max(1, int(num_threads)))
        export_dir = Path(export_dir)
        tok_path = export_dir / TOKENIZER_FILE
        if not tok_path.is_file():
            raise FileNotFoundError(f"{export_dir}: no {TOKENIZER_FILE}; not a medmix export directory "
                                    f"(write one with `medmix export CHECKPOINT`)")
        meta = ExportMeta.read(export_dir)
        model, _ = load_exported(export_dir, device=device, meta=meta)
        if torch.device(device).type == "cpu":
            model.float()  # a bf16 export runs in fp32 on CPU: exact and faster there
        return cls(model=model, tokenizer=MedmixTokenizer.from_file(tok_path),
                   image_size=meta.image_size or int(meta.model["image_size"]),
                   num_image_tokens=meta.num_image_tokens, max_seq_len=meta.max_seq_len or 512,
                   exemplar=meta.exemplar, max_new_tokens=max_new_tokens, blank_images=blank_images, meta=meta,
                   image_mean=meta.image_mean, image_std=meta.image_std)

    @property
    def device(self):
        return next(self.model.parameters()).device


# -- one row -> model inputs ----------------------------------------------------------------

@dataclass
class _Prepared:
    index: int
    example_id: str
    task: str
    prompt: list[int]
    images: list[np.ndarray]
    options: list[str] | None = None
    option_ids: list[list[int]] | None = None


def _where(row: dict) -> str:
    return f"example {row.get('example_id')!r} (task {row.get('task')}, source {row.get('source') or '?'})"


def _images(p: Predictor, row: dict) -> list[np.ndarray]:
    out = []
    for i, data in enumerate(row.get("images") or []):
        if p.blank_images:
            out.append(blank_like(p.image_size, p.image_mean, p.image_std))
            continue
        try:
            out.append(to_model_input(decode_image(data, row.get("image_format")), p.image_size,
                                      p.image_mean, p.image_std))
        except ImageDecodeError as exc:
            raise PredictError(f"{_where(row)}: field images[{i}]: {exc}") from None
    return out


def prepare_row(p: Predictor, row: dict, index: int = 0) -> _Prepared:
    """Tokenise one row's prompt (and options) exactly as training encoded it."""
    try:
        spec = get_task(row["task"])
        context = row["context"]
        context = json.loads(context) if isinstance(context, str) else dict(context or {})
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise PredictError(f"{_where(row)}: field context/task unusable ({exc})") from None
    images = _images(p, row)
    tok = p.tokenizer
    try:
        if spec.has_options:
            encs = encode_options(tok, spec, context, len(images), p.num_image_tokens, p.max_seq_len,
                                  exemplar=p.exemplar)
            k = encs[0].num_prompt_tokens
            return _Prepared(index, row["example_id"], spec.name, encs[0].input_ids[:k], images,
                             options=list(spec.options_for(context)),
                             option_ids=[e.input_ids[k:] for e in encs])
        # leave room for the answer inside the training length; a prompt that cannot fit
        # there may still run past it (the decoder's positions go further than training's)
        budget = p.max_seq_len - p.max_new_tokens
        try:
            enc = encode_prompt(tok, spec, context, len(images), p.num_image_tokens, max(budget, 2),
                                exemplar=p.exemplar)
        except EncodeError:
            enc = encode_prompt(tok, spec, context, len(images), p.num_image_tokens, p.max_seq_len,
                                exemplar=p.exemplar)
        return _Prepared(index, row["example_id"], spec.name, enc.input_ids, images)
    except (EncodeError, ValueError) as exc:
        raise PredictError(f"{_where(row)}: {exc}") from None


def _pixels(items: Sequence[_Prepared], p: Predictor):
    import torch
    images = [im for it in items for im in it.images]
    if not images:
        return None
    return torch.from_numpy(np.stack(images).astype(np.float32, copy=False)).to(p.device)


# -- the prediction path ---------------------------------------------------------------------

def predict_rows(p: Predictor, rows: Sequence[dict]) -> list[Prediction]:
    """Answer every row (any mix of tasks), in row order.

    Option rows are scored together (`score_options`), free-text rows are decoded together
    (`generate`, greedy). The caller fixes the batches, so the numbers do not depend on how a
    split was spread over actors.
    """

    items = [prepare_row(p, row, i) for i, row in enumerate(rows)]
    out: list[Prediction | None] = [None] * len(items)
    tok = p.tokenizer
    scored = [it for it in items if it.options is not None]
    if scored:
        scores = score_options(p.model, [it.prompt for it in scored], [it.option_ids for it in scored],
                               _pixels(scored, p), batch_size=p.option_batch_size, pad_token_id=tok.pad_id)
        for it, s in zip(scored, scores):
            out[it.index] = Prediction(it.example_id, it.task, it.options[s.best], [float(x) for x in s.probs],
                                       len(it.prompt))
    free = [it for it in items if it.options is None]
    if free:
        new_ids = generate(p.model, [it.prompt for it in free], _pixels(free, p),
                           max_new_tokens=p.max_new_tokens, eos_token_id=tok.eos_id,
                           pad_token_id=tok.pad_id, temperature=0.0)
        for it, ids in zip(free, new_ids):
            out[it.index] = Prediction(it.example_id, it.task, tok.decode(ids).strip(), None, len(it.prompt))
    return out  # type: ignore[return-value]


def read_item_rows(store_root: str, item: dict) -> list[dict]:
    """The rows one work item names: {"shard": relative path, "rows": [row numbers]}."""
    from medmix.data.store import read_rows
    rows = item["rows"]
    return read_rows(store_root, item["shard"], json.loads(rows) if isinstance(rows, str) else list(rows))


class BatchPredictor:
    """Ray Data `map_batches` callable class: one model per actor, one work item per call.

    Each call receives one item (`batch_size=1`): a task's chunk of rows in one shard. The
    actor reads those rows itself (only image bytes it needs cross the object store), answers
    them with `predict_rows` and returns the predictions as one JSON payload.
    """

    def __init__(self, export_dir: str, store_root: str, max_new_tokens: int, blank_images: bool,
                 device: str = "cpu", num_threads: int | None = None):
        if device == "cuda":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.store_root = store_root
        self.predictor = Predictor.from_export(export_dir, max_new_tokens=max_new_tokens,
                                               blank_images=blank_images, device=device,
                                               num_threads=num_threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for shard, rows in zip(batch["shard"], batch["rows"]):
            preds = predict_rows(self.predictor, read_item_rows(self.store_root, {"shard": str(shard),
                                                                                   "rows": str(rows)}))
            payloads.append(json.dumps([q.to_json() for q in preds]))
        return {"item": np.asarray(batch["item"], dtype=np.int64), "payload": np.array(payloads, dtype=object)}
