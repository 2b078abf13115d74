"""Synthetic chest X-rays and the text tasks that share their findings.

One findings vocabulary feeds four tasks, as MIMIC-CXR and MIMIC-III do in MultiMedBench:

- `cxr_report`: the study's image -> a canonical findings report;
- `cxr_classify`: the SAME study's image (same seed stream) -> yes/no for one condition;
- `vqa_rad`: another study stream -> open and closed questions about what is drawn;
- `mimic3_summary`: findings text (varied wording, no image) -> the canonical impression.

What is drawn decides the findings: an enlarged heart silhouette is cardiomegaly; a focal
opacity in one lung is atelectasis when small and consolidation when large (its side and zone
are drawn too); a bilateral perihilar haze is edema; a basal meniscus that blunts one lung
base is a pleural effusion. Images follow the radiological display convention: the patient's
right is on the image's LEFT, so a "right lower lobe" opacity lies in the image's left half.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmix.data.synth import draw
from medmix.data.synth.base import Key, Sample, choose_qa, generator, option_label, pick, yes_no
from medmix.tasks.builtin import CXR_CONDITIONS

VIEWS = ("PA", "AP")
INDICATIONS = ("cough", "fever", "shortness of breath", "chest pain", "pre-operative assessment",
               "follow-up", "hypoxia", "fall", "weakness", "tachycardia")
SIDES = ("right", "left")          # the patient's side
STUDY = "cxr_study"                 # namespace shared by cxr_report and cxr_classify


@dataclass(frozen=True)
class Findings:
    """What one synthetic chest X-ray shows."""

    cardiomegaly: bool = False
    opacity: str | None = None        # "small" (atelectasis) or "large" (consolidation)
    opacity_side: str | None = None   # patient's "right" / "left"
    opacity_zone: str | None = None   # "upper" / "lower"
    edema: bool = False
    effusion_side: str | None = None  # patient's side of a pleural effusion

    @property
    def conditions(self) -> dict[str, bool]:
        """The five MIMIC-CXR classification conditions (`CXR_CONDITIONS`)."""
        return {"atelectasis": self.opacity == "small", "cardiomegaly": self.cardiomegaly,
                "consolidation": self.opacity == "large", "edema": self.edema,
                "pleural effusion": self.effusion_side is not None}

    @property
    def normal(self) -> bool:
        return not any(self.conditions.values())


def sample_findings(rng: np.random.Generator) -> Findings:
    opacity = rng.random() < 0.5
    effusion = rng.random() < 0.3
    return Findings(
        cardiomegaly=bool(rng.random() < 0.35),
        opacity=pick(rng, ("small", "large")) if opacity else None,
        opacity_side=pick(rng, SIDES) if opacity else None,
        opacity_zone=pick(rng, ("upper", "lower")) if opacity else None,
        edema=bool(rng.random() < 0.2),
        effusion_side=pick(rng, SIDES) if effusion else None,
    )


# --- the image ----------------------------------------------------------------------------

def draw_cxr(rng: np.random.Generator, f: Findings, longest: int, view: str) -> np.ndarray:
    """A grayscale frontal chest radiograph (uint8 HxW) showing exactly `f`."""
    h, w = draw.aspect_size(rng, longest, 0.8, 1.2)
    img = np.full((h, w), 0.06, np.float32)
    j = lambda s: float(rng.normal(0.0, s))  # noqa: E731 - small positional jitter
    draw.paint(img, draw.ellipse(h, w, 0.57 * h, 0.5 * w, 0.62 * h, 0.47 * w, soft=4),
               0.45 + 0.03 * draw.smooth_noise(rng, h, w, 6))
    lung_cy, lung_ry, lung_rx = (0.46 + j(0.01)) * h, 0.30 * h, 0.155 * w
    lungs = {}
    for side, sign in (("right", -1), ("left", 1)):  # patient right = image left
        cx = 0.5 * w + sign * (0.2 + j(0.008)) * w
        lungs[side] = (cx, draw.ellipse(h, w, lung_cy, cx, lung_ry, lung_rx, soft=3))
        texture = 0.15 + 0.025 * draw.smooth_noise(rng, h, w, 14)
        draw.paint(img, lungs[side][1], texture)
    yy, xx = draw.coords(h, w)
    # ribs: seven bands 0.075 h apart, curving down laterally, each ~0.016 h thick
    phase = (yy - 0.2 * h - 0.05 * h * ((xx - 0.5 * w) / (0.35 * w)) ** 2) / (0.075 * h)
    ribs = np.clip(1.0 - np.abs(phase - np.round(phase)) * (0.075 / 0.008), 0.0, 1.0)
    ribs *= (phase > -0.5) & (phase < 6.5)
    lung_any = np.maximum(lungs["right"][1], lungs["left"][1])
    draw.add(img, ribs * lung_any, 0.06)
    # mediastinum, trachea, heart (apex toward the patient's left = image right)
    draw.paint(img, draw.ellipse(h, w, 0.36 * h, 0.5 * w, 0.27 * h, 0.055 * w, soft=3), 0.55)
    draw.paint(img, draw.ellipse(h, w, 0.2 * h, 0.5 * w, 0.11 * h, 0.014 * w, soft=2), 0.25)
    heart_rx = (0.19 if f.cardiomegaly else 0.115) * w * float(rng.uniform(0.94, 1.06))
    heart_ry = (0.155 if f.cardiomegaly else 0.13) * h
    heart = draw.ellipse(h, w, (0.62 + j(0.01)) * h, (0.535 + j(0.006)) * w, heart_ry, heart_rx,
                         angle=float(rng.uniform(-0.2, 0.0)), soft=2)
    draw.paint(img, heart, 0.66)
    if f.opacity:
        cx, mask = lungs[f.opacity_side]
        r = (float(rng.uniform(0.05, 0.06)) if f.opacity == "small" else float(rng.uniform(0.085, 0.11))) * w
        cy = (0.35 if f.opacity_zone == "upper" else 0.55) * h + j(0.015) * h
        blob = draw.radial_shape(h, w, cy, cx + j(0.02) * w, r, draw.random_harmonics(rng, range(2, 6), (0.02, 0.1)),
                                 soft=0.35 * r)
        draw.add(img, blob * mask, 0.4)
    if f.edema:
        for side, sign in (("right", -1), ("left", 1)):
            cx, mask = lungs[side]
            haze = draw.gaussian(h, w, 0.47 * h, cx - sign * 0.06 * w, 0.14 * h, 0.09 * w)
            streaks = np.clip(draw.smooth_noise(rng, h, w, 30), 0, None)
            draw.add(img, haze * mask * (0.16 + 0.05 * streaks), 1.0)
    if f.effusion_side:
        cx, mask = lungs[f.effusion_side]
        bottom = lung_cy + lung_ry
        depth = float(rng.uniform(0.11, 0.17)) * h
        sign = -1.0 if f.effusion_side == "right" else 1.0
        lateral = np.clip(sign * (xx - cx) / lung_rx, 0.0, 1.0)
        level = bottom - depth - 0.09 * h * lateral ** 2      # meniscus: climbs the lateral wall
        fluid = np.clip((yy - level) / 3.0 + 0.5, 0.0, 1.0)
        draw.paint(img, fluid * mask * (1.0 - heart), 0.47)
    if view == "AP":  # portable films: flatter contrast
        img = img * 0.92 + 0.03
    img += 0.012 * draw.smooth_noise(rng, h, w, 8)
    return draw.to_uint8(img)


def draw_study(key: Key) -> tuple[Findings, str, np.ndarray]:
    """The study at `key`'s (seed, split, index) in the shared CXR stream: findings, view, image."""
    rng = key.rng_for(STUDY)
    f = sample_findings(rng)
    view = pick(rng, VIEWS)
    return f, view, draw_cxr(rng, f, key.raw_size, view)


# --- text from findings -------------------------------------------------------------------

def report(f: Findings) -> str:
    """The canonical findings section `cxr_report` learns to write."""
    out = ["The heart is enlarged." if f.cardiomegaly else "The heart size is normal."]
    if f.opacity:
        cause = "consolidation" if f.opacity == "large" else "atelectasis"
        out.append(f"There is a {f.opacity} opacity in the {f.opacity_side} {f.opacity_zone} lobe, "
                   f"consistent with {cause}.")
    if f.edema:
        out.append("There is diffuse bilateral perihilar opacity, consistent with pulmonary edema.")
    if not f.opacity and not f.edema:
        out.append("The lungs are clear.")
    out.append(f"There is a {f.effusion_side} pleural effusion." if f.effusion_side else "No pleural effusion.")
    out.append("No pneumothorax.")
    return " ".join(out)


def impression(f: Findings) -> str:
    """The canonical impression `mimic3_summary` learns to write from the findings."""
    if f.normal:
        return "No acute cardiopulmonary process."
    out = []
    if f.cardiomegaly:
        out.append("Cardiomegaly.")
    if f.opacity:
        cause = "consolidation" if f.opacity == "large" else "atelectasis"
        out.append(f"{f.opacity_side.capitalize()} {f.opacity_zone} lobe {cause}.")
    if f.edema:
        out.append("Pulmonary edema.")
    if f.effusion_side:
        out.append(f"{f.effusion_side.capitalize()} pleural effusion.")
    return " ".join(out)


def findings_text(rng: np.random.Generator, f: Findings) -> str:
    """A findings section in varied radiologist wording (the summarization task's input)."""
    s = []
    if f.cardiomegaly:
        s.append(pick(rng, ("The heart is enlarged.", "The cardiac silhouette is enlarged.",
                            "There is cardiomegaly.", "Heart size is increased.")))
    else:
        s.append(pick(rng, ("The heart is normal in size.", "Cardiac silhouette is within normal limits.",
                            "Heart size is normal.")))
    if rng.random() < 0.5:
        s.append(pick(rng, ("The mediastinal contours are unremarkable.", "Hilar contours are normal.")))
    if f.opacity == "large":
        s.append(pick(rng, (f"There is a large area of airspace opacity in the {f.opacity_side} {f.opacity_zone} lobe.",
                            f"Dense {f.opacity_side} {f.opacity_zone} lobe opacity with air bronchograms.",
                            f"A large opacity occupies the {f.opacity_side} {f.opacity_zone} lung zone.")))
    elif f.opacity == "small":
        s.append(pick(rng, (f"There is a small linear opacity in the {f.opacity_side} {f.opacity_zone} lobe.",
                            f"Minor plate-like opacity at the {f.opacity_side} {f.opacity_zone} lobe.",
                            f"A small opacity is seen in the {f.opacity_side} {f.opacity_zone} lung zone.")))
    if f.edema:
        s.append(pick(rng, ("There is diffuse interstitial prominence with perihilar haziness.",
                            "Bilateral perihilar opacities and vascular congestion are present.",
                            "Interstitial markings are increased bilaterally with Kerley B lines.")))
    if not f.opacity and not f.edema:
        s.append(pick(rng, ("The lungs are clear.", "No focal consolidation.", "Lungs are well expanded and clear.")))
    if f.effusion_side:
        s.append(pick(rng, (f"Blunting of the {f.effusion_side} costophrenic angle.",
                            f"There is a {f.effusion_side} pleural effusion.",
                            f"Layering fluid at the {f.effusion_side} base.")))
    else:
        s.append(pick(rng, ("No pleural effusion.", "Costophrenic angles are sharp.")))
    s.append(pick(rng, ("No pneumothorax.", "There is no pneumothorax.")))
    if rng.random() < 0.4:
        s.append(pick(rng, ("No acute osseous abnormality.", "Degenerative changes of the spine.")))
    return " ".join(s)


# --- generators ---------------------------------------------------------------------------

@generator("cxr_report")
def cxr_report(key: Key) -> Sample:
    f, view, image = draw_study(key)
    indication = pick(key.rng(), INDICATIONS)
    return Sample({"view": view, "indication": indication}, report(f), images=[image])


@generator("cxr_classify")
def cxr_classify(key: Key) -> Sample:
    f, view, image = draw_study(key)
    rng = key.rng()
    present = [c for c in CXR_CONDITIONS if f.conditions[c]]
    absent = [c for c in CXR_CONDITIONS if not f.conditions[c]]
    want_yes = key.balanced(2) == 0
    condition = pick(rng, present) if (want_yes and present) or not absent else pick(rng, absent)
    answer = yes_no(f.conditions[condition])
    return Sample({"view": view, "condition": condition}, answer, label=option_label(("yes", "no"), answer),
                  images=[image])


def vqa_pairs(f: Findings) -> list[tuple[str, str]]:
    """Every (question, answer) this study can answer, open and closed."""
    pairs = [("Is the heart enlarged?", yes_no(f.cardiomegaly)),
             ("Is there a pleural effusion?", yes_no(f.effusion_side is not None)),
             ("Is this chest X-ray normal?", yes_no(f.normal)),
             ("Is there pulmonary edema?", yes_no(f.edema))]
    for side in SIDES:
        pairs.append((f"Is there an opacity in the {side} lung?", yes_no(f.opacity_side == side)))
    pairs.append(("What abnormality is seen in the lungs?",
                  "consolidation" if f.opacity == "large" else "atelectasis" if f.opacity == "small"
                  else "edema" if f.edema else "none"))
    if f.opacity:
        pairs += [("Which lung has the opacity?", f.opacity_side),
                  ("How large is the opacity?", f.opacity),
                  ("In which zone is the opacity?", f.opacity_zone)]
    if f.effusion_side:
        pairs.append(("Which side is the pleural effusion on?", f.effusion_side))
    pairs.append(("What is the size of the heart?", "enlarged" if f.cardiomegaly else "normal"))
    return pairs


@generator("vqa_rad")
def vqa_rad(key: Key) -> Sample:
    rng = key.rng()
    f = sample_findings(rng)
    view = pick(rng, VIEWS)
    image = draw_cxr(rng, f, key.raw_size, view)
    question, answer = choose_qa(rng, vqa_pairs(f), (0, 0, 1, 2)[key.balanced(4)])
    return Sample({"question": question}, answer, images=[image])


@generator("mimic3_summary")
def mimic3_summary(key: Key) -> Sample:
    rng = key.rng()
    f = sample_findings(rng)
    return Sample({"findings": findings_text(rng, f)}, impression(f))
