"""Synthetic PAD-UFES-20: RGB clinical photographs of six skin lesion classes.

The lesion's colour, outline and inner texture decide its class (and nothing else does: the
14 clinical attributes are drawn independently of the class, so a model beats chance only
by looking):

| class                   | drawn as                                                        |
|-------------------------|-----------------------------------------------------------------|
| basal cell carcinoma    | pearly pink round nodule, bright rolled rim, red vessels         |
| squamous cell carcinoma | red irregular nodule with a yellow-white keratin crust          |
| actinic keratosis       | flat pinkish-red angular patch sprinkled with white scale       |
| seborrheic keratosis    | tan-brown oval "stuck-on" plaque, dark ridges, pale milia dots  |
| melanoma                | large asymmetric lesion: black, dark brown and blue-grey areas   |
| nevus                   | small round uniform mid-brown spot with a smooth border         |

The skin tone follows the `fitzpatrick` attribute; hairs and lighting vary per image.
"""

from __future__ import annotations

import numpy as np

from medmix.data.synth import draw
from medmix.data.synth.base import Key, Sample, generator, pick, yes_no
from medmix.tasks.builtin import DERM_CLASSES

# skin colour per Fitzpatrick type (1-6), RGB in [0, 1]
SKIN = {1: (245, 215, 195), 2: (232, 190, 160), 3: (210, 165, 130), 4: (180, 130, 95),
        5: (140, 95, 65), 6: (100, 68, 48)}
FITZPATRICK_P = (0.15, 0.35, 0.3, 0.12, 0.05, 0.03)  # PAD-UFES-20 is mostly light skin
REGIONS = ("face", "nose", "ear", "lip", "scalp", "neck", "chest", "back", "abdomen", "arm",
           "forearm", "hand", "thigh", "foot")


def _rgb(c: tuple, rng: np.random.Generator, jitter: float = 8.0) -> np.ndarray:
    return np.clip((np.asarray(c, np.float32) + rng.normal(0, jitter, 3)) / 255.0, 0, 1).astype(np.float32)


def _dots(rng: np.random.Generator, h: int, w: int, mask: np.ndarray, n: int, r: tuple[float, float]) -> np.ndarray:
    """Up to `n` small round dots at random places inside `mask`."""
    out = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        return out
    for i in rng.integers(len(ys), size=n):
        rad = float(rng.uniform(*r))
        draw.stamp_ellipse(out, ys[i] + 0.5, xs[i] + 0.5, rad, rad)
    return out


def draw_lesion(rng: np.random.Generator, cls: str, longest: int, fitzpatrick: int) -> np.ndarray:
    """A clinical photograph (uint8 HxWx3) of one lesion of class `cls` on skin of that type."""
    h, w = draw.aspect_size(rng, longest, 0.75, 1.33)
    side = min(h, w)
    skin = _rgb(SKIN[fitzpatrick], rng, 6.0)
    img = np.broadcast_to(skin, (h, w, 3)).copy()
    img += 0.025 * draw.smooth_noise(rng, h, w, 10)[..., None] + 0.008 * draw.smooth_noise(rng, h, w, 10, channels=3)
    cy = h / 2 + float(rng.normal(0, 0.06)) * side
    cx = w / 2 + float(rng.normal(0, 0.06)) * side
    angle = float(rng.uniform(0, np.pi))
    if cls == "basal cell carcinoma":
        r = float(rng.uniform(0.14, 0.18)) * side
        body = draw.radial_shape(h, w, cy, cx, r, draw.random_harmonics(rng, [2, 3], (0.0, 0.04)), soft=2.0)
        draw.paint(img, body, _rgb((225, 160, 170), rng))
        rim = np.clip(body - draw.radial_shape(h, w, cy, cx, 0.72 * r, [], soft=3.0), 0, 1)
        draw.paint(img, rim, _rgb((248, 215, 220), rng), alpha=0.85)
        for _ in range(int(rng.integers(2, 5))):
            a0 = float(rng.uniform(0, 2 * np.pi))
            a1 = a0 + float(rng.uniform(-0.8, 0.8))
            vessel = draw.segment(h, w, cy + 0.6 * r * np.sin(a0), cx + 0.6 * r * np.cos(a0),
                                  cy + 0.2 * r * np.sin(a1), cx + 0.2 * r * np.cos(a1), 1.5)
            draw.paint(img, vessel * body, _rgb((180, 40, 60), rng), alpha=0.8)
        if rng.random() < 0.5:
            draw.paint(img, draw.ellipse(h, w, cy, cx, 0.22 * r, 0.25 * r, soft=2.0), _rgb((130, 40, 45), rng))
    elif cls == "squamous cell carcinoma":
        r = float(rng.uniform(0.16, 0.22)) * side
        body = draw.radial_shape(h, w, cy, cx, r, draw.random_harmonics(rng, range(3, 8), (0.04, 0.1)), soft=2.0)
        draw.paint(img, body, _rgb((175, 50, 45), rng) + 0.04 * draw.smooth_noise(rng, h, w, 20, 3))
        crust = draw.radial_shape(h, w, cy + float(rng.normal(0, 0.15)) * r, cx + float(rng.normal(0, 0.15)) * r,
                                  0.45 * r, draw.random_harmonics(rng, range(3, 7), (0.05, 0.15)), soft=2.0)
        draw.paint(img, crust * body, _rgb((225, 210, 160), rng))
    elif cls == "actinic keratosis":
        r = float(rng.uniform(0.12, 0.18)) * side
        body = draw.radial_shape(h, w, cy, cx, r, [(4, float(rng.uniform(0.1, 0.18)), angle)]
                                 + draw.random_harmonics(rng, [5, 6, 7], (0.03, 0.08)), soft=2.5)
        draw.paint(img, body, _rgb((205, 115, 100), rng), alpha=0.85)
        draw.paint(img, _dots(rng, h, w, body, int(rng.integers(25, 45)), (1.0, 2.0)), _rgb((245, 240, 230), rng))
    elif cls == "seborrheic keratosis":
        r = float(rng.uniform(0.13, 0.17)) * side
        body = draw.radial_shape(h, w, cy, cx, r, [], soft=1.5, stretch=float(rng.uniform(1.3, 1.6)), angle=angle)
        draw.paint(img, body, _rgb((150, 100, 55), rng))
        ridges = np.clip(np.abs(draw.smooth_noise(rng, h, w, 28)) < 0.25, 0, 1).astype(np.float32)
        draw.paint(img, ridges * body, _rgb((95, 60, 35), rng), alpha=0.7)
        draw.paint(img, _dots(rng, h, w, body, int(rng.integers(8, 16)), (1.5, 2.5)), _rgb((225, 205, 165), rng))
    elif cls == "melanoma":
        r = float(rng.uniform(0.2, 0.27)) * side
        body = draw.radial_shape(h, w, cy, cx, r, draw.random_harmonics(rng, range(2, 7), (0.06, 0.16)), soft=2.0)
        draw.paint(img, body, _rgb((75, 45, 30), rng))
        field = draw.smooth_noise(rng, h, w, 6, channels=2)
        draw.paint(img, body * (field[..., 0] > 0.5), _rgb((30, 20, 22), rng))
        draw.paint(img, body * (field[..., 1] > 0.6), _rgb((95, 105, 135), rng), alpha=0.85)
        draw.paint(img, body * (field[..., 0] < -0.7), _rgb((140, 95, 60), rng))
    elif cls == "nevus":
        r = float(rng.uniform(0.08, 0.12)) * side
        body = draw.radial_shape(h, w, cy, cx, r, [], soft=2.0, stretch=float(rng.uniform(1.0, 1.2)), angle=angle)
        draw.paint(img, body, _rgb((115, 70, 40), rng))
    else:
        raise ValueError(f"unknown dermatology class {cls!r}")
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.35 else 0):  # hairs
        y0, x0 = float(rng.uniform(0, h)), float(rng.uniform(0, w))
        a = float(rng.uniform(0, np.pi))
        length = float(rng.uniform(0.3, 0.7)) * side
        hair = draw.segment(h, w, y0, x0, y0 + length * np.sin(a), x0 + length * np.cos(a), 1.2)
        draw.paint(img, hair, np.full(3, 0.12, np.float32), alpha=0.8)
    img *= float(rng.uniform(0.92, 1.05))  # exposure
    return draw.to_uint8(img)


def clinical_attributes(rng: np.random.Generator) -> dict:
    """PAD-UFES-20's 14 clinical attributes, independent of the lesion class."""
    d1 = int(rng.integers(3, 26))
    return {
        "age": int(rng.integers(18, 91)), "gender": pick(rng, ("female", "male")),
        "fitzpatrick": int(rng.choice(6, p=FITZPATRICK_P)) + 1, "region": pick(rng, REGIONS),
        "diameter_1": d1, "diameter_2": max(2, d1 - int(rng.integers(0, 5))),
        **{k: yes_no(rng.random() < 0.4) for k in ("itch", "grew", "hurt", "changed", "bleed", "elevation")},
        "smoke": yes_no(rng.random() < 0.2), "drink": yes_no(rng.random() < 0.3),
    }


@generator("derm_pad")
def derm_pad(key: Key) -> Sample:
    rng = key.rng()
    label = key.balanced(len(DERM_CLASSES))
    context = clinical_attributes(rng)
    image = draw_lesion(rng, DERM_CLASSES[label], key.raw_size, context["fitzpatrick"])
    return Sample(context, DERM_CLASSES[label], label=label, images=[image])
