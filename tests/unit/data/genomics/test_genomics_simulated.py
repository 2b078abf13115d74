"""Simulated reads with planted variants -> ingest rows whose labels are the planted genotypes."""

from __future__ import annotations

import numpy as np
import pysam
import pytest

from medmix.data.genomics.alleles import Variant
from medmix.data.genomics.pileup import build_pileup, image_to_tensor
from medmix.data.genomics.simulate import SimulationConfig, simulate_sample
from medmix.data.ingest.variants import ingest_variants, label_counts
from medmix.data.images import decode_image
from medmix.data.store import ShardStore
from medmix.tasks import get_task, render_prompt
from medmix.tasks.builtin import GENOTYPES


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_sample(tmp_path_factory.mktemp("sim"),
                           SimulationConfig(contigs={"chr1": 6000, "chr2": 4000}, seed=3))


def test_simulated_files_are_real_and_consistent(sim):
    with pysam.AlignmentFile(str(sim.bam)) as bam:
        assert bam.has_index() and bam.header.to_dict()["HD"]["SO"] == "coordinate"
        starts = [(r.reference_id, r.reference_start) for r in bam.fetch(until_eof=True)]
        assert starts == sorted(starts) and len(starts) == sim.num_reads
        # every read's aligned bases equal its haplotype: check the planted SNPs show up
        v = next(v for v in sim.variants if v.kind == "snp")
        bases = [r.query_sequence[qp] for r in bam.fetch(v.contig, v.pos, v.pos + 1)
                 for qp, rp in r.get_aligned_pairs(matches_only=True) if rp == v.pos]
        share = bases.count(v.alt) / len(bases)
        assert share > (0.25 if sim.variants[v] == 1 else 0.85)
    with pysam.VariantFile(str(sim.truth)) as vcf:
        assert vcf.index is not None
        assert sum(1 for _ in vcf) == len(sim.variants)
    with pysam.FastaFile(str(sim.reference)) as fa:
        assert list(fa.references) == ["chr1", "chr2"]
    kinds = {v.kind for v in sim.variants}
    assert kinds == {"snp", "indel"} and set(sim.variants.values()) == {1, 2}


def test_ingest_rows_carry_the_planted_genotypes(sim, tmp_path):
    store = ShardStore(tmp_path / "store")
    summary = ingest_variants(store, str(sim.bam), str(sim.reference), str(sim.truth), parallel="local")
    rows = list(store.iter_examples("variant_calling"))
    assert summary.total_rows == len(rows) > 0
    by_locus = {(ex.context["chrom"], ex.context["pos"] - 1, ex.context["ref"], ex.context["alt"]): ex
                for ex in rows}
    # every planted variant became a row labelled with its genotype
    for v, copies in sim.variants.items():
        ex = by_locus[(v.contig, v.pos, v.ref, v.alt)]
        assert ex.label == copies and ex.target == GENOTYPES[copies]
    # every other candidate is hom-ref: planted artifacts among them
    planted = {(v.contig, v.pos, v.ref, v.alt) for v in sim.variants}
    others = [ex for key, ex in by_locus.items() if key not in planted]
    assert others and all(ex.label == 0 and ex.target == "homozygous reference" for ex in others)
    found_artifacts = [a for a in sim.artifacts if (a.contig, a.pos, a.ref, a.alt) in by_locus]
    assert len(found_artifacts) >= len(sim.artifacts) // 2
    assert label_counts(store, summary) == {g: sum(1 for ex in rows if ex.target == g) for g in GENOTYPES
                                            if any(ex.target == g for ex in rows)}

    ex = rows[0]
    assert ex.context["locus"] == f"{ex.context['chrom']}:{ex.context['pos']} {ex.context['ref']}>{ex.context['alt']}"
    assert ex.image_format == "png" and len(ex.images) == 1 and ex.split in ("train", "val", "test")
    assert "Candidate: " + ex.context["locus"] in render_prompt(get_task("variant_calling"), ex.context)
    # the stored PNG is exactly the pileup of that candidate
    img = decode_image(ex.images[0])
    assert img.shape == (224, 224, 3)
    v = Variant(ex.context["chrom"], ex.context["pos"] - 1, ex.context["ref"], ex.context["alt"])
    with pysam.AlignmentFile(str(sim.bam)) as bam, pysam.FastaFile(str(sim.reference)) as fa:
        assert np.array_equal(image_to_tensor(img), build_pileup(bam, fa, v))


def test_same_seed_same_bam(tmp_path):
    cfg = SimulationConfig(contigs={"c": 3000}, seed=11)
    a = simulate_sample(tmp_path / "a", cfg)
    b = simulate_sample(tmp_path / "b", cfg)
    with pysam.AlignmentFile(str(a.bam)) as x, pysam.AlignmentFile(str(b.bam)) as y:
        assert [r.to_string() for r in x.fetch(until_eof=True)] == [r.to_string() for r in y.fetch(until_eof=True)]
    assert a.variants == b.variants
