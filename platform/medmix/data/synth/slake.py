"""Synthetic Slake-VQA: axial abdominal CT / MRI slices and questions about what is drawn.

Each slice shows the liver, spleen, kidneys, spine and aorta (the patient's right on the
image's left, anterior up). CT and MRI differ in how tissues look (bright bone and dark fat
on CT; bright fat, dark bone and a flow-void aorta on MRI). Zero to three lesions sit in one
organ, all brighter or all darker than it. Questions ask about modality, lesion count,
which organ, which side, lesion brightness and normality — open and yes/no.
"""

from __future__ import annotations

import numpy as np

from medmix.data.synth import draw
from medmix.data.synth.base import Key, Sample, choose_qa, generator, pick, yes_no

ORGANS = ("liver", "spleen", "right kidney", "left kidney")
COUNT_WORDS = ("none", "one", "two", "three")
# (cy, cx, ry, rx) as fractions of (h, w); patient right = image left
LAYOUT = {"liver": (0.45, 0.32, 0.22, 0.19), "spleen": (0.45, 0.74, 0.12, 0.08),
          "right kidney": (0.66, 0.37, 0.08, 0.055), "left kidney": (0.66, 0.63, 0.08, 0.055)}
# tissue intensities per modality
LOOK = {
    "CT": {"fat": 0.32, "muscle": 0.45, "liver": 0.56, "spleen": 0.52, "right kidney": 0.62,
           "left kidney": 0.62, "bone": 0.92, "aorta": 0.72, "canal": 0.4},
    "MRI": {"fat": 0.78, "muscle": 0.3, "liver": 0.28, "spleen": 0.5, "right kidney": 0.58,
            "left kidney": 0.58, "bone": 0.14, "aorta": 0.04, "canal": 0.85},
}


def draw_axial(rng: np.random.Generator, modality: str, organ: str | None, lesions: int, brighter: bool,
               longest: int) -> np.ndarray:
    """A grayscale axial slice (uint8 HxW) with `lesions` lesions in `organ`."""
    h, w = draw.aspect_size(rng, longest, 1.1, 1.35)
    look = LOOK[modality]
    img = np.zeros((h, w), np.float32)
    body_ry, body_rx = float(rng.uniform(0.4, 0.45)) * h, float(rng.uniform(0.44, 0.47)) * w
    draw.paint(img, draw.ellipse(h, w, 0.5 * h, 0.5 * w, body_ry, body_rx, soft=2), look["fat"])
    draw.paint(img, draw.ellipse(h, w, 0.5 * h, 0.5 * w, body_ry - 0.06 * h, body_rx - 0.06 * w, soft=2),
               look["muscle"] + 0.02 * draw.smooth_noise(rng, h, w, 8))
    ring = np.clip(draw.ellipse(h, w, 0.5 * h, 0.5 * w, body_ry - 0.07 * h, body_rx - 0.07 * w, soft=1.5)
                   - draw.ellipse(h, w, 0.5 * h, 0.5 * w, body_ry - 0.1 * h, body_rx - 0.1 * w, soft=1.5), 0, 1)
    yy, xx = draw.coords(h, w)
    ribs = (np.sin(np.arctan2(yy - 0.5 * h, xx - 0.5 * w) * 14) > 0.3).astype(np.float32)
    draw.paint(img, ring * ribs, look["bone"])
    masks = {}
    for name, (cy, cx, ry, rx) in LAYOUT.items():
        cy, cx = (cy + float(rng.normal(0, 0.01))) * h, (cx + float(rng.normal(0, 0.01))) * w
        masks[name] = (cy, cx, ry * h, rx * w, draw.ellipse(h, w, cy, cx, ry * h, rx * w,
                                                             angle=float(rng.uniform(-0.2, 0.2)), soft=1.5))
        draw.paint(img, masks[name][4], look[name] + 0.015 * draw.smooth_noise(rng, h, w, 16))
    draw.paint(img, draw.ellipse(h, w, 0.74 * h, 0.5 * w, 0.07 * h, 0.055 * w, soft=1.5), look["bone"])
    draw.paint(img, draw.ellipse(h, w, 0.72 * h, 0.5 * w, 0.025 * h, 0.02 * w, soft=1.0), look["canal"])
    draw.paint(img, draw.ellipse(h, w, 0.6 * h, 0.53 * w, 0.035 * h, 0.03 * w, soft=1.0), look["aorta"])
    if organ and lesions:
        cy, cx, ry, rx, mask = masks[organ]
        base = look[organ]
        value = base + 0.26 if brighter else base - 0.2
        for _ in range(lesions):
            r = float(rng.uniform(0.045, 0.06)) * min(h, w) * (1.0 if organ == "liver" else 0.7)
            ly = cy + float(rng.uniform(-0.55, 0.55)) * ry
            lx = cx + float(rng.uniform(-0.55, 0.55)) * rx
            draw.paint(img, draw.ellipse(h, w, ly, lx, r, r * float(rng.uniform(0.85, 1.15)), soft=1.5) * mask,
                       value)
    img += 0.01 * draw.smooth_noise(rng, h, w, 20)
    return draw.to_uint8(img)


def slake_pairs(modality: str, organ: str | None, lesions: int, brighter: bool) -> list[tuple[str, str]]:
    pairs = [("What modality is used to take this image?", modality),
             ("How many lesions are in the image?", COUNT_WORDS[lesions]),
             ("Does the image look normal?", yes_no(lesions == 0)),
             ("Is this a CT scan?", yes_no(modality == "CT"))]
    pairs += [(f"Is there a lesion in the {o}?", yes_no(lesions > 0 and organ == o)) for o in ORGANS]
    if lesions:
        side = "left" if organ in ("spleen", "left kidney") else "right"  # the patient's side
        pairs += [("Which organ contains the lesion?", organ),
                  ("Which side of the body is the lesion on?", side),
                  ("Is the lesion brighter or darker than the surrounding organ?",
                   "brighter" if brighter else "darker")]
    return pairs


@generator("slake_vqa")
def slake_vqa(key: Key) -> Sample:
    rng = key.rng()
    modality = pick(rng, ("CT", "MRI"))
    lesions = int(rng.choice(4, p=(0.25, 0.35, 0.25, 0.15)))
    organ = pick(rng, ORGANS) if lesions else None
    brighter = bool(rng.random() < 0.5)
    image = draw_axial(rng, modality, organ, lesions, brighter, key.raw_size)
    question, answer = choose_qa(rng, slake_pairs(modality, organ, lesions, brighter), (0, 0, 1, 2)[key.balanced(4)])
    return Sample({"question": question}, answer, images=[image])
