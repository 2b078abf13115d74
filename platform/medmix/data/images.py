"""Image preprocessing shared by ingest, the synthetic suite, the stream and serving.

One function decides what a model sees: `square_resize` pads to a square keeping the aspect
ratio (the paper's rule), resizes to the configured side and makes grayscale 3-channel.
Ingest stores what it returns; the stream and the server call it again at the model's size,
so a training row and an HTTP request produce identical pixels.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

# ImageNet statistics: what timm ViTs are trained with
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable image; the caller adds file/row context."""


def to_uint8_rgb(array: np.ndarray) -> np.ndarray:
    """HxW or HxWxC (C in 1, 3, 4) of any numeric dtype -> HxWx3 uint8."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageDecodeError(f"image array has shape {a.shape}; expected HxW or HxWx(1|3|4)")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = np.zeros_like(a) if hi <= lo else (a - lo) / (hi - lo) * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[..., :3]
    return np.ascontiguousarray(a)


def square_resize(image: Image.Image | np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    """Pad to a square (centred, keeping aspect ratio), resize to size x size, RGB uint8."""
    arr = to_uint8_rgb(np.asarray(image) if isinstance(image, Image.Image) else image)
    h, w = arr.shape[:2]
    side = max(h, w)
    canvas = np.full((side, side, 3), fill, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = arr
    if side == size:
        return canvas
    resample = Image.Resampling.BILINEAR if side < size else Image.Resampling.BOX
    return np.asarray(Image.fromarray(canvas).resize((size, size), resample))


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """HxW (8-bit gray PNG) or HxWxC uint8 -> PNG bytes; `compress_level` 1 encodes ~3x faster
    than 6 for ~15% more bytes (the synthetic suite's choice)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8_rgb(array) if array.ndim == 3 and array.shape[2] != 3 else array).save(
        buf, format="PNG", optimize=False, compress_level=compress_level)
    return buf.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_image(data: bytes, fmt: str | None = None) -> np.ndarray:
    """Encoded bytes (png, jpeg, npy) -> HxWx3 uint8. Raises ImageDecodeError."""
    if not data:
        raise ImageDecodeError("empty image bytes")
    try:
        if fmt == "npy" or data[:6] == b"\x93NUMPY":
            return to_uint8_rgb(np.load(io.BytesIO(data), allow_pickle=False))
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
            return to_uint8_rgb(np.asarray(im))
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise ImageDecodeError(f"cannot decode {fmt or 'image'} bytes ({len(data)} bytes): {exc}") from exc


CROP_AREA = (0.8, 1.0)    # fraction of the image a random crop keeps
CROP_ASPECT = (3 / 4, 4 / 3)


def augment_image(array: np.ndarray, ops, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 uint8 -> the same image randomly flipped and/or cropped, per the allowed `ops`.

    How many numbers are drawn depends only on `ops`, never on outcomes; the caller seeds
    `rng` per example and epoch, which keeps a resumed run's pixels identical to an
    uninterrupted one on any number of workers.
    """
    out = array
    h, w = out.shape[:2]
    if "crop" in ops:
        area = rng.uniform(*CROP_AREA) * h * w
        aspect = float(np.exp(rng.uniform(np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1]))))
        ch = int(round(min(h, max(1.0, np.sqrt(area / aspect)))))
        cw = int(round(min(w, max(1.0, np.sqrt(area * aspect)))))
        top = int(rng.integers(0, h - ch + 1))
        left = int(rng.integers(0, w - cw + 1))
        out = out[top:top + ch, left:left + cw]
    flips = rng.random(2)
    if "hflip" in ops and flips[0] < 0.5:
        out = out[:, ::-1]
    if "vflip" in ops and flips[1] < 0.5:
        out = out[::-1, :]
    return np.ascontiguousarray(out)


def to_model_input(array: np.ndarray, size: int, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> np.ndarray:
    """HxWx3 uint8 -> 3xSxS float32, padded/resized and normalised per channel: with the vision
    tower's own `mean`/`std` (`medmix.model.preprocess`), ImageNet's when None."""
    sq = square_resize(array, size).astype(np.float32) / 255.0
    m = MEAN if mean is None else np.asarray(mean, dtype=np.float32)
    s = STD if std is None else np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(((sq - m) / s).transpose(2, 0, 1))


def blank_like(size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """The model input of an all-black image (evaluation's 'images removed' control)."""
    return to_model_input(np.zeros((size, size, 3), dtype=np.uint8), size, mean, std)
