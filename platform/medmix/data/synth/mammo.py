"""Synthetic mammography: VinDr-Mammo BI-RADS and CBIS-DDSM mass / calcification patches.

The drawn morphology decides the label, following the BI-RADS lexicon (so the three tasks
share knowledge: round and circumscribed is benign, spiculated is malignant):

VinDr-Mammo (whole breast, CC or MLO, left or right):
    BI-RADS 1  no mass
    BI-RADS 2  small, very dense, round, sharply circumscribed (calcified benign mass)
    BI-RADS 3  oval, circumscribed, moderately dense
    BI-RADS 4  irregular shape with an indistinct (blurred) margin
    BI-RADS 5  irregular core with radiating spicules

CBIS-DDSM mass patch:   benign without callback = small faint round; benign = large
                        lobulated circumscribed; malignant = spiculated with a blurred margin.
CBIS-DDSM calc. patch:  benign without callback = a few coarse "popcorn" blobs; benign =
                        round punctate dots scattered over the patch; malignant = many fine
                        pleomorphic dots clustered along a branching line.

Breasts are displayed with the chest wall on the image's right for the right breast and on
the left for the left breast (hung back to back); MLO views show the pectoral muscle.
"""

from __future__ import annotations

import numpy as np

from medmix.data.synth import draw
from medmix.data.synth.base import Key, Sample, generator, pick
from medmix.tasks.builtin import BIRADS, CBIS_CLASSES


def _spicules(h: int, w: int, rng: np.random.Generator, cy: float, cx: float, r: float,
              n: tuple[int, int], length: tuple[float, float], width: float) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for a in rng.uniform(0, 2 * np.pi, int(rng.integers(*n))):
        ln = float(rng.uniform(*length)) * r
        out = np.maximum(out, draw.segment(h, w, cy + 0.5 * r * np.sin(a), cx + 0.5 * r * np.cos(a),
                                           cy + ln * np.sin(a), cx + ln * np.cos(a), width, soft=1.2))
    return out


def mass_mask(rng: np.random.Generator, h: int, w: int, cy: float, cx: float, r: float, kind: str) -> np.ndarray:
    """Density mask of one mass: round, oval, lobulated, irregular or spiculated (BI-RADS shapes)."""
    angle = float(rng.uniform(0, np.pi))
    if kind == "round":
        return draw.radial_shape(h, w, cy, cx, r, [], soft=1.2)
    if kind == "oval":
        return draw.radial_shape(h, w, cy, cx, r, [], soft=1.5, stretch=float(rng.uniform(1.4, 1.8)), angle=angle)
    if kind == "lobulated":
        return draw.radial_shape(h, w, cy, cx, r, draw.random_harmonics(rng, [3, 4], (0.08, 0.14)), soft=1.5,
                                 stretch=float(rng.uniform(1.1, 1.4)), angle=angle)
    if kind == "irregular":
        core = draw.radial_shape(h, w, cy, cx, r, draw.random_harmonics(rng, range(2, 7), (0.07, 0.16)), soft=1.5)
        return draw.blur(core, 0.15 * r)
    if kind == "spiculated":
        core = draw.radial_shape(h, w, cy, cx, r, draw.random_harmonics(rng, range(3, 7), (0.05, 0.12)), soft=1.5)
        spic = _spicules(h, w, rng, cy, cx, r, (10, 17), (1.7, 2.6), max(1.5, 0.12 * r))
        return np.maximum(draw.blur(core, 0.08 * r), 0.8 * spic)
    raise ValueError(f"unknown mass shape {kind!r}")


def tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Fatty and fibroglandular breast parenchyma in [0, 1]."""
    dense = np.clip(draw.smooth_noise(rng, h, w, 7) * 0.5 + float(rng.uniform(-0.3, 0.3)), 0, 1)
    return 0.24 + 0.2 * dense + 0.02 * draw.smooth_noise(rng, h, w, 40)


def draw_breast(rng: np.random.Generator, birads: int, longest: int, view: str, laterality: str) -> np.ndarray:
    """A whole-breast mammogram (uint8 HxW) of BI-RADS category `birads` (1-5)."""
    h, w = draw.aspect_size(rng, longest, 0.55, 0.8)
    wall_x = w if laterality == "right" else 0.0       # chest wall edge
    inward = -1.0 if laterality == "right" else 1.0    # from the chest wall toward the nipple
    cy = h * float(rng.uniform(0.47, 0.55))
    breast = draw.ellipse(h, w, cy, wall_x, 0.44 * h, float(rng.uniform(0.8, 0.92)) * w, soft=3)
    img = breast * tissue(rng, h, w)
    skin = np.clip(breast - draw.ellipse(h, w, cy, wall_x, 0.44 * h - 3, 0.86 * w - 3, soft=3), 0, 1)
    draw.add(img, skin * breast, 0.1)
    if view == "MLO":  # pectoral muscle: a bright triangle in the upper chest-wall corner
        yy, xx = draw.coords(h, w)
        depth = float(rng.uniform(0.25, 0.35)) * w
        dist = np.abs(xx - wall_x)
        muscle = np.clip((depth * (1 - yy / (0.45 * h)) - dist) / 2.0 + 0.5, 0, 1)
        draw.paint(img, muscle * breast, 0.62 + 0.03 * draw.smooth_noise(rng, h, w, 12))
    if birads > 1:
        kind = {2: "round", 3: "oval", 4: "irregular", 5: "spiculated"}[birads]
        r = {2: (0.055, 0.07), 3: (0.08, 0.1), 4: (0.1, 0.13), 5: (0.07, 0.095)}[birads]
        r = float(rng.uniform(*r)) * w
        my = cy + float(rng.uniform(-0.2, 0.2)) * h
        mx = wall_x + inward * float(rng.uniform(0.3, 0.55)) * w
        density = 0.92 if birads == 2 else 0.66 + 0.04 * float(rng.random())
        draw.paint(img, mass_mask(rng, h, w, my, mx, r, kind) * breast, density)
    img += 0.01 * draw.smooth_noise(rng, h, w, 10) * breast
    return draw.to_uint8(img)


@generator("mammo_vindr")
def mammo_vindr(key: Key) -> Sample:
    rng = key.rng()
    label = key.balanced(len(BIRADS))
    view, laterality = pick(rng, ("CC", "MLO")), pick(rng, ("left", "right"))
    image = draw_breast(rng, label + 1, key.raw_size, view, laterality)
    return Sample({"view": view, "laterality": laterality}, BIRADS[label], label=label, images=[image])


def draw_mass_patch(rng: np.random.Generator, cls: int, longest: int) -> np.ndarray:
    """A CBIS-DDSM-like mass patch (uint8 HxW) of class index `cls` in CBIS_CLASSES."""
    h, w = draw.aspect_size(rng, longest, 0.7, 1.4)
    side = min(h, w)
    img = tissue(rng, h, w)
    cy, cx = h / 2 + float(rng.normal(0, 0.06)) * side, w / 2 + float(rng.normal(0, 0.06)) * side
    kind, r, density = ((("round", (0.11, 0.15), 0.17), ("lobulated", (0.2, 0.26), 0.3),
                         ("spiculated", (0.15, 0.2), 0.33))[cls])
    draw.add(img, mass_mask(rng, h, w, cy, cx, float(rng.uniform(*r)) * side, kind), density)
    return draw.to_uint8(img)


def draw_calc_patch(rng: np.random.Generator, cls: int, longest: int) -> np.ndarray:
    """A CBIS-DDSM-like calcification patch (uint8 HxW) of class index `cls` in CBIS_CLASSES."""
    h, w = draw.aspect_size(rng, longest, 0.7, 1.4)
    side = min(h, w)
    img = tissue(rng, h, w)
    calc = np.zeros((h, w), np.float32)
    if cls == 0:      # coarse popcorn: a few big lumpy blobs
        for _ in range(int(rng.integers(2, 5))):
            r = float(rng.uniform(0.06, 0.09)) * side
            cy, cx = float(rng.uniform(0.2, 0.8)) * h, float(rng.uniform(0.2, 0.8)) * w
            calc = np.maximum(calc, draw.radial_shape(h, w, cy, cx, r,
                                                      draw.random_harmonics(rng, [3, 4, 5], (0.08, 0.16)), soft=1.2))
    elif cls == 1:    # round punctate, scattered over the whole patch
        for _ in range(int(rng.integers(8, 17))):
            r = float(rng.uniform(0.02, 0.03)) * side
            draw.stamp_ellipse(calc, float(rng.uniform(0.08, 0.92)) * h, float(rng.uniform(0.08, 0.92)) * w, r, r)
    else:             # fine pleomorphic, clustered along a branching line
        y0, x0 = h / 2 + float(rng.normal(0, 0.05)) * side, w / 2 + float(rng.normal(0, 0.05)) * side
        for _ in range(int(rng.integers(2, 4))):  # branches from one centre
            a = float(rng.uniform(0, 2 * np.pi))
            ln = float(rng.uniform(0.12, 0.22)) * side
            for t in rng.uniform(0, 1, int(rng.integers(7, 12))):
                ry, rx = float(rng.uniform(0.01, 0.022)) * side, float(rng.uniform(0.01, 0.022)) * side
                py = y0 + t * ln * np.sin(a) + float(rng.normal(0, 0.015)) * side
                px = x0 + t * ln * np.cos(a) + float(rng.normal(0, 0.015)) * side
                draw.stamp_ellipse(calc, py, px, ry, rx, angle=float(rng.uniform(0, np.pi)))
    draw.paint(img, calc, 0.9)
    return draw.to_uint8(img)


@generator("mammo_cbis_mass")
def mammo_cbis_mass(key: Key) -> Sample:
    label = key.balanced(len(CBIS_CLASSES))
    return Sample({}, CBIS_CLASSES[label], label=label, images=[draw_mass_patch(key.rng(), label, key.raw_size)])


@generator("mammo_cbis_calc")
def mammo_cbis_calc(key: Key) -> Sample:
    label = key.balanced(len(CBIS_CLASSES))
    return Sample({}, CBIS_CLASSES[label], label=label, images=[draw_calc_patch(key.rng(), label, key.raw_size)])
