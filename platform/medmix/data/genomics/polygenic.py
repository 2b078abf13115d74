"""Polygenic risk (Med-Gemini-Polygenic): polygenic scores drawn as an image, yes/no outcomes.

The ingest itself (`medmix ingest genotypes`) is `medmix.data.ingest.genotypes`; this module
reads its inputs and computes the scores and the image.

- `--vcf`: genotypes of many samples (pysam.VariantFile; GT per sample, biallelic SNPs).
- `--weights`: a GWAS summary TSV with a header: `trait chrom pos effect_allele other_allele
  beta p` (pos 1-based; beta per copy of the effect allele).
- `--phenotypes`: TSV `sample <trait> <trait> ...` with 1/0 (or yes/no); empty or NA = unknown.

For every trait and every p-value threshold t (at most 3: one image channel each) the score is
PRS = sum of beta * dosage(effect allele) over the trait's SNPs with p < t (a missing genotype
counts as the training samples' mean dosage at its site), standardised with the mean and sd of
the training split only (z; `Standardiser`, stored in the ingest's manifest entry, so the test
split never shapes the scale and a new person is scored with `score_new`). Each trait is an 8 x 8 pixel block of the image — row-major from the top left, traits
in the weights file's order — whose channel c is round((clip(z_c, -3, 3) + 3) / 6 * 255);
the rest of the image is 0. One row per (sample, trait with a known phenotype): context
`outcome` (the trait's name with spaces), target `yes`/`no`, label = option index (yes 0,
no 1), and the sample's z scores of that trait in context `prs` for the linear baseline.

`simulate_cohort` writes the bundled inputs: genotypes, liability-threshold phenotypes with a
known heritability per trait, and weights estimated by a GWAS on a separate simulated cohort.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Sequence

import numpy as np
import pysam

from medmix.data.genomics.inputs import GenomicsInputError, open_vcf
from medmix.data.schema import Example
from medmix.options import ConfigError, option

WEIGHT_COLUMNS = ("trait", "chrom", "pos", "effect_allele", "other_allele", "beta", "p")
Z_CLIP = 3.0


@dataclass
class PolygenicConfig:
    """How polygenic scores become an image."""

    p_thresholds: list[float] = option(default_factory=lambda: [1e-4, 1e-2, 1.0],
                                       help="GWAS p-value thresholds, one image channel each (1 to 3)")
    block: int = option(8, "side of each trait's square block, px", ge=1)
    image_size: int = option(224, "side of the square image, px", ge=8)

    def validate(self) -> None:
        if not 1 <= len(self.p_thresholds) <= 3:
            raise ConfigError(f"p_thresholds has {len(self.p_thresholds)} values; an RGB image "
                              f"holds 1 to 3 (one channel per threshold)")
        if any(not 0 < t <= 1 for t in self.p_thresholds):
            raise ConfigError(f"p_thresholds {self.p_thresholds} must lie in (0, 1]")
        if self.block > self.image_size:
            raise ConfigError(f"block {self.block} is larger than image_size {self.image_size}")


def read_weights(path: str | Path) -> dict[str, list[tuple[str, int, str, str, float, float]]]:
    """trait -> [(chrom, pos 1-based, effect, other, beta, p)], traits in file order."""
    path = Path(path)
    if not path.is_file():
        raise GenomicsInputError(f"{path}: weights TSV not found")
    out: dict[str, list] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in WEIGHT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise GenomicsInputError(f"{path}: weights TSV lacks column(s) {', '.join(missing)}; "
                                     f"expected a header {' '.join(WEIGHT_COLUMNS)}")
        for i, row in enumerate(reader, start=2):
            try:
                item = (row["chrom"], int(row["pos"]), row["effect_allele"].upper(),
                        row["other_allele"].upper(), float(row["beta"]), float(row["p"]))
            except (TypeError, ValueError) as exc:
                raise GenomicsInputError(f"{path}: line {i}: {exc} (pos integer, beta and p numbers)") from None
            out.setdefault(row["trait"], []).append(item)
    if not out:
        raise GenomicsInputError(f"{path}: no weights")
    return out


def read_dosages(vcf_path: str | Path, sites: set[tuple[str, int]]) -> tuple[list[str], dict]:
    """Samples and, per (chrom, pos) in `sites`: (ref, alt, ALT dosage per sample, NaN if missing)."""
    out: dict[tuple[str, int], tuple[str, str, np.ndarray]] = {}
    with open_vcf(vcf_path) as vcf:
        samples = list(vcf.header.samples)
        if not samples:
            raise GenomicsInputError(f"{vcf_path}: the genotype VCF has no sample columns")
        try:
            for rec in vcf:
                key = (rec.chrom, rec.pos)
                if key not in sites or not rec.alts or len(rec.alts) != 1:
                    continue
                d = np.full(len(samples), np.nan)
                for i, s in enumerate(rec.samples.values()):
                    gt = s.get("GT")
                    if gt and None not in gt:
                        d[i] = sum(1 for a in gt if a == 1)
                out[key] = (rec.ref.upper(), rec.alts[0].upper(), d)
        except (OSError, ValueError) as exc:
            raise GenomicsInputError(f"{vcf_path}: unreadable record ({exc}); truncated or malformed") from exc
    return samples, out


def polygenic_scores(vcf_path: str | Path, weights: dict, thresholds: list[float],
                     fill: dict[str, float] | None = None, fit: Sequence[bool] | None = None,
                     fill_out: dict[str, float] | None = None
                     ) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """(samples, PRS array [samples, traits, thresholds], SNPs used per trait).

    A missing genotype counts as the mean ALT dosage at its site: `fill["chrom:pos"]` when
    given (a stored `Standardiser`'s), else the mean over the samples `fit` marks (default all);
    `fill_out`, when given, receives the fill used at every site scored.
    """
    sites = {(c, p) for items in weights.values() for c, p, *_ in items}
    samples, dos = read_dosages(vcf_path, sites)
    mask = np.ones(len(samples), bool) if fit is None else np.asarray(fit, bool)
    prs = np.zeros((len(samples), len(weights), len(thresholds)))
    used: dict[str, int] = {}
    for t, (trait, items) in enumerate(weights.items()):
        n = 0
        for chrom, pos, effect, _other, beta, p in items:
            site = dos.get((chrom, pos))
            if site is None:
                continue
            ref, alt, d = site
            if effect not in (alt, ref):
                continue  # alleles do not match this site
            key = f"{chrom}:{pos}"
            if fill is not None and key in fill:
                mean = fill[key]
            else:
                known = d[mask][np.isfinite(d[mask])]
                mean = float(known.mean()) if len(known) else (
                    float(np.nanmean(d)) if np.isfinite(d).any() else 0.0)
            if fill_out is not None:
                fill_out[key] = round(mean, 6)
            d = np.where(np.isnan(d), mean, d)
            x = d if effect == alt else 2.0 - d
            n += 1
            for k, thr in enumerate(thresholds):
                if p < thr:
                    prs[:, t, k] += beta * x
        used[trait] = n
    if not any(used.values()):
        raise GenomicsInputError(f"{vcf_path}: none of the weighted SNPs is in the VCF (matched on "
                                 f"chrom, 1-based pos and alleles); is it the same reference build?")
    return samples, prs, used


@dataclass
class Standardiser:
    """PRS -> z with the mean and sd of the training samples, kept with the data (the
    ingest's manifest entry) so that a new person is scored on the same scale.

    mean/sd are [traits][thresholds]; `fill` is the mean ALT dosage per weighted site
    ("chrom:pos") on the same samples, which stands in for a missing genotype."""

    traits: list[str]
    thresholds: list[float]
    mean: list[list[float]]
    sd: list[list[float]]
    fill: dict[str, float]
    samples: int

    @classmethod
    def fit(cls, prs: np.ndarray, traits: list[str], thresholds: list[float],
            fill: dict[str, float]) -> "Standardiser":
        """From the training samples' PRS [samples, traits, thresholds]."""
        if len(prs) < 2:
            raise GenomicsInputError(f"{len(prs)} training sample(s): a standardisation needs at "
                                     f"least 2 (put more samples in the train split)")
        sd = prs.std(axis=0)
        return cls(list(traits), [float(t) for t in thresholds], prs.mean(axis=0).round(8).tolist(),
                   np.where(sd > 0, sd, 1.0).round(8).tolist(), dict(fill), int(len(prs)))

    def apply(self, prs: np.ndarray) -> np.ndarray:
        return (prs - np.asarray(self.mean)) / np.asarray(self.sd)

    def check(self, traits: list[str], thresholds: list[float], where: str) -> None:
        if list(traits) != self.traits or [float(t) for t in thresholds] != self.thresholds:
            raise GenomicsInputError(
                f"{where}: traits {list(traits)} / p-value thresholds {list(thresholds)} differ "
                f"from the stored standardisation's ({self.traits} / {self.thresholds}): use the "
                f"same weights file and thresholds as the training ingest")

    def to_json(self) -> dict:
        return {"traits": self.traits, "thresholds": self.thresholds, "mean": self.mean,
                "sd": self.sd, "fill": self.fill, "samples": self.samples}

    @classmethod
    def from_json(cls, data: dict) -> "Standardiser":
        return cls(**{k: data[k] for k in ("traits", "thresholds", "mean", "sd", "fill", "samples")})


def stored_standardiser(store, task: str = "polygenic_risk") -> Standardiser | None:
    """The standardisation the task's latest genotypes ingest fitted (None if none did)."""
    if not store.exists():
        return None
    for src in reversed(store.manifest().get("sources", [])):
        if src.get("kind") == "genotypes" and src.get("task") == task and src.get("standardisation"):
            return Standardiser.from_json(src["standardisation"])
    return None


def score_new(vcf_path: str | Path, weights: dict, std: Standardiser) -> tuple[list[str], np.ndarray]:
    """New people's z scores [samples, traits, thresholds] on a stored training scale."""
    std.check(list(weights), std.thresholds, str(vcf_path))
    samples, prs, _ = polygenic_scores(vcf_path, weights, std.thresholds, fill=std.fill)
    return samples, std.apply(prs)


def risk_image(z: np.ndarray, cfg: PolygenicConfig) -> np.ndarray:
    """z [traits, thresholds] -> image_size^2 x 3 uint8 with one block per trait."""
    per_row = cfg.image_size // cfg.block
    if len(z) > per_row * per_row:
        raise GenomicsInputError(f"{len(z)} traits do not fit a {cfg.image_size}px image of "
                                 f"{cfg.block}px blocks ({per_row * per_row} at most)")
    img = np.zeros((cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    pix = np.rint((np.clip(z, -Z_CLIP, Z_CLIP) + Z_CLIP) / (2 * Z_CLIP) * 255).astype(np.uint8)
    for t in range(len(z)):
        r, c = divmod(t, per_row)
        img[r * cfg.block:(r + 1) * cfg.block, c * cfg.block:(c + 1) * cfg.block, :pix.shape[1]] = pix[t]
    return img


def read_phenotypes(path: str | Path) -> dict[str, dict[str, int]]:
    """sample -> trait -> 1/0, from a TSV `sample <trait> ...` (1/0, yes/no; NA/empty skipped)."""
    path = Path(path)
    if not path.is_file():
        raise GenomicsInputError(f"{path}: phenotypes TSV not found")
    out: dict[str, dict[str, int]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        if not reader.fieldnames or reader.fieldnames[0] != "sample":
            raise GenomicsInputError(f"{path}: the first column must be `sample`, then one per trait")
        for i, row in enumerate(reader, start=2):
            vals = {}
            for trait, v in row.items():
                if trait == "sample" or v is None or v.strip().upper() in ("", "NA", "."):
                    continue
                v = v.strip().lower()
                if v not in ("1", "0", "yes", "no", "true", "false"):
                    raise GenomicsInputError(f"{path}: line {i}, column {trait}: {v!r} is not 1/0 or yes/no")
                vals[trait] = int(v in ("1", "yes", "true"))
            out[row["sample"]] = vals
    return out


def linear_prs_auc(train: list[Example], test: list[Example]) -> dict[str, dict]:
    """The linear PRS baseline per outcome: pick the p-value threshold whose standardised PRS
    has the best AUC on `train`, report its AUC on `test` (positive = answer `yes`)."""
    from sklearn.metrics import roc_auc_score

    def by_outcome(rows):
        out: dict[str, list] = {}
        for ex in rows:
            if ex.label is not None:
                out.setdefault(ex.context["outcome"], []).append(ex)
        return out

    result = {}
    tr, te = by_outcome(train), by_outcome(test)
    for outcome, rows in te.items():
        y_te = np.array([ex.label == 0 for ex in rows])
        if y_te.all() or not y_te.any():
            continue
        keys = list(rows[0].context["prs"])
        best, best_auc = keys[-1], -1.0
        train_rows = tr.get(outcome, [])
        y_tr = np.array([ex.label == 0 for ex in train_rows])
        if len(train_rows) and y_tr.any() and not y_tr.all():
            for k in keys:
                auc = roc_auc_score(y_tr, [ex.context["prs"][k] for ex in train_rows])
                if auc > best_auc:
                    best, best_auc = k, auc
        result[outcome] = {"threshold": float(best), "train_auc": best_auc if best_auc >= 0 else None,
                           "auc": float(roc_auc_score(y_te, [ex.context["prs"][best] for ex in rows])),
                           "n": len(rows)}
    return result


# --- the bundled simulation ----------------------------------------------------------------

@dataclass
class CohortConfig:
    traits: dict[str, float] = field(default_factory=lambda: {
        "coronary_artery_disease": 0.5, "type_2_diabetes": 0.4, "asthma": 0.3, "glaucoma": 0.6})
    """trait -> liability-scale heritability"""
    num_samples: int = 400
    num_snps: int = 1000
    causal_fraction: float = 0.05
    prevalence: float = 0.3
    gwas_samples: int = 4000
    seed: int = 0


def _genotypes(rng, n, maf):
    return rng.binomial(2, maf, size=(n, len(maf))).astype(np.float64)


def simulate_cohort(out_dir: str | Path, cfg: CohortConfig | None = None) -> dict:
    """Write genotypes.vcf.gz (+.tbi), weights.tsv, phenotypes.tsv; return paths and the
    realised heritabilities (variance of the genetic liability in the target cohort)."""
    cfg = cfg or CohortConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    m = cfg.num_snps
    maf = rng.uniform(0.05, 0.5, size=m)
    pos = np.sort(rng.choice(np.arange(1000, 1000 + 200 * m), size=m, replace=False))
    alleles = [tuple(rng.choice(list("ACGT"), size=2, replace=False)) for _ in range(m)]
    sd = np.sqrt(2 * maf * (1 - maf))
    effects = {}
    for trait, h2 in cfg.traits.items():
        causal = rng.choice(m, size=max(1, int(cfg.causal_fraction * m)), replace=False)
        beta = np.zeros(m)
        beta[causal] = rng.normal(0, 1, size=len(causal))
        # sum of squared effects = h2: the genetic liability of standardised, independent
        # SNPs then has variance h2 exactly in expectation (the heritability we state)
        effects[trait] = beta * math.sqrt(h2 / float(np.sum(beta ** 2)))  # per standardised genotype

    def liability(x, trait):
        g = ((x - 2 * maf) / sd) @ effects[trait]
        h2 = cfg.traits[trait]
        return g, g + rng.normal(0, math.sqrt(1 - h2), size=len(x))

    threshold = NormalDist().inv_cdf(1 - cfg.prevalence)
    # discovery GWAS on a separate cohort (quantitative liability, marginal regression)
    xg = _genotypes(rng, cfg.gwas_samples, maf)
    xs = (xg - xg.mean(0)) / np.where(xg.std(0) > 0, xg.std(0), 1)
    with open(out / "weights.tsv", "w") as f:
        f.write("\t".join(WEIGHT_COLUMNS) + "\n")
        for trait in cfg.traits:
            _, y = liability(xg, trait)
            y = (y - y.mean()) / y.std()
            b = xs.T @ y / cfg.gwas_samples
            se = np.sqrt(np.maximum(1 - b ** 2, 1e-9) / (cfg.gwas_samples - 2))
            p = np.array([math.erfc(abs(z) / math.sqrt(2)) for z in b / se])  # two-sided
            beta_dosage = b / np.where(xg.std(0) > 0, xg.std(0), 1)
            for j in range(m):
                f.write(f"{trait}\tchr1\t{pos[j]}\t{alleles[j][1]}\t{alleles[j][0]}\t"
                        f"{beta_dosage[j]:.6g}\t{p[j]:.4g}\n")
    # the target cohort: genotypes as VCF, phenotypes by the liability threshold
    x = _genotypes(rng, cfg.num_samples, maf)
    samples = [f"S{i:05d}" for i in range(cfg.num_samples)]
    pheno, realised = {}, {}
    for trait in cfg.traits:
        g, liab = liability(x, trait)
        realised[trait] = float(np.var(g) / np.var(liab))
        pheno[trait] = (liab > threshold).astype(int)
    with open(out / "phenotypes.tsv", "w") as f:
        f.write("sample\t" + "\t".join(cfg.traits) + "\n")
        for i, s in enumerate(samples):
            f.write(s + "\t" + "\t".join(str(pheno[t][i]) for t in cfg.traits) + "\n")
    # plain text first (400k genotypes through pysam's record API is slow), then bgzip + tabix
    text_path = out / "genotypes.vcf"
    gts = np.array(["0/0", "0/1", "1/1"])
    with open(text_path, "w") as f:
        f.write("##fileformat=VCFv4.2\n")
        f.write(f"##contig=<ID=chr1,length={int(pos[-1]) + 1000}>\n")
        f.write('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n')
        f.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(samples) + "\n")
        for j in range(m):
            f.write(f"chr1\t{pos[j]}\tsnp{j}\t{alleles[j][0]}\t{alleles[j][1]}\t.\t.\t.\tGT\t"
                    + "\t".join(gts[x[:, j].astype(int)]) + "\n")
    vcf_path = out / "genotypes.vcf.gz"
    pysam.tabix_index(str(text_path), preset="vcf", force=True)  # bgzips to .vcf.gz, removes the text
    return {"vcf": vcf_path, "weights": out / "weights.tsv", "phenotypes": out / "phenotypes.tsv",
            "heritability": dict(cfg.traits), "realised_heritability": realised,
            "prevalence": {t: float(pheno[t].mean()) for t in cfg.traits}}
