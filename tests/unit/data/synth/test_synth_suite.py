"""The bundled suite in a real store: every task and split, valid rows, same seed -> same bytes."""

from __future__ import annotations

import re
import string

import pytest

from medmix.options import ConfigError
from medmix.data.images import decode_image
from medmix.data.schema import SPLITS, Example
from medmix.data.store import ShardStore
from medmix.data.synth import SIZES, SynthConfig, build_suite, suite_tasks
from medmix.data.synth.suite import build_chunk
from medmix.tasks import get_task, render_prompt

SUITE = ["medqa", "medmcqa", "pubmedqa", "mimic3_summary", "vqa_rad", "slake_vqa", "path_vqa",
         "cxr_report", "cxr_classify", "derm_pad", "mammo_vindr", "mammo_cbis_mass", "mammo_cbis_calc"]
GRAY = {"vqa_rad", "slake_vqa", "cxr_report", "cxr_classify", "mammo_vindr", "mammo_cbis_mass", "mammo_cbis_calc"}
RGB = {"path_vqa", "derm_pad"}


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def required_context(task: str) -> set[str]:
    spec = get_task(task)
    need = {k for k, _ in spec.context_fields} | placeholders(spec.image_phrase) | placeholders(spec.question)
    if spec.kind in ("mcq", "vqa") or not spec.question:
        need.add("question")
    if spec.kind == "mcq":
        need.add("options")
    return need


def test_suite_knows_every_image_and_text_task():
    assert suite_tasks() == SUITE  # registry order; genomics and volumes come from their own module
    assert suite_tasks(["derm_pad", "medqa"]) == ["medqa", "derm_pad"]


def test_sizes_match_their_purpose():
    assert 150 <= SIZES["small"]["train"] <= 400 and SIZES["small"]["val"] == 50 and SIZES["small"]["test"] == 100
    assert all(SIZES["medium"][s] == 10 * SIZES["small"][s] for s in SPLITS)


def test_tiny_build_is_fast_and_complete(tiny_suite):
    store, summary = tiny_suite
    # CPU seconds of this process (tiny runs in-process): stable under a loaded machine
    assert summary["cpu_s"] < 3.0, summary
    assert summary["tasks"] == SUITE
    counts = store.counts()
    for task in SUITE:
        assert counts[task] == SIZES["tiny"], task
    assert summary["total_rows"] == len(SUITE) * sum(SIZES["tiny"].values())
    assert store.verify() == []
    (source,) = store.manifest()["sources"]
    assert source["kind"] == "synth" and source["size"] == "tiny" and source["tasks"] == SUITE


@pytest.mark.parametrize("task", SUITE)
def test_rows_fit_their_task_spec(tiny_suite, task):
    store, _ = tiny_suite
    spec = get_task(task)
    need = required_context(task)
    allowed = need | {"question", "options"}
    for split in SPLITS:
        rows = list(store.iter_examples(task, split))
        assert [r.example_id for r in rows] == [f"{task}-{split}-{i:06d}" for i in range(len(rows))]
        for ex in rows:
            assert ex.source == f"synth:{task}:0:{ex.example_id[len(task) + 1:]}"
            assert need <= set(ex.context) <= allowed, (ex.example_id, sorted(ex.context))
            assert ex.target.strip() == ex.target and ex.target
            if spec.has_options:
                options = spec.options_for(ex.context)
                assert ex.target in options and ex.label == options.index(ex.target), ex.example_id
                assert len(set(options)) == len(options)
            else:
                assert ex.label is None
            if spec.has_image:
                assert len(ex.images) == 1 and ex.image_format == "png"
                assert decode_image(ex.images[0], "png").shape == (224, 224, 3)
            else:
                assert ex.images == [] and ex.image_format is None
            prompt = render_prompt(spec, ex.context)   # every row renders without error
            assert prompt.endswith("A:")


def test_grayscale_rgb_and_padding(tiny_suite):
    store, _ = tiny_suite
    padded = 0
    for task in GRAY | RGB:
        for ex in store.iter_examples(task):
            img = decode_image(ex.images[0])
            same = (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()
            assert same == (task in GRAY), ex.example_id
            assert ex.images[0][25] == (0 if task in GRAY else 2), "PNG colour type: 0 gray, 2 RGB"
            # odd aspect ratios: square_resize pads with zeros along one axis
            padded += bool((img[0] == 0).all() or (img[:, 0] == 0).all())
    assert padded > 0.8 * sum(1 for t in GRAY | RGB for _ in store.iter_examples(t))


def test_same_seed_same_bytes_other_seed_differs(tmp_path, tiny_suite):
    store, summary = tiny_suite
    again = ShardStore(tmp_path / "again")
    build_suite(SynthConfig(size="tiny"), again, image_size=224, progress=False)
    assert [(s.path, s.sha256) for s in again.shards()] == [(s.path, s.sha256) for s in store.shards()]
    assert again.digest() == summary["digest"]
    other = ShardStore(tmp_path / "other")
    build_suite(SynthConfig(size="tiny", seed=1, tasks=["derm_pad"]), other, image_size=224, progress=False)
    assert other.shards()[0].sha256 != store.shards(task="derm_pad")[0].sha256


def test_parallel_build_writes_the_same_bytes(tmp_path):
    cfg = dict(size="tiny", tasks=["medqa", "cxr_report", "derm_pad"])
    serial, parallel = ShardStore(tmp_path / "serial"), ShardStore(tmp_path / "parallel")
    build_suite(SynthConfig(**cfg, workers=1), serial, image_size=64, progress=False)
    out = build_suite(SynthConfig(**cfg, workers=2), parallel, image_size=64, progress=False)
    assert out["workers"] == 2
    assert parallel.digest() == serial.digest()


def test_an_example_depends_only_on_its_key(tiny_suite):
    """Rows are pure functions of (seed, task, split, index): `small` starts with `tiny`'s rows."""
    store, _ = tiny_suite
    for task in ("cxr_classify", "mammo_vindr", "medmcqa"):
        stored = [e.to_row() for e in store.iter_examples(task, "val")]
        alone = [e.to_row() for e in build_chunk(0, task, "val", 1, 3, 256, 224)]
        assert alone == stored[1:3]


def test_rerun_replaces_suite_tasks_and_keeps_others(tmp_path):
    store = ShardStore(tmp_path / "s")
    with store.transaction(source={"kind": "test"}) as tx:
        tx.add(Example(example_id="mine-1", task="variant_calling", split="train", context={"locus": "chr1:5 A>G"},
                       target="heterozygous", label=1, source="test:1"))
    cfg = SynthConfig(size="tiny", tasks=["medqa", "derm_pad"])
    build_suite(cfg, store, image_size=64, progress=False)
    first = sorted(s.sha256 for s in store.shards())
    build_suite(cfg, store, image_size=64, progress=False)
    assert store.counts() == {"variant_calling": {"train": 1}, "medqa": SIZES["tiny"], "derm_pad": SIZES["tiny"]}
    # same bytes again; the store gives replacement part files new names, so only one remains
    assert sorted(s.sha256 for s in store.shards()) == first and store.verify() == []
    assert len(list((tmp_path / "s" / "medqa" / "train").glob("*.parquet"))) == 1


def test_bad_task_names_are_rejected_before_any_work(tmp_path):
    store = ShardStore(tmp_path / "s")
    with pytest.raises(ConfigError, match=r"'nope' is not a registered task; registered tasks: medqa, "):
        build_suite(SynthConfig(size="tiny", tasks=["nope"]), store, image_size=64, progress=False)
    with pytest.raises(ConfigError, match=r"task 'variant_calling' has no synthetic generator"):
        suite_tasks(["variant_calling"])
    assert not store.exists()
    from medmix.config import load_config
    with pytest.raises(ConfigError, match=r"synth.tasks: 'nope' is not a registered task"):
        load_config("debug", ['synth.tasks=["nope"]'])


def test_vqa_mixes_open_and_closed_questions(tiny_suite):
    store, _ = tiny_suite
    for task in ("vqa_rad", "slake_vqa", "path_vqa"):
        answers = [e.target for e in store.iter_examples(task)]
        closed = sum(a in ("yes", "no") for a in answers)
        assert 0 < closed < len(answers), (task, answers)
        assert re.fullmatch(r"[\w&' -]+", " ".join(answers))
