"""Helpers for the synthetic-suite tests: examples through the real encode path, simple image
statistics, and a nearest-centroid classifier (what "recoverable by a simple statistic" means)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from medmix.data.images import decode_image
from medmix.data.schema import Example
from medmix.data.synth import Key, load_generators
from medmix.data.synth.suite import make_example

IMAGE_SIZE = 224


@lru_cache(maxsize=None)
def examples(task: str, split: str, n: int, seed: int = 0) -> tuple[tuple[Example, np.ndarray | None], ...]:
    """The first n examples of task/split exactly as `build_suite` writes them, images decoded."""
    gen = load_generators()[task]
    out = []
    for i in range(n):
        key = Key(seed, task, split, i)
        ex = make_example(key, gen(key), IMAGE_SIZE)
        out.append((ex, decode_image(ex.images[0], ex.image_format) if ex.images else None))
    return tuple(out)


def crop(img: np.ndarray) -> np.ndarray:
    """Remove the zero padding `square_resize` added (drawn backgrounds are never exactly 0)."""
    gray = img.max(axis=2) if img.ndim == 3 else img
    ys, xs = np.nonzero(gray.max(axis=1) > 0)[0], np.nonzero(gray.max(axis=0) > 0)[0]
    return img[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]


def gray01(img: np.ndarray) -> np.ndarray:
    return crop(img)[..., 0].astype(np.float32) / 255.0


def box(a: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    h, w = a.shape[:2]
    return a[int(rows[0] * h):int(rows[1] * h), int(cols[0] * w):int(cols[1] * w)]


def nearest_centroid_accuracy(train: list[tuple[np.ndarray, object]], test: list[tuple[np.ndarray, object]]) -> float:
    """Fit class means of standardised features on `train`, return accuracy on `test`."""
    xtr = np.array([np.atleast_1d(x) for x, _ in train], dtype=np.float64)
    xte = np.array([np.atleast_1d(x) for x, _ in test], dtype=np.float64)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-9
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    ytr, yte = [y for _, y in train], [y for _, y in test]
    classes = sorted(set(ytr), key=str)
    centres = np.stack([xtr[[y == c for y in ytr]].mean(0) for c in classes])
    pred = [classes[int(np.argmin(((centres - x) ** 2).sum(1)))] for x in xte]
    return float(np.mean([p == y for p, y in zip(pred, yte)]))
