"""medmix.data: from sources to the tensors each training rank consumes.

    config.py     `[data]`, `[tokenizer]`, `[mixture]`, `[stream]` sections
    schema.py     the one Arrow schema every task's shards share, and the `Example` row
    store.py      the shard store: immutable Parquet parts + a manifest, written in transactions
    ingest/       real-format sources -> the store (DICOM, images, QA, reports, volumes,
                  variants, genotypes), one module per kind
    synth/        the bundled synthetic suite; genomics/ holds the genomic computation
    mixture.py    the mixture plan: which examples make up global batch s (a pure function)
    stream.py     per-rank streams over the plan (Ray Data, or in-process)
    collate.py    refs -> one padded batch; encode.py prompt + target -> ids and labels
    images.py     image decoding and preprocessing shared by ingest, stream and serving
    tokenizer.py  the BPE trained on the store's text, or a decoder's own
"""
