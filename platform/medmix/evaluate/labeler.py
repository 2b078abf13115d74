"""A rule-based chest X-ray report labeler: the role CheXbert plays in Med-PaLM M's report metric.

`label_report(text)` returns which findings a report asserts, over `CLINICAL_LABELS`: the
five MIMIC-CXR conditions of the task registry plus a focal opacity's side (left / right).
Generated and reference reports are labelled the same way and compared with micro/macro F1
(`metrics.clinical_f1`).

Rules, in the spirit of NegEx (Chapman et al., 2001) and the CheXpert labeler:
- The report is split into clauses at `. ; :`, at `but`, `however`, `although`, `except`,
  and at a comma that starts a new statement (`, there ...`, `, the ...`).
- A finding is *mentioned* when one of its phrases matches inside a clause (synonyms below).
- A mention is *negated* when a negation cue ("no", "without", "negative for", "free of",
  "no evidence of", "not", ...) occurs earlier in the same clause — so "No pleural effusion
  or pneumothorax" negates both — or a post-cue ("has resolved", "is not seen", "absent")
  follows it in the clause.
- Uncertain mentions ("possible edema", "cannot exclude consolidation") count as positive,
  CheXpert's "U-ones" policy: the model is credited for raising the finding.
- The opacity side comes from `left`/`right` within four words before or after a (non-negated)
  opacity phrase (opacity, airspace disease, consolidation, atelectasis, infiltrate) in the
  same clause; "bilateral" sets no side (a diffuse process, e.g. edema, is not a focal opacity).
"""

from __future__ import annotations

import re

from medmix.tasks.builtin import CXR_CONDITIONS

OPACITY_SIDES = ("opacity left", "opacity right")
CLINICAL_LABELS: tuple[str, ...] = tuple(CXR_CONDITIONS) + OPACITY_SIDES

# phrases per condition (regex fragments, matched on lowercased text at word boundaries)
PHRASES: dict[str, tuple[str, ...]] = {
    "atelectasis": (r"atelecta\w*", r"plate-?like (?:opacit\w+|atelecta\w*)", r"(?:linear|discoid|subsegmental) opacit\w+",
                    r"volume loss"),
    "cardiomegaly": (r"cardiomegaly",
                     r"(?:heart|cardiac silhouette|cardiac size|heart size|cardiac contour)\b(?:\s+\w+){0,3}?\s+(?:enlarged|increased)",
                     r"enlarge(?:d|ment of the) (?:heart|cardiac silhouette)"),
    "consolidation": (r"consolidat\w*", r"airspace (?:opacit\w+|disease)", r"air bronchograms?"),
    "edema": (r"edema", r"vascular congestion", r"kerley b lines?", r"perihilar haziness"),
    "pleural effusion": (r"(?:pleural )?effusions?", r"pleural fluid", r"layering fluid",
                         r"blunting of the (?:\w+ )?costophrenic angles?", r"costophrenic angle blunting"),
}
OPACITY_TERMS = r"(?:opacit\w+|airspace disease|consolidat\w*|atelecta\w*|infiltrates?)"

_PRE_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|no evidence of|no signs? of|rules? out|ruled out|"
    r"resolution of|absence of|clear of|there is no|there are no)\b")
_POST_NEGATION = re.compile(r"\b(?:(?:has|have) resolved|resolved|(?:is|are) not (?:seen|identified|present|visualized)"
                            r"|(?:is|are) absent|no longer (?:seen|present))\b")
# clause ends; a comma ends one only before a new statement ("no pneumothorax, there is ...")
_CLAUSE = re.compile(r"[.;:\n]|\b(?:but|however|although|except)\b|,(?=\s*(?:there|the|which|and there)\b)")
_COMPILED = {label: [re.compile(rf"\b{p}\b") for p in phrases] for label, phrases in PHRASES.items()}
_SIDE_BEFORE = re.compile(rf"\b(left|right)\b(?:\s+[\w-]+){{0,4}}?\s+{OPACITY_TERMS}\b")
_SIDE_AFTER = re.compile(rf"\b{OPACITY_TERMS}\b(?:\s+[\w-]+){{0,4}}?\s+(left|right)\b")


def clauses(text: str) -> list[str]:
    """Lowercased clauses, the scope of every negation cue."""
    parts = _CLAUSE.split(text.lower())
    return [" ".join(p.split()) for p in parts if p.strip()]


def _negated(clause: str, start: int, end: int) -> bool:
    """A cue before the mention or inside it ("heart is not enlarged"), or a post-cue after it."""
    return (any(m.end() <= end for m in _PRE_NEGATION.finditer(clause))
            or _POST_NEGATION.search(clause, end) is not None)


def label_report(text: str) -> dict[str, bool]:
    """Which of `CLINICAL_LABELS` the report asserts (positive, not negated)."""
    found = {label: False for label in CLINICAL_LABELS}
    for clause in clauses(text):
        for label, patterns in _COMPILED.items():
            for pattern in patterns:
                if any(not _negated(clause, m.start(), m.end()) for m in pattern.finditer(clause)):
                    found[label] = True
                    break
        for pattern in (_SIDE_BEFORE, _SIDE_AFTER):
            for m in pattern.finditer(clause):
                if not _negated(clause, m.start(), m.end()):
                    found[f"opacity {m.group(1)}"] = True
    return found


def label_matrix(reports: list[str]) -> list[list[int]]:
    """Reports -> rows of 0/1 over `CLINICAL_LABELS` (what sklearn's multilabel F1 takes)."""
    return [[int(v) for v in label_report(r).values()] for r in reports]
