"""Every pixel-bearing DICOM that pydicom and pydicom-data ship decodes through medmix's
codec plugins, or fails with an error naming the field — only the files that are broken on
purpose (pydicom's README.txt in test_files says why for each)."""

from __future__ import annotations

import collections
import re
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data.data_manager import DATA_ROOT, external_data_sources

from medmix.data.ingest.common import IngestError
from medmix.data.ingest.dicom import read_dicom, read_display, repair_header

PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# the files no decoder can read, and why: (field, what the error says)
BROKEN_ON_PURPOSE = {
    # a 12-bit JPEG Extended stream with a misplaced marker; JPGExtended.dcm is its fixed copy
    "JPEG-lossy.dcm": ("PixelData", r"JPEG Extended .* pixel stream is corrupt"),
    # JPEG2000.dcm with 4 codestream bytes overwritten by a sequence delimiter
    "JPEG2000-embedded-sequence-delimiter.dcm": ("PixelData", r"JPEG 2000 .* pixel stream is corrupt"),
    # 8130 of 8192 pixel bytes
    "MR_truncated.dcm": ("PixelData", r"pixel data is truncated"),
    # no Bits Allocated: not a complete image pixel module
    "nested_priv_SQ.dcm": ("BitsAllocated", r"lacks BitsAllocated"),
    "meta_missing_tsyntax.dcm": ("BitsAllocated", r"lacks BitsAllocated"),
}
# lossless encodings of one image: decoded, they must equal the uncompressed file exactly
LOSSLESS_TWINS = [("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
                  ("MR_small.dcm", "MR_small_RLE.dcm"),
                  ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
                  ("emri_small.dcm", "emri_small_RLE.dcm"),
                  ("US1_UNCR.dcm", "US1_J2KR.dcm"), ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),
                  ("MR2_UNCR.dcm", "MR2_J2KR.dcm"), ("SC_rgb.dcm", "SC_rgb_rle.dcm"),
                  ("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm")]


def shipped_files() -> list[Path]:
    """pydicom's test_files tree and pydicom-data's store, walked on disk (pydicom's own
    `get_testdata_files` tries to download missing files)."""
    roots = [Path(DATA_ROOT) / "test_files",
             *(Path(s.data_path) for s in external_data_sources().values())]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def pixel_bearing() -> list[tuple[Path, str]]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in shipped_files():
            try:
                ds = pydicom.dcmread(path, defer_size="1 KB")
            except Exception:  # noqa: BLE001 - READMEs, charset text, non-DICOM test inputs
                continue
            if any(k in ds for k in PIXELS):
                syntax = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
                out.append((path, getattr(syntax, "name", None) or "no transfer syntax"))
    return out


def test_every_pixel_bearing_shipped_dicom_decodes_except_the_broken_ones():
    files = pixel_bearing()
    assert len(files) >= 150  # 161 with pydicom 3.0 and pydicom-data 1.0
    decoded: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failed, shown = {}, {}
    for path, syntax in files:
        try:
            _, shown[path.name] = read_display(str(path))
            decoded[syntax]["ok"] += 1
        except IngestError as exc:
            failed[path.name] = exc
            decoded[syntax]["failed"] += 1
    assert set(failed) == set(BROKEN_ON_PURPOSE), {n: str(e) for n, e in failed.items()}
    for name, (field, pattern) in BROKEN_ON_PURPOSE.items():
        assert failed[name].field == field and re.search(pattern, str(failed[name])), str(failed[name])
        assert name in str(failed[name])  # the file is named
    # every codec family pydicom's test files use decoded at least one file
    for family in ("JPEG 2000 Image Compression", "JPEG 2000 Image Compression (Lossless Only)",
                   "JPEG-LS Lossless Image Compression",
                   "JPEG-LS Lossy (Near-Lossless) Image Compression", "JPEG Baseline (Process 1)",
                   "JPEG Extended (Process 2 and 4)", "RLE Lossless",
                   "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 "
                   "[Selection Value 1])", "Deflated Explicit VR Little Endian",
                   "Explicit VR Big Endian"):
        assert decoded[family]["ok"] >= 1, (family, dict(decoded))
    for plain, packed in LOSSLESS_TWINS:
        assert np.array_equal(shown[plain], shown[packed]), (plain, packed)


def test_missing_transfer_syntax_and_malformed_frame_count_are_repaired_from_the_file():
    from pydicom.data import get_testdata_file
    ds = read_dicom(get_testdata_file("meta_missing_tsyntax.dcm"))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"  # read as implicit little endian
    # NumberOfFrames '1A'; 10x10 32-bit pixels in 6000 bytes: 15 frames
    _, img = read_display(get_testdata_file("badVR.dcm"))
    assert img.shape == (10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = pydicom.dcmread(get_testdata_file("badVR.dcm"))
        assert str(raw.NumberOfFrames) == "1A"
        assert repair_header(raw) == ["NumberOfFrames '1A' set to 15 (from the pixel bytes)"]


def test_missing_codec_plugin_error_names_the_syntax_and_the_packages():
    from pydicom.data import get_testdata_file
    from medmix.data.ingest.dicom import decode_error
    ds = read_dicom(get_testdata_file("JPEG2000.dcm"))
    err = decode_error(ds, RuntimeError("Unable to decompress 'JPEG 2000' pixel data because all "
                                        "plugins are missing dependencies"), "x.dcm")
    assert err.field == "PixelData" and "JPEG 2000 Image Compression" in str(err)
    assert "pylibjpeg-openjpeg" in str(err) and "x.dcm" in str(err)
