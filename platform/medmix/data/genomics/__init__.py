"""Genomics sources: variant calling from reads (Med-PaLM M) and polygenic risk (Med-Gemini).

- `inputs`: open BAM/FASTA/VCF through pysam with clear errors (`GenomicsInputError`)
- `alleles`: one normalised `Variant` form for candidates, truth and calls
- `pileup`: the DeepVariant-style 100 x 221 x 6 pileup and its 224 x 224 image
- `variants`: candidate finding + `ingest_variants` (Ray task per region)
- `vcf`: `write_calls`, `compare_to_truth` (SNP/indel F1), `call_variants(predict_fn, ...)`
- `simulate`, `polygenic`, `realdata`, `synth`: bundled data and the real ex1 reads
- `cli`: `medmix ingest variants|genotypes|volumes` (3D volumes live in `medmix.data.volumes`)
"""

from medmix.data.genomics.inputs import GenomicsInputError

__all__ = ["GenomicsInputError"]
