"""Drawing primitives for the synthetic suite: soft shapes, textures and noise on float canvases.

Every function is a pure function of its arguments and the `numpy.random.Generator` it is
given, so an image is a pure function of (seed, task, split, index). Canvases are float32 in
[0, 1] (gray HxW or RGB HxWx3); `to_uint8` finishes them. Masks are float32 in [0, 1] with
soft (anti-aliased or blurred) edges so that shapes survive the store's resize and the much
smaller sizes a debug model sees (64 px).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as broadcastable (h, 1) and (1, w) float32 arrays."""
    yy = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(w, dtype=np.float32)[None, :] + 0.5
    return yy, xx


def _edge(signed: np.ndarray, soft: float) -> np.ndarray:
    """Signed distance (positive inside, px) -> mask with an edge `soft` px wide."""
    return np.clip(signed / max(soft, 1e-3) + 0.5, 0.0, 1.0).astype(np.float32)


def ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0,
            soft: float = 1.0) -> np.ndarray:
    """Filled ellipse centred at (cy, cx) with radii (ry, rx) px, rotated by `angle` radians."""
    yy, xx = coords(h, w)
    y, x = yy - cy, xx - cx
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        x, y = c * x + s * y, -s * x + c * y
    d = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    return _edge((1.0 - d) * min(rx, ry), soft)


def stamp_ellipse(mask: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0,
                  soft: float = 1.0) -> np.ndarray:
    """Draw a small ellipse into `mask` (in place, max) touching only its bounding window.

    Dots, calcifications and nuclei are many and small: a full-canvas mask per dot would
    cost h*w each.
    """
    h, w = mask.shape
    reach = int(np.ceil(max(ry, rx) + soft + 1))
    t, b = max(0, int(cy) - reach), min(h, int(cy) + reach + 1)
    left, right = max(0, int(cx) - reach), min(w, int(cx) + reach + 1)
    if t >= b or left >= right:
        return mask
    dot = ellipse(b - t, right - left, cy - t, cx - left, ry, rx, angle=angle, soft=soft)
    np.maximum(mask[t:b, left:right], dot, out=mask[t:b, left:right])
    return mask


def polygon_mask(h: int, w: int, polygons: np.ndarray) -> np.ndarray:
    """Fill many small polygons ((n, points, 2) array of (y, x)) in one C pass (PIL).

    For hundreds of small shapes (nuclei) where a numpy mask per shape would dominate the
    cost; edges are hard, softened by the store's resize.
    """
    im = Image.new("L", (w, h), 0)
    pen = ImageDraw.Draw(im)
    for poly in np.asarray(polygons, dtype=np.float64)[..., ::-1].tolist():  # PIL wants (x, y)
        pen.polygon([tuple(p) for p in poly], fill=255)
    return np.asarray(im, dtype=np.float32) / 255.0


def outlines(cy: np.ndarray, cx: np.ndarray, ry: np.ndarray, rx: np.ndarray, angle: np.ndarray,
             points: int = 10, wobble: np.ndarray | float = 1.0) -> np.ndarray:
    """(n, points, 2) polygons of n rotated ellipses (all arguments length-n arrays); `wobble`
    (n, points) scales each vertex's radius (irregular, pleomorphic outlines)."""
    t = np.linspace(0.0, 2 * np.pi, points, endpoint=False)[None, :]
    y = np.asarray(ry)[:, None] * np.sin(t) * wobble
    x = np.asarray(rx)[:, None] * np.cos(t) * wobble
    c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return np.stack([np.asarray(cy)[:, None] + s * x + c * y, np.asarray(cx)[:, None] + c * x - s * y], axis=2)


def radial_shape(h: int, w: int, cy: float, cx: float, r: float, harmonics: list[tuple[int, float, float]],
                 soft: float = 1.0, stretch: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """A star-shaped blob: radius r * (1 + sum a*cos(k*theta + phase)) for (k, a, phase).

    No harmonics gives a circle (or an ellipse with `stretch` != 1); low k with small a gives a
    lobulated outline; many high-k terms give an irregular one.
    """
    yy, xx = coords(h, w)
    y, x = yy - cy, xx - cx
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        x, y = c * x + s * y, -s * x + c * y
    x = x / stretch
    rr = np.sqrt(x * x + y * y)
    theta = np.arctan2(y, x)
    radius = np.full_like(rr, r)
    for k, a, phase in harmonics:
        radius = radius + r * a * np.cos(k * theta + phase)
    return _edge(radius - rr, soft)


def random_harmonics(rng: np.random.Generator, ks: range | list[int], amp: tuple[float, float]) -> list:
    return [(int(k), float(rng.uniform(*amp)), float(rng.uniform(0, 2 * np.pi))) for k in ks]


def segment(h: int, w: int, y0: float, x0: float, y1: float, x1: float, width: float,
            soft: float = 1.0) -> np.ndarray:
    """A thick line segment from (y0, x0) to (y1, x1), `width` px across."""
    yy, xx = coords(h, w)
    dy, dx = y1 - y0, x1 - x0
    length2 = max(dy * dy + dx * dx, 1e-6)
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / length2, 0.0, 1.0)
    dist = np.sqrt((yy - (y0 + t * dy)) ** 2 + (xx - (x0 + t * dx)) ** 2)
    return _edge(width / 2.0 - dist, soft)


def gaussian(h: int, w: int, cy: float, cx: float, sy: float, sx: float) -> np.ndarray:
    yy, xx = coords(h, w)
    return np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 0) -> np.ndarray:
    """Low-frequency noise, roughly N(0, 1): `cells` random values across the short side, upsampled."""
    ch, cw = max(2, int(round(cells * h / min(h, w)))), max(2, int(round(cells * w / min(h, w))))
    n = max(channels, 1)
    out = np.empty((h, w, n), dtype=np.float32)
    for c in range(n):
        low = rng.standard_normal((ch, cw)).astype(np.float32)
        out[..., c] = np.asarray(Image.fromarray(low, mode="F").resize((w, h), Image.Resampling.BICUBIC))
    out /= max(float(out.std()), 1e-6)
    return out if channels else out[..., 0]


def blur(mask: np.ndarray, radius: float) -> np.ndarray:
    """Separable Gaussian blur (std `radius` px) of a 2-D float array: indistinct margins, haze."""
    if radius <= 0:
        return mask
    half = max(1, int(3 * radius))
    t = np.arange(-half, half + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (t / radius) ** 2)
    kernel /= kernel.sum()
    out = np.asarray(mask, dtype=np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (half, half)
        padded = np.pad(out, pad, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, kernel.size, axis=axis)
        out = windows @ kernel
    return out.astype(np.float32)


def paint(canvas: np.ndarray, mask: np.ndarray, value: float | tuple | np.ndarray,
          alpha: float = 1.0) -> np.ndarray:
    """Alpha-composite `value` (a level, an RGB triple or an image) over `canvas` where `mask` is set."""
    m = mask * alpha
    if canvas.ndim == 3:
        m = m[..., None]
        value = np.asarray(value, dtype=np.float32)
    canvas *= 1.0 - m
    canvas += m * value
    return canvas


def add(canvas: np.ndarray, mask: np.ndarray, amount: float | tuple) -> np.ndarray:
    """Add `amount` (a level or an RGB triple) where `mask` is set (densities add up in X-rays)."""
    if canvas.ndim == 3:
        canvas += mask[..., None] * np.asarray(amount, dtype=np.float32)
    else:
        canvas += mask * amount
    return canvas


def to_uint8(canvas: np.ndarray) -> np.ndarray:
    """[0, 1] float canvas -> uint8. No per-pixel noise: it would triple the PNG bytes and the
    encode time while teaching nothing that augmentation cannot add later."""
    return np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)


def aspect_size(rng: np.random.Generator, longest: int, lo: float, hi: float) -> tuple[int, int]:
    """(h, w) with the longest side `longest` and w/h drawn from [lo, hi] (odd aspect ratios)."""
    ratio = float(rng.uniform(lo, hi))
    if ratio >= 1.0:
        return max(8, int(round(longest / ratio))), longest
    return longest, max(8, int(round(longest * ratio)))
