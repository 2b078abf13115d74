"""PAD-UFES-20 in its published layout (metadata.csv header as released, images by img_id under
images/imgs_part_*) ingests into derm_pad: codes mapped to options, `fitspatrick` kept as
fitzpatrick, split by patient; CBIS-DDSM's BENIGN_WITHOUT_CALLBACK meets its option."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.image_folder import ingest_images
from medmix.data.ingest.pad_ufes import ingest_pad_ufes
from medmix.tasks import get_task, render_prompt

HEADER = ("patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
          "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,"
          "diameter_1,diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed").split(",")
CODES = ["BCC", "ACK", "NEV", "SEK", "SCC", "MEL"]


def pad_row(patient: int, lesion: int, k: int, code: str, **over) -> dict:
    row = dict(zip(HEADER, [f"PAT_{patient}", str(lesion), "False", "False", "POMERANIA", "POMERANIA",
                            "55", "False", "FEMALE", "True", "True", "True", "True", "3.0", "NECK",
                            "6.0", "5.0", code, "True", "UNK", "False", "True", "True", "True",
                            f"PAT_{patient}_{lesion}_{k}.png", "True"]))
    row.update(over)
    return row


def write_pad(folder, rows, skip_images=()):
    for i, r in enumerate(rows):
        if r["img_id"] in skip_images:
            continue
        part = folder / "images" / f"imgs_part_{1 + i % 3}"
        part.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((12, 16, 3), (40 + 9 * i) % 256, np.uint8)).save(part / r["img_id"])
    with open(folder / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows(rows)
    return folder


def test_pad_ufes_metadata_maps_codes_fitspatrick_and_splits_by_patient(store, tmp_path):
    rows = [pad_row(p, 100 + p, k, CODES[(p + k) % 6]) for p in range(12) for k in range(2)]
    rows[0] = pad_row(0, 100, 0, "BCC", fitspatrick="", smoke="", itch="UNK")   # sparse metadata
    folder = write_pad(tmp_path / "PAD-UFES-20", rows)
    summary = ingest_pad_ufes(store, str(folder), parallel="local", progress=False)
    assert summary.total_rows == 24
    ex = {e.example_id: e for e in store.iter_examples("derm_pad")}
    one = ex["PAT_1_101_0"]
    assert (one.target, one.label) == ("actinic keratosis", get_task("derm_pad").options.index("actinic keratosis"))
    assert one.context["fitzpatrick"] == 3 and "fitspatrick" not in one.context
    assert one.context["gender"] == "female" and one.context["region"] == "neck"
    assert one.context["itch"] == "yes" and "grew" not in one.context   # UNK is absent
    assert "diagnostic" not in one.context and "img_id" not in one.context
    assert "Fitzpatrick skin type: 3." in render_prompt(get_task("derm_pad"), one.context, 1)
    assert "fitzpatrick" not in ex["PAT_0_100_0"].context and "smoke" not in ex["PAT_0_100_0"].context
    by_patient: dict[str, set] = {}
    for e in ex.values():
        by_patient.setdefault(e.context["patient_id"], set()).add(e.split)
    assert all(len(s) == 1 for s in by_patient.values())            # no patient in two splits
    assert len({s for v in by_patient.values() for s in v}) >= 2
    assert {e.target for e in ex.values()} == set(get_task("derm_pad").options)


@pytest.mark.parametrize("change, field, message", [
    ({"diagnostic": "XYZ"}, "diagnostic", "'XYZ' is not one of"),
    ({"fitspatrick": "9.0"}, "fitspatrick", "not a Fitzpatrick skin type"),
    ({"patient_id": ""}, "patient_id", "split is by patient"),
    ({"img_id": "PAT_9_9_9.png"}, "img_id", "no image 'PAT_9_9_9.png'"),
])
def test_pad_ufes_bad_row_names_csv_row_and_field(store, tmp_path, snapshot, change, field, message):
    rows = [pad_row(1, 101, 0, "NEV"), pad_row(2, 102, 0, "MEL")]
    folder = write_pad(tmp_path / "pad", rows)
    rows[1].update(change)
    write_pad(folder, rows, skip_images={"PAT_9_9_9.png"})
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_pad_ufes(store, str(folder), progress=False)
    assert (err.value.row, err.value.field) == (3, field) and message in str(err.value)
    assert str(folder / "metadata.csv") in str(err.value) and snapshot(store) == before
    summary = ingest_pad_ufes(store, str(folder), on_error="skip", progress=False)
    assert summary.total_rows == 1 and summary.quarantined == 1


def test_cbis_benign_without_callback_meets_its_option_and_cli_pad_ufes(store, tmp_path, capsys):
    folder = tmp_path / "patches"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
    (folder / "labels.csv").write_text("file,label\na.png,BENIGN_WITHOUT_CALLBACK\nb.png,MALIGNANT\nc.png,BENIGN\n")
    ingest_images(store, str(folder), task="mammo_cbis_mass", progress=False)
    got = {e.example_id: e.target for e in store.iter_examples("mammo_cbis_mass")}
    assert sorted(got.values()) == ["benign", "benign without callback", "malignant"]
    pad = write_pad(tmp_path / "PAD-UFES-20", [pad_row(3, 7, 0, "SEK")])
    root = tmp_path / "store2"
    assert main(["ingest", "pad-ufes", str(pad), "--root", str(root), "--no-progress"]) == 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["sources"][0]["layout"] == "pad-ufes-20"
