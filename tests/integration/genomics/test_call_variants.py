"""Variant calling end to end: simulated BAM -> ingest -> train (debug) -> `medmix call-variants`
-> a bgzipped, indexed VCF that pysam reads back, scored against the truth (SNP/Indel-F1)."""

from __future__ import annotations

import pysam
import pytest

from tests.conftest import debug_config

pytestmark = pytest.mark.slow(minutes=0.7)


def test_ingest_train_call_variants_writes_a_valid_vcf(tmp_path, ray_local, capsys):
    from medmix.cli import main
    from medmix.data.genomics.synth import synth_genomics
    from medmix.data.store import ShardStore
    from medmix.data.tokenizer import ensure_tokenizer
    from medmix.train.export import export_checkpoint
    from medmix.train.launcher import train

    cfg = debug_config(tmp_path, 'synth.size="tiny"', 'synth.tasks=["variant_calling"]', "name=caller",
                       "mixture.strategy=explicit", "mixture.weights={variant_calling=1.0}", "mixture.floor=0.0",
                       "train.steps=6", "train.checkpoint_every=6", "train.eval_every=0", "train.num_workers=1",
                       "mixture.global_batch_size=8")
    store = ShardStore(cfg.data.root, cfg.data)
    sources = synth_genomics(cfg, store)["variant_calling"]
    assert store.counts()["variant_calling"]["train"] > 0
    ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    result = train(cfg)
    assert result.error is None
    export = export_checkpoint(result.checkpoint, tmp_path / "export")

    out = tmp_path / "calls.vcf.gz"
    assert main(["call-variants", "--model", str(export), "--bam", sources["bam"], "--ref", sources["reference"],
                 "--out", str(out), "--truth", sources["truth"], "--regions", *sources["test_regions"]]) == 0
    printed = capsys.readouterr().out
    assert "SNP-F1" in printed and "Indel-F1" in printed
    assert (tmp_path / "calls.vcf.gz.tbi").is_file()
    with pysam.VariantFile(str(out)) as vcf:
        records = list(vcf.fetch())
        assert records, "no candidate was called"
        for rec in records:
            gt = rec.samples[0]["GT"]
            assert gt in {(0, 0), (0, 1), (1, 1)} and rec.qual is not None and 0 <= rec.qual <= 99
    # the index works: a region query returns a subset of the records
    contig = records[0].chrom
    with pysam.VariantFile(str(out)) as vcf:
        assert len(list(vcf.fetch(contig))) <= len(records)
