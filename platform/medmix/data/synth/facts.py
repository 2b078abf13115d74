"""Synthetic MedQA and MedMCQA: multiple-choice questions drawn from one small fact base.

Both tasks ask about the same facts (MedQA as clinical vignettes, MedMCQA as terse exam
stems), in both directions (drug -> class and class -> drug), so what a model learns from
one transfers to the other and test questions are answerable from training questions about
the same facts. Each question has exactly one option that the fact base makes true: the
distractors are values (or keys) of other facts whose answer differs. Options are shuffled
by the example's seed; the label is the answer's option index.
"""

from __future__ import annotations

import numpy as np

from medmix.data.synth.base import Key, Sample, generator, pick

# relation -> {key: value}; several keys may share a value (two beta blockers), never the reverse
FACTS: dict[str, dict[str, str]] = {
    "drug_class": {
        "metoprolol": "beta blocker", "atenolol": "beta blocker", "lisinopril": "ACE inhibitor",
        "enalapril": "ACE inhibitor", "losartan": "angiotensin receptor blocker",
        "valsartan": "angiotensin receptor blocker", "amlodipine": "calcium channel blocker",
        "atorvastatin": "statin", "simvastatin": "statin", "omeprazole": "proton pump inhibitor",
        "metformin": "biguanide", "glipizide": "sulfonylurea", "furosemide": "loop diuretic",
        "hydrochlorothiazide": "thiazide diuretic", "sertraline": "selective serotonin reuptake inhibitor",
        "amoxicillin": "penicillin antibiotic", "ciprofloxacin": "fluoroquinolone",
        "azithromycin": "macrolide", "ondansetron": "5-HT3 antagonist", "ibuprofen": "NSAID",
    },
    "organism_disease": {
        "Treponema pallidum": "syphilis", "Borrelia burgdorferi": "Lyme disease",
        "Mycobacterium tuberculosis": "tuberculosis", "Clostridium tetani": "tetanus",
        "Vibrio cholerae": "cholera", "Plasmodium falciparum": "malaria",
        "Bordetella pertussis": "whooping cough", "Corynebacterium diphtheriae": "diphtheria",
        "Helicobacter pylori": "peptic ulcer disease", "Rickettsia rickettsii": "Rocky Mountain spotted fever",
        "Salmonella Typhi": "typhoid fever", "Legionella pneumophila": "Legionnaires' disease",
        "Yersinia pestis": "plague", "Clostridium botulinum": "botulism", "Bacillus anthracis": "anthrax",
    },
    "nerve_muscle": {
        "axillary nerve": "deltoid", "musculocutaneous nerve": "biceps brachii",
        "long thoracic nerve": "serratus anterior", "suprascapular nerve": "supraspinatus",
        "femoral nerve": "quadriceps femoris", "obturator nerve": "adductor longus",
        "deep peroneal nerve": "tibialis anterior", "superior gluteal nerve": "gluteus medius",
        "inferior gluteal nerve": "gluteus maximus", "thoracodorsal nerve": "latissimus dorsi",
        "spinal accessory nerve": "trapezius", "hypoglossal nerve": "genioglossus", "phrenic nerve": "diaphragm",
    },
    "deficiency_disease": {
        "vitamin C": "scurvy", "vitamin D": "rickets", "thiamine": "beriberi", "niacin": "pellagra",
        "vitamin B12": "subacute combined degeneration", "vitamin A": "night blindness",
        "iodine": "goiter", "iron": "microcytic anemia", "folate": "neural tube defects",
        "zinc": "acrodermatitis enteropathica", "vitamin K": "neonatal hemorrhagic disease",
    },
    "poison_antidote": {
        "acetaminophen": "N-acetylcysteine", "opioids": "naloxone", "benzodiazepines": "flumazenil",
        "heparin": "protamine sulfate", "methanol": "fomepizole", "organophosphates": "atropine",
        "cyanide": "hydroxocobalamin", "lead": "succimer", "isoniazid": "pyridoxine",
        "methotrexate": "leucovorin",
    },
}

SEXES = ("man", "woman")

# (forward: key given, value asked) and (reverse: value given, key asked) question stems
MEDQA = {
    "drug_class": (
        "A {age}-year-old {sex} is started on {key} at a routine clinic visit. To which drug class does {key} belong?",
        "A {age}-year-old {sex} needs treatment with a {value}. Which of the following drugs is a {value}?"),
    "organism_disease": (
        "A {age}-year-old {sex} presents with fever and malaise. Cultures grow {key}. "
        "Which disease does this organism cause?",
        "A {age}-year-old {sex} is diagnosed with {value}. Which organism is the most likely cause?"),
    "nerve_muscle": (
        "A {age}-year-old {sex} sustains an injury to the {key}. Weakness of which muscle is expected?",
        "A {age}-year-old {sex} has isolated weakness of the {value}. Injury to which nerve is most likely?"),
    "deficiency_disease": (
        "A {age}-year-old {sex} with a poor diet is found to be deficient in {key}. "
        "Which condition is most likely?",
        "A {age}-year-old {sex} is diagnosed with {value}. Deficiency of which nutrient is the cause?"),
    "poison_antidote": (
        "A {age}-year-old {sex} is brought to the emergency department after a poisoning with {key}. "
        "Which agent is the antidote?",
        "A {age}-year-old {sex} is treated with {value} in the emergency department. "
        "Poisoning with which agent is this the antidote for?"),
}
MEDMCQA = {
    "drug_class": ("{Key} belongs to which class of drugs?", "Which of the following is a {value}?"),
    "organism_disease": ("{Key} is the causative agent of:", "Causative organism of {value} is:"),
    "nerve_muscle": ("The {key} supplies which muscle?", "Nerve supply of the {value} is:"),
    "deficiency_disease": ("Deficiency of {key} causes:", "{Value} is caused by deficiency of:"),
    "poison_antidote": ("Antidote for {key} poisoning is:", "{Value} is used as the antidote for:"),
}
NUM_OPTIONS = 4


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def make_question(rng: np.random.Generator, stems: dict[str, tuple[str, str]]) -> tuple[str, list[str], str]:
    """One question about one fact: (question, shuffled options, answer)."""
    relation = pick(rng, sorted(FACTS))
    facts = FACTS[relation]
    key = pick(rng, sorted(facts))
    value = facts[key]
    reverse = bool(rng.random() < 0.5)
    if reverse:   # value given: options are keys, distractors are keys of other values
        answer, pool = key, sorted(k for k, v in facts.items() if v != value)
    else:         # key given: options are values, distractors are the other values
        answer, pool = value, sorted({v for v in facts.values() if v != value})
    distractors = [pool[i] for i in rng.choice(len(pool), NUM_OPTIONS - 1, replace=False)]
    if reverse:   # two distractor keys must not share a value either (one right answer, unique wrong ones)
        seen, unique = {value}, []
        for d in distractors + [k for k in pool if k not in distractors]:
            if facts[d] not in seen:
                seen.add(facts[d])
                unique.append(d)
            if len(unique) == NUM_OPTIONS - 1:
                break
        distractors = unique
    options = [answer] + distractors
    options = [options[i] for i in rng.permutation(len(options))]
    stem = stems[relation][1 if reverse else 0]
    question = stem.format(key=key, Key=_cap(key), value=value, Value=_cap(value),
                           age=int(rng.integers(18, 86)), sex=pick(rng, SEXES))
    return question, options, answer


def _mcq(key: Key, stems: dict) -> Sample:
    question, options, answer = make_question(key.rng(), stems)
    return Sample({"question": question, "options": options}, answer, label=options.index(answer))


@generator("medqa")
def medqa(key: Key) -> Sample:
    return _mcq(key, MEDQA)


@generator("medmcqa")
def medmcqa(key: Key) -> Sample:
    return _mcq(key, MEDMCQA)
