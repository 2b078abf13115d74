"""The text tasks are learnable: MCQs come from one consistent fact base that train and test
share, PubMedQA answers are stated in the abstract, impressions follow from the findings."""

from __future__ import annotations

import re
from collections import Counter

from medmix.data.synth.facts import FACTS
from medmix.data.synth.pubmed import ANSWERS
from medmix.tasks import get_task
from synth_helpers import examples


def fact_of(question: str, options: list[str], answer: str) -> tuple[str, str]:
    """The one (relation, key) a question asks about, checking that exactly one option is true."""
    for relation, facts in FACTS.items():
        values = set(facts.values())
        if set(options) <= values:        # forward: the key is in the question, options are values
            keys = [k for k in facts if re.search(rf"\b{re.escape(k)}\b", question, re.I)]
            assert len(keys) == 1, (question, keys)
            assert answer == facts[keys[0]] and options.count(answer) == 1
            return relation, keys[0]
        if set(options) <= set(facts):    # reverse: the value is in the question, options are keys
            asked = [v for v in values if re.search(rf"\b{re.escape(v)}\b", question, re.I)]
            asked = [v for v in asked if not any(v != o and v in o for o in asked)]  # longest match
            assert len(asked) == 1, (question, asked)
            true = [o for o in options if facts[o] == asked[0]]
            assert true == [answer], (question, options, answer)
            assert len({facts[o] for o in options}) == len(options)  # no two options share a value
            return relation, answer
    raise AssertionError(f"options {options} are not all keys or all values of one relation")


def test_mcq_rows_are_consistent_with_the_fact_base():
    for task in ("medqa", "medmcqa"):
        rows = examples(task, "train", 150)
        for ex, _ in rows:
            options = ex.context["options"]
            assert len(options) == 4 and len(set(options)) == 4
            assert options[ex.label] == ex.target
            fact_of(ex.context["question"], options, ex.target)
        # options are shuffled: the answer is not always in the same slot
        assert len(Counter(ex.label for ex, _ in rows)) == 4


def test_test_questions_ask_about_facts_seen_in_training():
    seen = {fact_of(ex.context["question"], ex.context["options"], ex.target)
            for task in ("medqa", "medmcqa") for ex, _ in examples(task, "train", 300)}
    asked = [fact_of(ex.context["question"], ex.context["options"], ex.target)
             for task in ("medqa", "medmcqa") for ex, _ in examples(task, "test", 100)]
    assert sum(f in seen for f in asked) / len(asked) >= 0.95
    # and the two tasks share knowledge: both ask about every relation
    for task in ("medqa", "medmcqa"):
        rel = {fact_of(ex.context["question"], ex.context["options"], ex.target)[0]
               for ex, _ in examples(task, "train", 150)}
        assert rel == set(FACTS)


def test_pubmedqa_answer_is_stated_in_the_abstract():
    spec = get_task("pubmedqa")
    assert tuple(spec.options) == ANSWERS
    rows = examples("pubmedqa", "train", 90)
    cues = {"yes": r"significantly reduced", "no": r"no significant difference|was higher with",
            "maybe": r"did not reach statistical significance|inconsistent"}
    for ex, _ in rows:
        abstract = ex.context["abstract"]
        assert re.search(cues[ex.target], abstract), (ex.target, abstract)
        assert not any(re.search(cues[a], abstract) for a in ANSWERS if a != ex.target)
        assert ex.context["question"].startswith("Does ") and ex.label == ANSWERS.index(ex.target)
    assert Counter(ex.target for ex, _ in rows) == {"yes": 30, "no": 30, "maybe": 30}


def test_summaries_follow_from_findings_in_the_report_vocabulary():
    for ex, _ in examples("mimic3_summary", "train", 120):
        findings, impression = ex.context["findings"], ex.target
        enlarged = bool(re.search(r"(heart|silhouette) is enlarged|cardiomegaly|heart size is increased",
                                  findings, re.I))
        assert ("Cardiomegaly." in impression) == enlarged, (findings, impression)
        m = re.search(r"(right|left) (upper|lower) (lobe|lung zone)", findings)
        if m:
            large = bool(re.search(r"\blarge\b|Dense", findings))
            cause = "consolidation" if large else "atelectasis"
            assert f"{m.group(1).capitalize()} {m.group(2)} lobe {cause}." in impression
        eff = re.search(r"(right|left) (costophrenic|pleural effusion|base)", findings)
        assert (eff is not None) == ("pleural effusion." in impression)
        if impression == "No acute cardiopulmonary process.":
            assert not enlarged and not m and not eff
