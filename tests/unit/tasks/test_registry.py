"""The task registry: MultiMedBench's 14 tasks + Med-Gemini's 2 kinds, their mixture shares,
answer options, and an unknown-task error that names what is registered."""

from __future__ import annotations

import pytest

from medmix.cli import main
from medmix.tasks import (KINDS, MODALITIES, OPTION_KINDS, TaskSpec, UnknownTaskError, all_tasks, get_task,
                          register, task_names)

MULTIMEDBENCH = ["medqa", "medmcqa", "pubmedqa", "mimic3_summary", "vqa_rad", "slake_vqa", "path_vqa",
                 "cxr_report", "cxr_classify", "derm_pad", "mammo_vindr", "mammo_cbis_mass", "mammo_cbis_calc",
                 "variant_calling"]
MED_GEMINI = ["polygenic_risk", "volume_report"]


def test_sixteen_tasks_registered():
    assert len(all_tasks()) == 16
    assert task_names() == MULTIMEDBENCH + MED_GEMINI


def test_mixture_weights_are_the_med_palm_m_shares():
    weights = {t.name: t.mixture_weight for t in all_tasks()}
    assert sum(weights.values()) == pytest.approx(100.0, abs=0.05)
    assert weights["cxr_report"] == pytest.approx(59.90) and weights["cxr_classify"] == pytest.approx(11.98)
    # evaluation-only in the paper, or not in its mixture at all
    assert weights["pubmedqa"] == weights["polygenic_risk"] == weights["volume_report"] == 0.0
    assert all(weights[t] > 0 for t in MULTIMEDBENCH if t != "pubmedqa")


@pytest.mark.parametrize("spec", all_tasks(), ids=lambda s: s.name)
def test_every_spec_is_complete(spec: TaskSpec):
    assert spec.modality in MODALITIES and spec.kind in KINDS
    assert spec.instruction and spec.metrics and spec.title and spec.source
    # the exemplar is text-only: image tasks count literal <img> strings, text tasks none
    assert (spec.exemplar.num_images > 0) == spec.has_image
    assert spec.exemplar.target
    if spec.has_options:  # fixed options, or each example carries its own (MCQ)
        assert spec.options or "options" in spec.exemplar.context, spec.name
        options = spec.options_for(spec.exemplar.context)
        assert len(options) >= 2 and len(set(options)) == len(options)
        assert spec.exemplar.target in options
    else:
        assert spec.kind not in OPTION_KINDS and not spec.options


def test_classification_tasks_list_every_class():
    assert len(get_task("derm_pad").options) == 6
    assert get_task("mammo_vindr").options == tuple(f"BI-RADS {i}" for i in range(1, 6))
    assert len(get_task("mammo_cbis_mass").options) == len(get_task("mammo_cbis_calc").options) == 3
    assert get_task("variant_calling").options == ("homozygous reference", "heterozygous", "homozygous alternate")
    assert get_task("cxr_classify").options == ("yes", "no")


def test_unknown_task_error_names_the_registered_ones():
    with pytest.raises(UnknownTaskError) as exc:
        get_task("derm")
    message = str(exc.value)
    assert message.startswith("unknown task 'derm'; registered tasks: ")
    for name in task_names():
        assert name in message
    assert isinstance(exc.value, KeyError)


def test_registering_twice_needs_replace():
    spec = get_task("medqa")
    with pytest.raises(ValueError, match="'medqa' is already registered"):
        register(spec)
    assert register(spec, replace=True) is spec
    # a modality only describes the inputs: a new lowercase word is fine, anything else is not
    TaskSpec(name="x", title="x", modality="ultrasound", kind="vqa", instruction="i", question="q",
             exemplar=spec.exemplar, metrics=("accuracy",), mixture_weight=1.0)
    with pytest.raises(ValueError, match="modality 'Ultra sound' must be one lowercase word"):
        TaskSpec(name="x", title="x", modality="Ultra sound", kind="vqa", instruction="i", question="q",
                 exemplar=spec.exemplar, metrics=("accuracy",), mixture_weight=1.0)


def test_tasks_verb_prints_the_table(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in task_names():
        assert name in out
    assert "16 tasks; Med-PaLM M mixture shares sum to 100.01%" in out
