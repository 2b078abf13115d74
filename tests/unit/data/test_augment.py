"""Training-time augmentation: seeded, answer-preserving, and only where a task allows it."""

from __future__ import annotations

import numpy as np
import pytest

from medmix.data.images import CROP_AREA, augment_image
from medmix.data.mixture import seeded_rng
from medmix.tasks import all_tasks, get_task
from medmix.tasks.spec import Exemplar, TaskSpec


@pytest.fixture(scope="module")
def photo():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()  # 512 x 512 x 3 uint8


def test_same_seed_same_pixels_and_seeds_differ(photo):
    ops = ("hflip", "vflip", "crop")
    a = augment_image(photo, ops, seeded_rng(7, "augment", "derm_pad", 3, 0))
    b = augment_image(photo, ops, seeded_rng(7, "augment", "derm_pad", 3, 0))
    np.testing.assert_array_equal(a, b)
    others = [augment_image(photo, ops, seeded_rng(7, "augment", "derm_pad", 3, epoch)) for epoch in range(1, 6)]
    assert any(o.shape != a.shape or not np.array_equal(o, a) for o in others)


def test_crop_keeps_most_of_the_image_and_flips_are_exact(photo):
    h, w = photo.shape[:2]
    for i in range(50):
        out = augment_image(photo, ("crop",), np.random.default_rng(i))
        area = out.shape[0] * out.shape[1] / (h * w)
        assert CROP_AREA[0] * 0.95 <= area <= 1.0
    flipped = [augment_image(photo, ("hflip",), np.random.default_rng(i)) for i in range(20)]
    assert all(np.array_equal(f, photo) or np.array_equal(f, photo[:, ::-1]) for f in flipped)
    assert any(np.array_equal(f, photo[:, ::-1]) for f in flipped)
    np.testing.assert_array_equal(augment_image(photo, (), np.random.default_rng(0)), photo)


def test_tasks_where_orientation_matters_are_never_flipped():
    for task in all_tasks():
        if task.modality == "cxr" or task.kind == "vqa" or task.name == "mammo_vindr":
            assert not {"hflip", "vflip"} & set(task.augment), task.name
    assert "hflip" in get_task("derm_pad").augment


def test_a_spec_with_an_unknown_or_imageless_augment_is_rejected():
    common = dict(title="t", kind="classify", instruction="i", question="q", exemplar=Exemplar({}, "a"),
                  metrics=("accuracy",), mixture_weight=1.0, options=("a", "b"))
    with pytest.raises(ValueError, match="rotate"):
        TaskSpec(name="x", modality="derm", image_phrase="the image", augment=("rotate",), **common)
    with pytest.raises(ValueError, match="no image"):
        TaskSpec(name="y", modality="text", augment=("crop",), **common)
