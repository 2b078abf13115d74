"""Genomics: variant calling from reads (Med-PaLM M) and polygenic risk (Med-Gemini).

- `inputs`: open BAM/FASTA/VCF through pysam with clear errors (`GenomicsInputError`)
- `alleles`: one normalised `Variant` form for candidates, truth and calls
- `pileup`: the DeepVariant-style 100 x 221 x 6 pileup and its 224 x 224 image
- `variants`: candidate finding, pileups and truth genotypes per region (Ray task per region)
- `vcf`: `write_calls`, `compare_to_truth` (SNP/indel F1), `call_variants(predict_fn, ...)`
- `polygenic`: GWAS weights, dosages, polygenic scores and the risk image
- `simulate`, `realdata`, `synth`: bundled data and the real ex1 reads
- `config`: `CandidateConfig`, `PileupConfig` — pysam-free, so `medmix ingest` lists its kinds without pysam

Writing their rows to the store is `medmix.data.ingest.variants` and `.genotypes`; the CLI
wiring of `medmix ingest variants|genotypes` is in medmix.commands.ingest.
"""

__all__ = ["GenomicsInputError"]


def __getattr__(name: str):
    # lazily: importing the package (e.g. for its pysam-free config) must not need pysam
    if name == "GenomicsInputError":
        from medmix.data.genomics.inputs import GenomicsInputError
        return GenomicsInputError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
