"""Genotypes + GWAS weights + phenotypes -> polygenic-risk rows (Med-Gemini-Polygenic).

    medmix ingest genotypes --vcf genotypes.vcf.gz --weights gwas.tsv --phenotypes pheno.tsv

The inputs, the scores and the risk image are `medmix.data.genomics.polygenic`; this module
turns them into one row per (sample, trait with a known phenotype) and writes them.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from medmix.data.genomics.inputs import GenomicsInputError, open_vcf
from medmix.data.genomics.polygenic import (PolygenicConfig, Standardiser, polygenic_scores,
                                            read_phenotypes, read_weights, risk_image,
                                            stored_standardiser)
from medmix.data.images import encode_png
from medmix.data.ingest.common import IngestSummary, ItemResult, hash_split, write_ingest
from medmix.data.schema import Example
from medmix.data.store import sha256_file
from medmix.options import validate
from medmix.tasks.builtin import YES_NO


def ingest_genotypes(store, vcf: str | Path, weights: str | Path, phenotypes: str | Path,
                     task: str = "polygenic_risk", split: str = "auto",
                     cfg: PolygenicConfig | None = None, replace: bool = False,
                     progress: bool = False) -> IngestSummary:
    """Genotypes + GWAS weights + phenotypes -> one row per (sample, known outcome).

    All outcomes of a sample land in one split (`auto`: a hash of the sample name). The z
    scores are standardised with the train split's samples only; that `Standardiser` is stored
    in this ingest's manifest entry. An ingest with no train sample (`--split test` for a new
    cohort) uses the one stored by the task's earlier ingest.
    """
    started = time.perf_counter()
    cfg = cfg or PolygenicConfig()
    validate(cfg)
    if not phenotypes:
        raise GenomicsInputError(f"{vcf}: no phenotypes given; an outcome without its answer can "
                                 f"neither train nor be scored, so it is not stored")
    w = read_weights(weights)
    pheno = read_phenotypes(phenotypes)
    traits = list(w)
    samples, prs, used, std, fitted = _scores(store, task, vcf, w, cfg, split)
    z = std.apply(prs)
    unknown = sorted({t for v in pheno.values() for t in v} - set(traits))
    if unknown:
        raise GenomicsInputError(f"{phenotypes}: trait(s) {', '.join(unknown)} have no weights in {weights}")
    if not set(pheno) & set(samples):
        raise GenomicsInputError(f"{phenotypes}: no sample in common with {vcf}")

    def results():
        for i, s in enumerate(tqdm(samples, desc="genotypes", unit="sample", disable=not progress,
                                   leave=False)):
            known = pheno.get(s, {})
            png = encode_png(risk_image(z[i], cfg)) if known else b""
            examples = []
            for trait, y in known.items():
                t = traits.index(trait)
                examples.append(Example(
                    example_id=f"{s}:{trait}", task=task,
                    split=hash_split(s) if split == "auto" else split,
                    context={"outcome": trait.replace("_", " "), "trait": trait, "sample": s,
                             "prs": {f"{thr:g}": round(float(z[i, t, k]), 4)
                                     for k, thr in enumerate(cfg.p_thresholds)}},
                    target=YES_NO[0 if y else 1], label=0 if y else 1,
                    source=f"{vcf}#{s}", images=[png], image_format="png"))
            yield ItemResult(name=s, examples=examples,
                             notes={} if known else {"sample without phenotypes": 1})

    digests = [(Path(p).name, sha256_file(p)) for p in (vcf, weights, phenotypes)]
    source = {"path": str(vcf), "weights": str(weights), "phenotypes": str(phenotypes),
              "p_thresholds": list(cfg.p_thresholds), "snps_used": used, "split": split,
              "standardisation_from": fitted, "standardisation": std.to_json()}
    return write_ingest(store, kind="genotypes", task=task, results=results(), source=source,
                        replace=replace, extra_digests=digests, unit="samples", started=started)


def _scores(store, task: str, vcf, w: dict, cfg: PolygenicConfig, split: str):
    """PRS of every sample and the standardisation for them: fitted on this ingest's train
    samples, else the task's stored one. Returns (samples, prs, used, std, where_from)."""
    with open_vcf(vcf) as f:
        names = list(f.header.samples)
    train = [(hash_split(s) if split == "auto" else split) == "train" for s in names]
    if any(train):
        fill: dict[str, float] = {}
        samples, prs, used = polygenic_scores(vcf, w, cfg.p_thresholds, fit=train, fill_out=fill)
        std = Standardiser.fit(prs[train], list(w), cfg.p_thresholds, fill)
        return samples, prs, used, std, f"the {sum(train)} train-split samples of {vcf}"
    std = stored_standardiser(store, task)
    if std is None:
        raise GenomicsInputError(f"{vcf}: no sample in the train split and no stored "
                                 f"standardisation for {task}: ingest the training cohort first "
                                 f"(--split auto or train), then score new people with --split test")
    std.check(list(w), cfg.p_thresholds, str(vcf))
    samples, prs, used = polygenic_scores(vcf, w, cfg.p_thresholds, fill=std.fill)
    return samples, prs, used, std, f"stored ({std.samples} training samples)"
