"""Synthetic PubMedQA: templated structured abstracts whose results decide yes / no / maybe.

The answer is read from the abstract, not memorised: a significant reduction is "yes"; no
difference (or an increase) is "no"; a non-significant trend or conflicting subgroups is
"maybe". Interventions, outcomes and populations are recombined freely, so the wording of
the results and conclusion, not the topic, carries the answer.
"""

from __future__ import annotations

from medmix.data.synth.base import Key, Sample, generator, pick

INTERVENTIONS = ("daily aspirin", "early mobilisation", "vitamin D supplementation", "a low-sodium diet",
                 "structured exercise training", "intravenous iron", "nurse-led telemonitoring",
                 "intermittent fasting", "prophylactic antibiotics", "cognitive behavioural therapy",
                 "statin therapy", "a smoking cessation programme")
OUTCOMES = (("recurrent stroke", "stroke recurrence"), ("hospital readmission", "readmission"),
            ("postoperative delirium", "delirium"), ("fracture", "fracture incidence"),
            ("all-cause mortality", "mortality"), ("surgical site infection", "infection rates"),
            ("depressive symptoms", "depression scores"), ("length of hospital stay", "length of stay"))
POPULATIONS = ("adults over 65", "patients with heart failure", "patients after hip surgery",
               "adults with type 2 diabetes", "patients in intensive care", "pregnant women",
               "patients with chronic kidney disease", "adults with obesity")
DESIGNS = ("randomised controlled trial", "prospective cohort study", "multicentre randomised trial",
           "retrospective cohort study")
ANSWERS = ("yes", "no", "maybe")


def abstract(key: Key) -> tuple[str, str, str]:
    """(abstract, question, answer) for one example."""
    rng = key.rng()
    answer = ANSWERS[key.balanced(3)]
    iv, (outcome, short), pop = pick(rng, INTERVENTIONS), pick(rng, OUTCOMES), pick(rng, POPULATIONS)
    design, n = pick(rng, DESIGNS), int(rng.integers(8, 120)) * 10
    control = pick(rng, ("placebo", "usual care", "no intervention"))
    background = (f"Background: Whether {iv} lowers {outcome} in {pop} is uncertain. "
                  f"Methods: In a {design} of {n} {pop}, we compared {iv} with {control} over "
                  f"{int(rng.integers(3, 37))} months.")
    if answer == "yes":
        rr = rng.uniform(0.45, 0.8)
        p = pick(rng, ("0.001", "0.003", "0.01", "0.02", "<0.001"))
        results = (f"Results: {iv.capitalize()} significantly reduced {short} compared with {control} "
                   f"(relative risk {rr:.2f}, p = {p}).")
        conclusion = f"Conclusions: {iv.capitalize()} reduces {outcome} in {pop}."
    elif answer == "no":
        if rng.random() < 0.7:
            results = (f"Results: There was no significant difference in {short} between the groups "
                       f"(relative risk {rng.uniform(0.92, 1.08):.2f}, p = {rng.uniform(0.3, 0.9):.2f}).")
            conclusion = f"Conclusions: {iv.capitalize()} does not reduce {outcome} in {pop}."
        else:
            results = (f"Results: {short.capitalize()} was higher with {iv} than with {control} "
                       f"(relative risk {rng.uniform(1.2, 1.6):.2f}, p = {pick(rng, ('0.01', '0.02', '0.004'))}).")
            conclusion = f"Conclusions: {iv.capitalize()} does not lower {outcome} and may increase it."
    else:
        if rng.random() < 0.6:
            results = (f"Results: {iv.capitalize()} was associated with a trend toward lower {short} "
                       f"that did not reach statistical significance (relative risk "
                       f"{rng.uniform(0.75, 0.9):.2f}, p = {rng.uniform(0.06, 0.12):.2f}).")
        else:
            results = (f"Results: {short.capitalize()} fell in one subgroup but not in the overall "
                       f"population, and the findings were inconsistent across sites.")
        conclusion = f"Conclusions: The effect of {iv} on {outcome} remains unclear; larger trials are needed."
    question = f"Does {iv} reduce {outcome} in {pop}?"
    return " ".join((background, results, conclusion)), question, answer


@generator("pubmedqa")
def pubmedqa(key: Key) -> Sample:
    text, question, answer = abstract(key)
    return Sample({"abstract": text, "question": question}, answer, label=ANSWERS.index(answer))
