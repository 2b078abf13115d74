"""Image-folder ingest on scikit-image's bundled real images (fundus, IHC, cells) + generated ones."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from medmix.cli import main
from medmix.data.images import decode_image
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.image_folder import ingest_images
from medmix.tasks import UnknownTaskError


def skimage_file(name: str) -> str:
    import skimage
    return os.path.join(os.path.dirname(skimage.__file__), "data", name)


@pytest.fixture
def photos(tmp_path):
    """retina.jpg (RGB JPEG), ihc.png (RGB), cell.png (grey, 550x660), logo.png (RGBA)."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name in ("retina.jpg", "ihc.png", "logo.png"):
        shutil.copy(skimage_file(name), folder / name)
    shutil.copy(skimage_file("cell.png"), folder / "sub" / "cell.png")
    return folder


def write_csv(path, text: str):
    path.write_text(text)
    return path


def test_folder_with_labels_csv_becomes_classification_rows(store, photos):
    write_csv(photos / "labels.csv",
              "file,label,age,region,split\n"
              "retina.jpg,melanoma,61,back,train\n"
              "ihc.png,B,,face,val\n"
              "sub/cell.png,0,40,,test\n"
              "logo.png,Nevus,,,\n")
    summary = ingest_images(store, str(photos), task="derm_pad", progress=False)
    assert summary.total_rows == 4 and summary.quarantined == 0
    rows = {ex.example_id: ex for ex in store.iter_examples("derm_pad")}
    assert set(rows) == {"retina.jpg", "ihc.png", "sub/cell.png", "logo.png"}
    r = rows["retina.jpg"]
    assert (r.target, r.label, r.split) == ("melanoma", 4, "train")
    assert r.context == {"age": 61, "region": "back"}
    assert (rows["ihc.png"].target, rows["ihc.png"].label) == ("squamous cell carcinoma", 1)
    assert rows["sub/cell.png"].target == "basal cell carcinoma"
    assert rows["logo.png"].split in ("train", "val", "test")
    for ex in rows.values():
        img = decode_image(ex.images[0], ex.image_format)
        assert img.shape == (64, 64, 3) and ex.image_format == "png"
    # the grey 550x660 cell image is padded left/right (keeping aspect), not stretched
    cell = decode_image(rows["sub/cell.png"].images[0])
    assert cell[:, :2].max() == 0 and cell[:, 28:36].mean() > 0
    # fundus photo stays colour: red channel dominates
    retina = decode_image(r.images[0]).astype(float)
    assert retina[..., 0].mean() > retina[..., 2].mean() + 20
    assert store.verify() == []
    src = store.manifest()["sources"][-1]
    assert src["kind"] == "images" and src["labels"].endswith("labels.csv") and len(src["sha256"]) == 64


def test_exif_rotation_and_16_bit_images_are_handled(store, tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    # a landscape photo stored sideways with EXIF orientation 6 (rotate 90 cw to view)
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(folder / "rotated.jpg", exif=exif, quality=95)
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "ramp16.png")
    write_csv(folder / "labels.csv", "file,label\nrotated.jpg,benign\nramp16.png,malignant\n")
    ingest_images(store, str(folder), task="mammo_cbis_mass", progress=False)
    rows = {ex.example_id: decode_image(ex.images[0]) for ex in store.iter_examples("mammo_cbis_mass")}
    rot = rows["rotated.jpg"].astype(float)
    # after rotating 90 degrees clockwise the white half is on top
    assert rot[16:30, 20:44].mean() > 200 and rot[34:48, 20:44].mean() < 50
    ramp_img = rows["ramp16.png"][..., 0].astype(float)
    assert ramp_img[0].mean() < 10 and ramp_img[-1].mean() > 245


def test_csv_missing_column_names_column_and_file(store, photos):
    write_csv(photos / "labels.csv", "file,diagnosis\nretina.jpg,nevus\n")
    with pytest.raises(IngestError, match=r"labels.csv, row 1, field 'label': missing column 'label'"):
        ingest_images(store, str(photos), task="derm_pad", progress=False)
    # free-text tasks need `target` instead
    write_csv(photos / "labels.csv", "file,label\nretina.jpg,nevus\n")
    with pytest.raises(IngestError, match=r"field 'target': missing column 'target'"):
        ingest_images(store, str(photos), task="path_vqa", progress=False)


def test_undecodable_image_names_file_and_csv_row(store, photos, snapshot):
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    shutil.copy(skimage_file("retina.jpg"), photos / "half.jpg")
    data = (photos / "half.jpg").read_bytes()
    (photos / "half.jpg").write_bytes(data[:len(data) // 3])
    write_csv(photos / "labels.csv", "file,label\nretina.jpg,nevus\nbroken.png,nevus\nhalf.jpg,nevus\n")
    before = snapshot(store)
    with pytest.raises(IngestError, match=r"labels.csv, row 3, field 'file': image .*broken.png does not decode"):
        ingest_images(store, str(photos), task="derm_pad", progress=False)
    assert snapshot(store) == before
    summary = ingest_images(store, str(photos), task="derm_pad", on_error="skip", progress=False)
    assert summary.total_rows == 1 and summary.quarantined == 2
    report = [json.loads(line) for line in open(summary.quarantine_path)]
    assert [(r["row"], r["field"]) for r in report] == [(3, "file"), (4, "file")]
    assert "half.jpg" in report[1]["error"]
    assert "images in the folder that the labels CSV does not list" in summary.notes


def test_label_outside_options_lists_them(store, photos):
    write_csv(photos / "labels.csv", "file,label\nretina.jpg,wart\n")
    with pytest.raises(IngestError, match=r"row 2, field 'label': 'wart' is not an option of task "
                                          r"derm_pad.*\(A\) basal cell carcinoma.*\(F\) nevus"):
        ingest_images(store, str(photos), task="derm_pad", progress=False)


def test_missing_file_unknown_task_and_text_task(store, photos):
    write_csv(photos / "labels.csv", "file,label\nnothere.png,nevus\n")
    with pytest.raises(IngestError, match=r"row 2, field 'file': image .*nothere.png cannot be read"):
        ingest_images(store, str(photos), task="derm_pad", progress=False)
    with pytest.raises(UnknownTaskError, match="unknown task 'derm_nope'"):
        ingest_images(store, str(photos), task="derm_nope", progress=False)
    with pytest.raises(IngestError, match="does not take one image"):
        ingest_images(store, str(photos), task="medqa", progress=False)


def test_same_image_in_several_rows_shares_a_split(store, photos):
    write_csv(photos / "labels.csv", "file,label,condition\n" + "".join(
        f"retina.jpg,{'yes' if i % 2 else 'no'},c{i}\n" for i in range(6)))
    ingest_images(store, str(photos), task="cxr_classify", progress=False)
    rows = list(store.iter_examples("cxr_classify"))
    assert sorted(ex.example_id for ex in rows) == [f"retina.jpg#{i}" for i in range(6)]
    assert len({ex.split for ex in rows}) == 1


def test_cli_ingest_images_and_verify(tmp_path, photos, capsys):
    write_csv(photos / "labels.csv", "file,label\nretina.jpg,nevus\nihc.png,melanoma\n")
    root = tmp_path / "store"
    assert main(["ingest", "images", str(photos), "--task", "derm_pad", "--root", str(root),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ingested 2 rows of task derm_pad" in out
    assert "skipped 2: images in the folder that the labels CSV does not list" in out
    assert main(["data", "verify", "--root", str(root)]) == 0
    assert main(["ingest", "images", str(photos), "--task", "derm_nope", "--root", str(root)]) == 1
    assert "unknown task 'derm_nope'" in capsys.readouterr().err
