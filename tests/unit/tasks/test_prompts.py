"""Prompt rendering is deterministic and matches golden files for every registered task.

Refresh the golden files after an intended change with:

    MEDMIX_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/tasks/test_prompts.py

and review the diff (`git diff tests/unit/tasks/golden`) before committing it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from medmix.tasks import (IMAGE_PLACEHOLDER, format_options, get_task, render_prompt, render_target,
                          task_names)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("MEDMIX_UPDATE_GOLDEN") == "1"

# one fixed example per task: (context, number of images)
CASES: dict[str, tuple[dict, int]] = {
    "medqa": ({"question": "A 34-year-old woman has bleeding gums and poor wound healing. Deficiency of "
                           "which vitamin is the cause?",
               "options": ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"]}, 0),
    "medmcqa": ({"question": "Nerve supply of the serratus anterior is:",
                 "options": ["Long thoracic nerve", "Axillary nerve", "Radial nerve", "Phrenic nerve"]}, 0),
    "pubmedqa": ({"abstract": "In a cohort of 300 adults with heart failure, telemonitoring reduced "
                              "readmission compared with usual care (p = 0.01).",
                  "question": "Does telemonitoring reduce readmission in heart failure?"}, 0),
    "mimic3_summary": ({"findings": "The heart is enlarged. There is a small left pleural effusion. "
                                    "No pneumothorax."}, 0),
    "vqa_rad": ({"question": "Which lung has the opacity?"}, 1),
    "slake_vqa": ({"question": "How many lesions are in the liver?"}, 1),
    "path_vqa": ({"question": "Are glands present?"}, 1),
    "cxr_report": ({"view": "AP", "indication": "fever and cough."}, 1),
    "cxr_classify": ({"view": "AP", "condition": "pleural effusion"}, 1),
    "derm_pad": ({"age": 63, "gender": "male", "fitzpatrick": 2, "region": "nose", "diameter_1": 7.0,
                  "diameter_2": 5.5, "itch": "yes", "grew": "yes", "hurt": "no", "changed": "yes",
                  "bleed": "no", "elevation": "yes", "smoke": "no", "drink": "no"}, 1),
    "mammo_vindr": ({"view": "MLO", "laterality": "right"}, 1),
    "mammo_cbis_mass": ({}, 1),
    "mammo_cbis_calc": ({}, 1),
    "variant_calling": ({"locus": "chr20:1234567 C>T"}, 1),
    "polygenic_risk": ({"outcome": "type 2 diabetes"}, 1),
    "volume_report": ({"modality": "MRI"}, 3),
}


def golden_text(task: str) -> str:
    spec = get_task(task)
    context, num_images = CASES[task]
    return (f"# task {task}: render_prompt(spec, context, num_images={num_images})\n"
            f"{render_prompt(spec, context, num_images)}\n"
            f"# the same without the one-shot exemplar (exemplar=False)\n"
            f"{render_prompt(spec, context, num_images, exemplar=False)}\n")


def test_every_registered_task_has_a_golden_case():
    assert sorted(CASES) == sorted(task_names()), "add a CASES entry (and golden file) for every task"
    if not UPDATE:
        assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == sorted(task_names()), "stray or missing golden files"


@pytest.mark.parametrize("task", sorted(CASES))
def test_prompt_matches_golden(task):
    text = golden_text(task)
    path = GOLDEN / f"{task}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} is missing: run with MEDMIX_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), (f"prompt of {task} changed; if intended, re-run with "
                                      f"MEDMIX_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("task", sorted(CASES))
def test_rendering_is_deterministic_and_ignores_context_order(task):
    spec = get_task(task)
    context, num_images = CASES[task]
    items = list(context.items())
    random.Random(0).shuffle(items)
    assert render_prompt(spec, dict(items), num_images) == render_prompt(spec, context, num_images)
    prompt = render_prompt(spec, context, num_images)
    assert prompt.startswith(f"Instructions: {spec.instruction}\n") and prompt.endswith("\nA:")
    # the exemplar's images stay literal text; the example's slots come last
    exemplar_imgs = spec.exemplar.num_images if spec.has_image else 0
    assert prompt.count(IMAGE_PLACEHOLDER) == exemplar_imgs + num_images
    assert render_prompt(spec, context, num_images, exemplar=False).count(IMAGE_PLACEHOLDER) == num_images
    assert f" {spec.exemplar.target}\n" in prompt  # the exemplar carries its answer


def test_options_render_as_lettered_choices():
    assert format_options(["yes", "no", "maybe"]) == "(A) yes (B) no (C) maybe"
    derm = render_prompt(get_task("derm_pad"), CASES["derm_pad"][0])
    assert ("Q: Which skin lesion is shown? (A) basal cell carcinoma (B) squamous cell carcinoma "
            "(C) actinic keratosis (D) seborrheic keratosis (E) melanoma (F) nevus\nA:") in derm
    mcq = render_prompt(get_task("medqa"), CASES["medqa"][0], exemplar=False)
    assert mcq.endswith("(A) Vitamin A (B) Vitamin C (C) Vitamin D (D) Vitamin K\nA:")
    assert "(A)" not in render_prompt(get_task("cxr_report"), CASES["cxr_report"][0])  # free text: no options


def test_context_values_render_cleanly():
    derm = render_prompt(get_task("derm_pad"), CASES["derm_pad"][0], exemplar=False)
    assert "Diameter 1 (mm): 7.\n" in derm and "Diameter 2 (mm): 5.5.\n" in derm  # 7.0 -> 7
    cxr = render_prompt(get_task("cxr_report"), CASES["cxr_report"][0], exemplar=False)
    assert "Given the AP view X-ray image <img>.\nReason for the study: fever and cough.\n" in cxr
    # a placeholder the context lacks falls back to the task's default
    assert "Given the PA view X-ray image" in render_prompt(get_task("cxr_report"), {"indication": "cough"})
    assert render_target(get_task("cxr_classify"), " yes \n") == " yes"


@pytest.mark.parametrize("task, num_images, message", [
    ("cxr_report", 2, "task cxr_report takes exactly one image per example, got 2"),
    ("derm_pad", 0, "task derm_pad takes exactly one image per example, got 0"),
    ("medqa", 1, "task medqa is text-only, got 1 image(s)"),
    ("mimic3_summary", 2, "task mimic3_summary is text-only, got 2 image(s)"),
])
def test_wrong_image_count_is_rejected(task, num_images, message):
    with pytest.raises(ValueError) as exc:
        render_prompt(get_task(task), CASES[task][0], num_images)
    assert str(exc.value) == message


def test_volume_report_takes_a_sequence_of_slices():
    spec = get_task("volume_report")
    assert render_prompt(spec, {"modality": "CT"}, 5, exemplar=False).count(IMAGE_PLACEHOLDER) == 5


@pytest.mark.parametrize("task, context, field", [
    ("cxr_classify", {"view": "PA"}, "condition"),
    ("cxr_classify", {"view": "PA", "condition": ""}, "condition"),
    ("polygenic_risk", {}, "outcome"),
])
def test_missing_context_field_is_named(task, context, field):
    with pytest.raises(ValueError, match=rf"task {task}: context lacks field '{field}' needed by"):
        render_prompt(get_task(task), context)
