"""One variant comparison for `medmix evaluate` and `call-variants`: normalise, then count.

Both sides are brought to one representation before they are compared, as `bcftools norm
-m- -a` followed by an exact match does:
- multi-allelic records are split into one item per ALT (`alleles.record_variants`);
- indels are left-aligned against the reference and trimmed to one anchor base
  (`alleles.normalize`; without a reference only trimmed);
- MNPs (REF and ALT of equal length > 1) are split into the SNPs at the bases that differ
  ("atomised"), so `AC>GT` at 100 and `A>G` at 100 + `C>T` at 101 are the same calls;
- hom-ref and missing genotypes are not variants.

An item is a normalised `Variant` with the copies of its ALT the genotype carries (1 het, 2
hom-alt). A call is a true positive when the truth holds the same item — same genotype too
with `match_genotype` (hap.py's default, used by the PrecisionFDA challenge); a call at a
truth site with the wrong genotype is one FP and the truth item one FN. Every truth item
counts, whether or not any call (candidate) covers it: a truth variant that candidate
generation missed is a false negative. SNPs and indels are scored separately.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from medmix.data.genomics.alleles import Variant, normalize

KINDS = ("snp", "indel")
NAN = float("nan")


def atomize(v: Variant) -> list[Variant]:
    """An MNP -> the SNPs at the positions whose bases differ; anything else unchanged."""
    if len(v.ref) != len(v.alt) or len(v.ref) == 1:
        return [v]
    return [Variant(v.contig, v.pos + i, r, a) for i, (r, a) in enumerate(zip(v.ref, v.alt)) if r != a]


def items(entries: Iterable[tuple[Variant, int | None]]) -> dict[Variant, int]:
    """(normalised Variant, copies of its ALT) pairs -> comparison items (MNPs atomised;
    copies 0 or missing dropped; an item seen twice keeps its larger count)."""
    out: dict[Variant, int] = {}
    for v, copies in entries:
        if not copies:
            continue
        for atom in atomize(v):
            out[atom] = max(out.get(atom, 0), min(int(copies), 2))
    return out


def allele_items(entries: Iterable[tuple[str, int, str, str, int | None]], fasta=None) -> dict[Variant, int]:
    """(contig, 0-based pos, REF, ALT — comma-separated ALTs allowed, copies) -> items."""
    def split() -> Iterable[tuple[Variant, int | None]]:
        for contig, pos, ref, alt, copies in entries:
            for a in str(alt).split(","):
                a = a.strip().upper()
                if not a or a.startswith("<") or a in (".", "*"):
                    continue
                yield normalize(fasta, str(contig), int(pos), str(ref), a), copies
    return items(split())


def score(calls: Mapping[Variant, int], truth: Mapping[Variant, int], kind: str,
          match_genotype: bool = True) -> dict[str, float]:
    """tp, fp, fn, precision, recall, F1 of `kind` ("snp" or "indel") items.

    F1 = 2TP / (2TP + FP + FN); precision (recall) is NaN with no calls (no truth) of this
    kind, F1 NaN only when neither side has one.
    """
    if kind not in KINDS:
        raise ValueError(f"variant kind {kind!r}: use one of {', '.join(KINDS)}")
    c = {v: g for v, g in calls.items() if v.kind == kind}
    t = {v: g for v, g in truth.items() if v.kind == kind}
    tp = sum(1 for v, g in c.items() if v in t and (t[v] == g or not match_genotype))
    fp, fn = len(c) - tp, len(t) - tp
    denom = 2 * tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else NAN,
            "recall": tp / (tp + fn) if tp + fn else NAN,
            "f1": 2 * tp / denom if denom else NAN}


def compare(calls: Mapping[Variant, int], truth: Mapping[Variant, int],
            match_genotype: bool = True) -> dict[str, float]:
    """Flat `snp_f1`, `snp_precision`, ..., `indel_fn` for both kinds."""
    out: dict[str, float] = {}
    for kind in KINDS:
        for key, value in score(calls, truth, kind, match_genotype).items():
            out[f"{kind}_{key}"] = value
    return out
