"""The images carry the answer: simple pixel statistics recover what the labels say.

Each test fits a nearest-centroid classifier (or a threshold) on a statistic of train images
and checks it on test images, so a model can beat chance only by looking. CXR convention:
the patient's right is on the image's left.
"""

from __future__ import annotations

import re

import numpy as np

from medmix.data.synth import Key
from medmix.data.synth.cxr import Findings, report, vqa_pairs
from medmix.data.synth.pathology import Tissue, draw_tissue
from medmix.data.synth.slake import draw_axial
from medmix.tasks.builtin import CXR_CONDITIONS
from synth_helpers import box, crop, examples, gray01, nearest_centroid_accuracy


def derm_features(img: np.ndarray) -> np.ndarray:
    """Mean and spread of the colour of pixels that differ from the skin, and their share."""
    a = crop(img).astype(np.float32) / 255.0
    h, w = a.shape[:2]
    border = np.concatenate([a[: h // 8].reshape(-1, 3), a[-(h // 8):].reshape(-1, 3),
                             a[:, : w // 8].reshape(-1, 3), a[:, -(w // 8):].reshape(-1, 3)])
    lesion = np.abs(a - np.median(border, axis=0)).sum(axis=2) > 0.15
    px = a[lesion] if lesion.sum() > 10 else a.reshape(-1, 3)
    return np.concatenate([px.mean(0), px.std(0), [lesion.mean()]])


def test_derm_class_is_recoverable_from_lesion_colour_and_size():
    train = [(derm_features(im), ex.label) for ex, im in examples("derm_pad", "train", 96)]
    test = [(derm_features(im), ex.label) for ex, im in examples("derm_pad", "test", 60)]
    assert nearest_centroid_accuracy(train, test) >= 0.7  # chance is 1/6


def _side(ex) -> str | None:
    m = re.search(r"opacity in the (right|left) (upper|lower) lobe", ex.target)
    return m.groups() if m else None


def test_cxr_opacity_side_is_recoverable_from_pixel_mass():
    def lr(ex, im) -> float:  # brightness of the image-left lung minus the image-right one, in the zone
        zone = _side(ex)[1]
        rows = (0.22, 0.48) if zone == "upper" else (0.42, 0.68)
        a = gray01(im)
        return float(box(a, rows, (0.12, 0.42)).mean() - box(a, rows, (0.58, 0.88)).mean())
    train = [(lr(ex, im), _side(ex)[0]) for ex, im in examples("cxr_report", "train", 120) if _side(ex)]
    test = [(lr(ex, im), _side(ex)[0]) for ex, im in examples("cxr_report", "test", 80) if _side(ex)]
    assert len(test) > 20
    assert nearest_centroid_accuracy(train, test) >= 0.9
    # and the convention: a patient-right opacity brightens the image's left half
    assert np.mean([x for x, s in train if s == "right"]) > np.mean([x for x, s in train if s == "left"])


def test_cxr_heart_size_and_effusion_side_are_recoverable():
    def heart(im) -> float:  # share of heart-bright pixels across the heart's widest band
        return float((box(gray01(im), (0.6, 0.66), (0, 1)) > 0.58).mean())

    def corner(im) -> float:  # image-left minus image-right lung base
        a = gray01(im)
        return float(box(a, (0.6, 0.78), (0.12, 0.3)).mean() - box(a, (0.6, 0.78), (0.7, 0.88)).mean())

    def effusion(ex):
        m = re.search(r"a (right|left) pleural effusion", ex.target)
        return m.group(1) if m else None
    tr, te = examples("cxr_report", "train", 120), examples("cxr_report", "test", 80)
    assert nearest_centroid_accuracy([(heart(im), "enlarged" in ex.target) for ex, im in tr],
                                     [(heart(im), "enlarged" in ex.target) for ex, im in te]) >= 0.9
    assert nearest_centroid_accuracy([(corner(im), effusion(ex)) for ex, im in tr if effusion(ex)],
                                     [(corner(im), effusion(ex)) for ex, im in te if effusion(ex)]) >= 0.9


def test_report_and_classification_share_the_same_studies():
    """Same (seed, split, index) -> same image; the label agrees with the report's findings."""
    reports = examples("cxr_report", "train", 40)
    labels = examples("cxr_classify", "train", 40)
    says = {"atelectasis": "consistent with atelectasis", "cardiomegaly": "The heart is enlarged",
            "consolidation": "consistent with consolidation", "edema": "pulmonary edema",
            "pleural effusion": "a right pleural effusion|a left pleural effusion"}
    seen = {c: set() for c in CXR_CONDITIONS}
    for (rep, _), (cls, _) in zip(reports, labels):
        assert rep.images == cls.images and rep.context["view"] == cls.context["view"]
        cond = cls.context["condition"]
        assert (re.search(says[cond], rep.target) is not None) == (cls.target == "yes"), (rep.target, cond)
        seen[cond].add(cls.target)
    assert sum(len(v) for v in seen.values()) >= 6 and {"yes", "no"} <= set().union(*seen.values())


def test_vqa_answers_describe_the_drawn_study():
    for ex, _ in examples("vqa_rad", "train", 40):
        # regenerate the study the way the generator does and check the pair is one it offers
        assert ex.target in {a for q, a in _pairs_for(ex) if q == ex.context["question"]}


def _pairs_for(ex):
    from medmix.data.synth.base import pick
    from medmix.data.synth.cxr import VIEWS, sample_findings
    idx = int(ex.example_id.rsplit("-", 1)[1])
    rng = Key(0, "vqa_rad", ex.split, idx).rng()
    f = sample_findings(rng)
    pick(rng, VIEWS)
    return vqa_pairs(f)


def test_cbis_calcification_morphology_decides_the_class():
    def calc(im) -> np.ndarray:  # how much is bright, and how spread out it is
        a = gray01(im)
        ys, xs = np.nonzero(a > 0.8)
        spread = np.hypot(ys.std() / a.shape[0], xs.std() / a.shape[1]) if len(ys) else 0.0
        return np.array([(a > 0.8).mean(), spread])
    train = [(calc(im), ex.label) for ex, im in examples("mammo_cbis_calc", "train", 60)]
    test = [(calc(im), ex.label) for ex, im in examples("mammo_cbis_calc", "test", 45)]
    assert nearest_centroid_accuracy(train, test) >= 0.85  # chance 1/3


def test_cbis_mass_size_and_density_separate_the_classes():
    def mass(im) -> np.ndarray:
        a = gray01(im)
        return np.array([(a > 0.62).mean(), box(a, (0.3, 0.7), (0.3, 0.7)).mean()])
    train = [(mass(im), ex.label) for ex, im in examples("mammo_cbis_mass", "train", 60)]
    test = [(mass(im), ex.label) for ex, im in examples("mammo_cbis_mass", "test", 45)]
    assert nearest_centroid_accuracy(train, test) >= 0.6


def test_vindr_birads_1_has_no_mass_and_birads_2_is_the_brightest():
    peak = {}
    for ex, im in examples("mammo_vindr", "train", 50):
        a = gray01(im)
        peak.setdefault(ex.label, []).append(float(np.percentile(a, 99.8)))
    assert set(peak) == {0, 1, 2, 3, 4}
    assert np.mean(peak[1]) > max(np.mean(peak[k]) for k in (0, 2, 3, 4))


def test_path_stain_density_and_nuclei_are_visible():
    def field(**kw) -> np.ndarray:
        t = Tissue(**{"stain": "H&E", "dense": False, "enlarged": False, "glands": False, **kw})
        return draw_tissue(np.random.default_rng(len(str(kw))), t, 256).astype(np.float32) / 255.0
    green = lambda a: float(a[..., 1].mean())            # noqa: E731 - pink H&E has little green
    dark = lambda a: float((a.sum(axis=2) < 1.2).mean())  # noqa: E731 - nuclei are the darkest pixels
    assert green(field()) + 0.1 < green(field(stain="immunohistochemistry"))
    assert dark(field(dense=True)) > 2 * dark(field())
    assert dark(field(enlarged=True)) > 2 * dark(field())
    assert float((field(glands=True).min(axis=2) > 0.9).mean()) > 0.02  # white lumens
    rows = [ex for ex, _ in examples("vqa_rad", "train", 1)] + [ex for ex, _ in examples("path_vqa", "train", 8)]
    assert all(ex.context["question"].endswith("?") for ex in rows)


def test_slake_modality_and_lesion_count_are_drawn():
    rng = np.random.default_rng(0)
    ct = [np.percentile(draw_axial(rng, "CT", None, 0, False, 256), 99) for _ in range(5)]
    mri = [np.percentile(draw_axial(rng, "MRI", None, 0, False, 256), 99) for _ in range(5)]
    assert min(ct) > max(mri)  # bone is the brightest thing on CT, fat on MRI is dimmer
    base = draw_axial(np.random.default_rng(1), "CT", "liver", 0, False, 256).astype(int)
    for n in (1, 3):
        img = draw_axial(np.random.default_rng(1), "CT", "liver", n, False, 256).astype(int)
        changed = np.abs(img - base) > 20
        assert changed.sum() > 50 * n  # darker lesions drawn into the liver


def test_report_text_covers_every_finding():
    f = Findings(cardiomegaly=True, opacity="large", opacity_side="left", opacity_zone="upper",
                 edema=True, effusion_side="right")
    assert report(f) == ("The heart is enlarged. There is a large opacity in the left upper lobe, consistent "
                         "with consolidation. There is diffuse bilateral perihilar opacity, consistent with "
                         "pulmonary edema. There is a right pleural effusion. No pneumothorax.")
    assert report(Findings()) == ("The heart size is normal. The lungs are clear. No pleural effusion. "
                                  "No pneumothorax.")
