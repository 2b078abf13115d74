"""Genomics end to end on real Ray: simulated reads -> rows (same bytes as in-process),
ex1.bam with its bcftools silver truth, candidates -> predictor -> indexed VCF -> SNP/indel F1,
and the bundled genomics suite."""

from __future__ import annotations

import argparse

import numpy as np
import pysam
import pytest

from medmix.commands.ingest import add_ingest_subparsers
from medmix.data.genomics.inputs import Region
from medmix.data.genomics.pileup import image_to_tensor
from medmix.data.genomics.realdata import INSTALL_HINT, find_ex1, prepare_ex1, silver_truth
from medmix.data.genomics.simulate import SimulationConfig, simulate_sample
from medmix.data.genomics.config import CandidateConfig
from medmix.data.ingest.variants import ingest_variants
from medmix.data.genomics.vcf import call_variants, compare_to_truth
from medmix.data.store import ShardStore


def channel_predictor(images: np.ndarray, contexts: list[dict]) -> np.ndarray:
    """TEST HELPER, not a model: genotype probabilities read off the pileup channels.

    Allele fraction = reads whose supports-ALT channel is 254 / reads at the candidate column;
    a candidate whose ALT reads have low base quality there (< Q20) is called hom-ref.
    """
    out = []
    for img in images:
        t = image_to_tensor(img)
        centre = t[:, t.shape[1] // 2]
        reads = centre[:, 2] > 0
        alt = reads & (centre[:, 4] == 254)
        af = alt.sum() / max(reads.sum(), 1)
        good = alt.any() and centre[alt, 1].mean() >= 254 * 20 / 40
        g = 0 if (af < 0.15 or not good) else (2 if af > 0.8 else 1)
        p = np.full(3, 0.05)
        p[g] = 0.9
        out.append(p)
    return np.array(out)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_sample(tmp_path_factory.mktemp("sim"),
                           SimulationConfig(contigs={"chr1": 8000, "chr2": 5000}, seed=2))


def test_ray_ingest_matches_in_process(ray_local, sim, tmp_path):
    small = CandidateConfig(region_size=2000)   # 7 regions -> 7 Ray tasks
    a, b = ShardStore(tmp_path / "ray"), ShardStore(tmp_path / "local")
    sa = ingest_variants(a, str(sim.bam), str(sim.reference), str(sim.truth), ccfg=small, parallel="ray")
    sb = ingest_variants(b, str(sim.bam), str(sim.reference), str(sim.truth), ccfg=small, parallel="local")
    assert sa.items == 7 and sa.total_rows == sb.total_rows > 0
    rows_a = sorted((ex.example_id, ex.label, ex.images[0]) for ex in a.iter_examples("variant_calling"))
    rows_b = sorted((ex.example_id, ex.label, ex.images[0]) for ex in b.iter_examples("variant_calling"))
    assert rows_a == rows_b
    assert a.manifest()["sources"][-1]["sha256"] == b.manifest()["sources"][-1]["sha256"]


def test_cli_variants_subcommand(ray_local, sim, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="medmix ingest")
    add_ingest_subparsers(parser.add_subparsers(dest="kind", required=True))
    root = tmp_path / "store"
    args = parser.parse_args(["variants", "--bam", str(sim.bam), "--ref", str(sim.reference),
                              "--truth", str(sim.truth), "--regions", "chr2", "--split", "test",
                              "--root", str(root), "--parallel", "ray"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "rows of task variant_calling" in out and "genotypes:" in out
    splits = ShardStore(root).counts()["variant_calling"]
    assert set(splits) == {"test"}
    assert all(ex.context["chrom"] == "chr2" for ex in ShardStore(root).iter_examples("variant_calling"))


def test_call_variants_writes_a_vcf_that_scores_against_truth(ray_local, sim, tmp_path):
    stats = call_variants(channel_predictor, sim.bam, sim.reference, tmp_path / "calls.vcf.gz",
                          parallel="ray")
    vcf_path = stats["vcf"]
    with pysam.VariantFile(vcf_path) as vcf:
        assert vcf.index is not None and list(vcf.header.contigs) == ["chr1", "chr2"]
        recs = list(vcf)
    assert len(recs) == stats["candidates"] and stats["calls"]["het"] > 0 and stats["calls"]["hom_alt"] > 0
    from pysam import bcftools
    bcftools.norm("--check-ref", "e", "-f", str(sim.reference), "-Ov", vcf_path)  # every REF is the reference
    m = compare_to_truth(vcf_path, sim.truth, sim.reference)
    assert m["snp_f1"] > 0.9 and m["indel_f1"] > 0.8, m
    held_out = compare_to_truth(vcf_path, sim.truth, sim.reference, regions=[Region("chr2", 0, 5000)])
    assert held_out["snp_tp"] + held_out["snp_fn"] < m["snp_tp"] + m["snp_fn"]


@pytest.fixture(scope="module")
def ex1(tmp_path_factory):
    found = find_ex1()
    if found is None:
        pytest.skip(INSTALL_HINT)
    work = tmp_path_factory.mktemp("ex1")
    bam, fa = prepare_ex1(found, work)
    return bam, fa, silver_truth(bam, fa, work / "ex1.silver.vcf.gz")


def test_ex1_ingests_end_to_end_with_silver_truth(ray_local, ex1, tmp_path):
    bam, fa, truth = ex1
    with pysam.VariantFile(str(truth)) as vcf:
        silver = list(vcf)
    assert len(silver) >= 5 and {r.chrom for r in silver} == {"chr1", "chr2"}
    store = ShardStore(tmp_path / "store")
    summary = ingest_variants(store, str(bam), str(fa), str(truth), parallel="ray",
                              ccfg=CandidateConfig(region_size=1000))
    rows = list(store.iter_examples("variant_calling"))
    assert summary.total_rows == len(rows) > len(silver)
    labelled = {(ex.context["chrom"], ex.context["pos"]): ex.label for ex in rows if ex.label}
    # every silver call is a candidate labelled with its genotype (indels by their anchor)
    for rec in silver:
        gt = rec.samples[0]["GT"]
        assert labelled.get((rec.chrom, rec.pos)) == sum(1 for a in gt if a == 1), rec
    assert len(labelled) == len(silver)


def test_bundled_genomics_suite(tmp_path):
    from medmix.config import load_config
    from medmix.data.genomics.synth import VARIANT_SPLITS, synth_genomics
    cfg = load_config("debug", [f'data.root="{tmp_path}/data"', 'synth.size="tiny"'])
    store = ShardStore(tmp_path / "data")
    out = synth_genomics(cfg, store)
    counts = store.counts()
    assert set(out) == {"variant_calling", "polygenic_risk", "volume_report"}
    assert set(counts["variant_calling"]) == {"train", "val", "test"}
    for ex in store.iter_examples("variant_calling"):
        assert VARIANT_SPLITS[ex.context["chrom"]] == ex.split
    assert sum(counts["polygenic_risk"].values()) == out["polygenic_risk"]["rows"] > 0
    vols = list(store.iter_examples("volume_report"))
    assert len(vols) == out["volume_report"]["rows"] and all(len(v.images) == 8 for v in vols)
    assert set(counts["volume_report"]) == {"train", "val", "test"}   # the reports CSV's split column
    assert store.verify() == []
    # the suite's test contig scores like any BAM
    assert out["variant_calling"]["test_regions"] == ["chr4:1-3000"]
