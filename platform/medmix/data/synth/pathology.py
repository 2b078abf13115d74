"""Synthetic Path-VQA: RGB tissue textures and questions about what is drawn.

A field of stroma with nuclei: H&E (pink stroma, purple nuclei) or immunohistochemistry
(pale counterstain, blue negative and brown positive cells); sparse or dense cellularity;
normal small round nuclei or enlarged pleomorphic dark ones (the "malignant" look); with or
without glands (white lumens ringed by nuclei). Questions ask about stain, density, nuclear
size, glands and malignancy — open and yes/no.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmix.data.synth import draw
from medmix.data.synth.base import Key, Sample, choose_qa, generator, yes_no

COLOURS = {
    "H&E": {"stroma": (235, 170, 200), "stroma2": (215, 120, 170), "nucleus": (85, 45, 125),
            "positive": (85, 45, 125)},
    "immunohistochemistry": {"stroma": (218, 222, 235), "stroma2": (195, 200, 222), "nucleus": (95, 105, 165),
                             "positive": (140, 85, 40)},
}


@dataclass(frozen=True)
class Tissue:
    stain: str      # "H&E" or "immunohistochemistry"
    dense: bool     # high cellularity
    enlarged: bool  # enlarged pleomorphic nuclei: the malignant look
    glands: bool


def _c(rgb: tuple) -> np.ndarray:
    return np.asarray(rgb, np.float32) / 255.0


def draw_tissue(rng: np.random.Generator, t: Tissue, longest: int) -> np.ndarray:
    """An RGB tissue field (uint8 HxWx3) showing exactly `t`."""
    h, w = draw.aspect_size(rng, longest, 0.7, 1.4)
    col = COLOURS[t.stain]
    fibres = np.clip(draw.smooth_noise(rng, h, w, 18) * 0.6, 0, 1)[..., None]
    img = _c(col["stroma"]) * (1 - fibres) + _c(col["stroma2"]) * fibres
    img = img.astype(np.float32) + 0.02 * draw.smooth_noise(rng, h, w, 30)[..., None]
    centres_y, centres_x = [], []
    lumens = np.zeros((h, w), np.float32)
    if t.glands:  # lumens ringed by nuclei
        for _ in range(int(rng.integers(3, 6))):
            gy, gx = float(rng.uniform(0.15, 0.85)) * h, float(rng.uniform(0.15, 0.85)) * w
            gr = float(rng.uniform(0.07, 0.1)) * min(h, w)
            lumens = np.maximum(lumens, draw.ellipse(h, w, gy, gx, gr, gr * float(rng.uniform(1.0, 1.5)), soft=1.5))
            a = np.linspace(0, 2 * np.pi, int(gr * 0.9), endpoint=False)
            centres_y.append(gy + (gr + 3) * np.sin(a))
            centres_x.append(gx + (gr + 3) * np.cos(a) * 1.2)
    area = h * w / (256 * 256)
    count = int((rng.integers(260, 340) if t.dense else rng.integers(60, 90)) * area)
    if t.enlarged:
        count = int(count * 0.6)  # bigger nuclei fill the field with fewer of them
    centres_y.append(rng.uniform(0, h, count))
    centres_x.append(rng.uniform(0, w, count))
    ys, xs = np.concatenate(centres_y), np.concatenate(centres_x)
    n = len(ys)
    if t.enlarged:  # pleomorphic: big, elongated, irregular outlines
        ry = rng.uniform(4.5, 7.0, n)
        rx, wobble = ry * rng.uniform(1.0, 1.6, n), rng.uniform(0.8, 1.15, (n, 10))
    else:
        ry = rx = rng.uniform(2.3, 3.3, n)
        wobble = 1.0
    polys = draw.outlines(ys, xs, ry, rx, rng.uniform(0, np.pi, n), points=10, wobble=wobble)
    is_positive = (rng.random(n) < 0.55) if t.stain != "H&E" else np.zeros(n, bool)
    nuclei_mask = draw.polygon_mask(h, w, polys[~is_positive])
    positive_mask = draw.polygon_mask(h, w, polys[is_positive])
    draw.paint(img, lumens, _c((248, 244, 248)))
    dark = 0.75 if t.enlarged else 1.0  # hyperchromatic
    draw.paint(img, nuclei_mask, _c(col["nucleus"]) * dark, alpha=0.9)
    draw.paint(img, positive_mask, _c(col["positive"]) * dark, alpha=0.9)
    return draw.to_uint8(img)


def path_pairs(t: Tissue) -> list[tuple[str, str]]:
    pairs = [("Are glands present?", yes_no(t.glands)),
             ("Are the nuclei enlarged?", yes_no(t.enlarged)),
             ("Is there evidence of malignancy?", yes_no(t.enlarged)),
             ("Is this an immunohistochemical stain?", yes_no(t.stain != "H&E")),
             ("Is the cellularity high?", yes_no(t.dense)),
             ("What stain was used?", t.stain),
             ("How dense are the cells?", "dense" if t.dense else "sparse"),
             ("What is the size of the nuclei?", "enlarged" if t.enlarged else "normal"),
             ("What structures are present?", "glands" if t.glands else "sheets of cells")]
    if t.stain != "H&E":
        pairs.append(("What color are the positively stained cells?", "brown"))
    return pairs


@generator("path_vqa")
def path_vqa(key: Key) -> Sample:
    rng = key.rng()
    t = Tissue(stain="H&E" if rng.random() < 0.6 else "immunohistochemistry", dense=bool(rng.random() < 0.5),
               enlarged=bool(rng.random() < 0.5), glands=bool(rng.random() < 0.5))
    image = draw_tissue(rng, t, key.raw_size)
    question, answer = choose_qa(rng, path_pairs(t), (0, 0, 1, 2)[key.balanced(4)])
    return Sample({"question": question}, answer, images=[image])
