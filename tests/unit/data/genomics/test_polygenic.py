"""Polygenic risk: scores from a hand-made VCF + weights, the 8x8 block image, the bundled
cohort's heritability, ingest rows, and the linear PRS baseline."""

from __future__ import annotations

import numpy as np
import pytest

from medmix.data.genomics.inputs import GenomicsInputError
from medmix.data.genomics.polygenic import (CohortConfig, PolygenicConfig, linear_prs_auc, polygenic_scores,
                                            read_weights, risk_image, simulate_cohort)
from medmix.data.ingest.genotypes import ingest_genotypes
from medmix.data.images import decode_image
from medmix.data.store import ShardStore

VCF = """##fileformat=VCFv4.2
##contig=<ID=chr1,length=10000>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tA\tB\tC
chr1\t100\t.\tA\tG\t.\t.\t.\tGT\t0/0\t0/1\t1/1
chr1\t200\t.\tC\tT\t.\t.\t.\tGT\t1/1\t./.\t0/1
chr1\t300\t.\tG\tA\t.\t.\t.\tGT\t0/1\t0/1\t0/0
"""
WEIGHTS = """trait\tchrom\tpos\teffect_allele\tother_allele\tbeta\tp
heart\tchr1\t100\tG\tA\t0.5\t1e-6
heart\tchr1\t200\tC\tT\t-1.0\t0.02
heart\tchr1\t300\tA\tG\t2.0\t0.5
sugar\tchr1\t100\tG\tA\t1.0\t0.5
sugar\tchr1\t999\tG\tA\t9.0\t1e-9
"""


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "g.vcf").write_text(VCF)
    (tmp_path / "w.tsv").write_text(WEIGHTS)
    (tmp_path / "p.tsv").write_text("sample\theart\tsugar\nA\t1\t0\nB\t0\tNA\nC\tyes\tno\n")
    return tmp_path


def test_scores_by_threshold_with_effect_allele_flips_and_missing_genotypes(inputs):
    w = read_weights(inputs / "w.tsv")
    samples, prs, used = polygenic_scores(inputs / "g.vcf", w, [1e-4, 0.05, 1.0])
    assert samples == ["A", "B", "C"] and used == {"heart": 3, "sugar": 1}
    g100 = np.array([0, 1, 2])                      # ALT G dosage = effect allele
    c200 = 2 - np.array([2, 1.5, 1])                # effect = REF C; B missing -> mean ALT dosage 1.5
    a300 = np.array([1, 1, 0])                      # ALT A = effect
    assert prs[:, 0, 0] == pytest.approx(0.5 * g100)
    assert prs[:, 0, 1] == pytest.approx(0.5 * g100 - 1.0 * c200)
    assert prs[:, 0, 2] == pytest.approx(0.5 * g100 - 1.0 * c200 + 2.0 * a300)
    assert prs[:, 1, 2] == pytest.approx(1.0 * g100) and not prs[:, 1, :2].any()


def test_image_is_one_block_per_trait_one_channel_per_threshold():
    cfg = PolygenicConfig(p_thresholds=[1e-4, 1e-2, 1.0], block=8, image_size=32)
    z = np.array([[0.0, 3.0, -3.0], [1.5, -1.5, 10.0], [0.0, 0.0, 0.0], [-0.75, 0.0, 0.0], [2.0, 2.0, 2.0]])
    img = risk_image(z, cfg)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    blocks = {0: (0, 0), 1: (0, 8), 2: (0, 16), 3: (0, 24), 4: (8, 0)}   # row-major, 4 per row
    expect = np.rint((np.clip(z, -3, 3) + 3) / 6 * 255).astype(np.uint8)
    for t, (r, c) in blocks.items():
        block = img[r:r + 8, c:c + 8]
        assert (block == expect[t]).all()
    assert list(expect[0]) == [128, 255, 0]
    assert not img[8:16, 8:].any() and not img[16:].any()
    with pytest.raises(GenomicsInputError, match="do not fit"):
        risk_image(np.zeros((17, 3)), cfg)


def test_ingest_rows(inputs, tmp_path):
    store = ShardStore(tmp_path / "store")
    summary = ingest_genotypes(store, inputs / "g.vcf", inputs / "w.tsv", inputs / "p.tsv",
                               cfg=PolygenicConfig(p_thresholds=[1e-4, 0.05, 1.0]))
    rows = {ex.example_id: ex for ex in store.iter_examples("polygenic_risk")}
    assert summary.total_rows == 5 and set(rows) == {"A:heart", "A:sugar", "B:heart", "C:heart", "C:sugar"}
    assert (rows["A:heart"].target, rows["A:heart"].label) == ("yes", 0)
    assert (rows["C:sugar"].target, rows["C:sugar"].label) == ("no", 1)
    assert rows["A:heart"].context["outcome"] == "heart" and set(rows["A:heart"].context["prs"]) == {"0.0001", "0.05", "1"}
    assert rows["A:heart"].split == rows["A:sugar"].split  # one sample, one split
    img = decode_image(rows["C:heart"].images[0])
    assert img.shape == (224, 224, 3) and img[:8, :16].any() and not img[8:].any()


def test_bad_weights_and_phenotypes(inputs, tmp_path):
    (inputs / "bad.tsv").write_text("trait\tpos\tbeta\nheart\t1\t0.1\n")
    with pytest.raises(GenomicsInputError, match=r"bad\.tsv: weights TSV lacks column\(s\) chrom"):
        read_weights(inputs / "bad.tsv")
    (inputs / "pp.tsv").write_text("sample\theart\nA\tmaybe\n")
    with pytest.raises(GenomicsInputError, match=r"pp\.tsv: line 2, column heart: 'maybe'"):
        ingest_genotypes(ShardStore(tmp_path / "s"), inputs / "g.vcf", inputs / "w.tsv", inputs / "pp.tsv")
    (inputs / "far.tsv").write_text("trait\tchrom\tpos\teffect_allele\tother_allele\tbeta\tp\nx\tchr2\t5\tA\tG\t1\t0.1\n")
    with pytest.raises(GenomicsInputError, match="none of the weighted SNPs is in the VCF"):
        polygenic_scores(inputs / "g.vcf", read_weights(inputs / "far.tsv"), [1.0])


def test_bundled_cohort_has_its_heritability_and_prs_predicts(tmp_path):
    cfg = CohortConfig(num_samples=800, num_snps=400, gwas_samples=3000, seed=5)
    cohort = simulate_cohort(tmp_path / "cohort", cfg)
    for trait, h2 in cfg.traits.items():
        assert cohort["realised_heritability"][trait] == pytest.approx(h2, abs=0.12)
        assert cohort["prevalence"][trait] == pytest.approx(cfg.prevalence, abs=0.06)
    store = ShardStore(tmp_path / "store")
    ingest_genotypes(store, cohort["vcf"], cohort["weights"], cohort["phenotypes"])
    rows = list(store.iter_examples("polygenic_risk"))
    assert len(rows) == 800 * len(cfg.traits)
    base = linear_prs_auc([r for r in rows if r.split == "train"], [r for r in rows if r.split != "train"])
    assert set(base) == {t.replace("_", " ") for t in cfg.traits}
    for outcome, res in base.items():
        assert res["auc"] > 0.6, (outcome, res)   # the linear PRS carries the genetic signal


def cohort_vcf(path, genotypes: dict[str, list[str]]) -> None:
    """Three sites (those of WEIGHTS), one GT column per sample."""
    names = list(genotypes)
    lines = VCF.splitlines()[:3] + ["\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER",
                                               "INFO", "FORMAT", *names])]
    for k, (pos, ref, alt) in enumerate([(100, "A", "G"), (200, "C", "T"), (300, "G", "A")]):
        lines.append("\t".join(["chr1", str(pos), ".", ref, alt, ".", ".", ".", "GT",
                                *(genotypes[n][k] for n in names)]))
    path.write_text("\n".join(lines) + "\n")


def test_z_scores_use_the_train_split_only_and_a_new_person_is_scored_on_that_scale(inputs, tmp_path):
    from medmix.data.genomics.polygenic import score_new, stored_standardiser
    from medmix.data.ingest.common import hash_split
    gts = ["0/0", "0/1", "1/1", "./."]
    names = [f"S{i}" for i in range(24)]
    splits = {n: hash_split(n) for n in names}
    assert {"train", "val", "test"} <= set(splits.values())
    cohort = {n: [gts[i % 3], gts[(i // 3) % 4], gts[(i // 2) % 3]] for i, n in enumerate(names)}
    cohort_vcf(inputs / "c.vcf", cohort)
    (inputs / "cp.tsv").write_text("sample\theart\n" + "".join(f"{n}\t{i % 2}\n" for i, n in enumerate(names)))
    cfg = PolygenicConfig(p_thresholds=[1e-4, 0.05, 1.0])
    w = read_weights(inputs / "w.tsv")

    def ingest(vcf, where, split="auto", store=None):
        store = store or ShardStore(tmp_path / where)
        ingest_genotypes(store, inputs / vcf, inputs / "w.tsv", inputs / "cp.tsv", cfg=cfg, split=split)
        return store, {ex.context["sample"]: ex.context["prs"] for ex in store.iter_examples("polygenic_risk")}

    store, z = ingest("c.vcf", "a")
    std = stored_standardiser(store)
    train = [splits[n] == "train" for n in names]
    assert std.samples == sum(train) and std.traits == ["heart", "sugar"]
    _, prs, _ = polygenic_scores(inputs / "c.vcf", w, cfg.p_thresholds, fit=train)
    mean, sd = prs[train].mean(axis=0), prs[train].std(axis=0)
    assert np.allclose(std.mean, mean) and np.allclose(std.sd, np.where(sd > 0, sd, 1))
    for i, n in enumerate(names):
        want = (prs[i, 0] - mean[0]) / np.where(sd[0] > 0, sd[0], 1)
        assert [z[n][k] for k in ("0.0001", "0.05", "1")] == pytest.approx(want, abs=1e-4)
    # the test split does not shape the scale: change only held-out genotypes, train z stay put
    shuffled = {n: (list(reversed(g)) if splits[n] != "train" else g) for n, g in cohort.items()}
    cohort_vcf(inputs / "c2.vcf", shuffled)
    _, z2 = ingest("c2.vcf", "b")
    assert all(z2[n] == z[n] for n in names if splits[n] == "train")
    assert any(z2[n] != z[n] for n in names if splits[n] != "train")
    # a new person, scored with the stored mean/sd (and the training fill for a missing GT)
    cohort_vcf(inputs / "new.vcf", {"NEW": ["1/1", "./.", "0/1"]})
    samples, z_new = score_new(inputs / "new.vcf", w, std)
    _, prs_new, _ = polygenic_scores(inputs / "new.vcf", w, cfg.p_thresholds, fill=std.fill)
    assert samples == ["NEW"] and np.allclose(z_new, std.apply(prs_new))
    assert std.fill["chr1:200"] == pytest.approx(np.mean([
        {"0/0": 0, "0/1": 1, "1/1": 2}[cohort[n][1]] for n in names if splits[n] == "train" and cohort[n][1] != "./."]))
    # ... and ingested as a held-out cohort into the same store, on the same scale
    (inputs / "cp.tsv").write_text("sample\theart\nNEW\t1\n")
    _, rows = ingest("new.vcf", "a", split="test", store=store)
    assert [rows["NEW"][k] for k in ("0.0001", "0.05", "1")] == pytest.approx(z_new[0, 0], abs=1e-4)
    with pytest.raises(GenomicsInputError, match="no sample in the train split and no stored standardisation"):
        ingest("new.vcf", "empty", split="test")
