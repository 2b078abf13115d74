"""Real-format sources -> the shard store, one module per source kind (`medmix ingest <kind>`).

- `dicom`: DICOM files/folders -> image rows (LUTs, windowing, MONOCHROME1, 8-bit PNG)
- `image_folder`: PNG/JPEG folder + labels CSV -> image rows (`medmix ingest images`)
- `qa`: JSONL multiple-choice questions -> MCQ rows
- `reports`: IU chest X-ray report XML -> findings -> impression rows
- `volumes`: NIfTI files / DICOM series -> sequences of windowed slices (Med-Gemini-3D)
- `variants`: BAM + reference + truth VCF -> one pileup row per candidate variant
- `genotypes`: genotype VCF + GWAS weights + phenotypes -> polygenic-risk rows
- `hf`: a Hugging Face `datasets` dataset on disk (save_to_disk, parquet/arrow) + a column map -> any task
- `cbis_ddsm`: CBIS-DDSM's case description CSVs + DICOMs -> the mass/calc patch tasks
- `common`: `IngestError`, the --on-error policy and quarantine report, hash splits, labels
  CSVs, the Ray fan-out, and the one-transaction writer every kind goes through
"""
