"""A task defined in a TOML file: checked with errors that name file, task and key; ingested with
`--task-file`; carried by the store's manifest to a process that never saw the file (it renders
and tokenizes batches of the task), by the stream's batch spec to Ray-style workers, and by a
checkpoint into its export."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmix.cli import main
from medmix.options import ConfigError
from medmix.tasks import get_task, task_names
from medmix.tasks.files import carried, register_specs, tasks_from_toml
from medmix.tasks.spec import spec_from_dict, spec_to_dict

ROOT = Path(__file__).resolve().parents[3]
FUNDUS = '''
[[task]]
name = "fundus_dr"
title = "Diabetic retinopathy grading"
modality = "fundus"
kind = "classify"
instruction = "Grade the diabetic retinopathy in the fundus photograph."
question = "What is the retinopathy grade?"
options = ["none", "mild", "moderate", "severe", "proliferative"]
metrics = ["accuracy", "macro_f1"]
image_phrase = "the fundus photograph"
context_fields = [["age", "Age"]]
source = "a clinic's screening archive"
mixture_weight = 5.0
[task.exemplar]
context = { age = "61" }
target = "moderate"
num_images = 1

[[task]]
name = "triage_note"
title = "Triage note summary"
modality = "text"
kind = "summarize"
instruction = "Summarise the triage note in one sentence."
metrics = ["rougeL"]
context_fields = [["note", "Note"]]
[task.exemplar]
context = { note = "Chest pain for two hours, no fever." }
target = "Two hours of chest pain."
'''


@pytest.fixture(autouse=True)
def registry():
    """Tasks registered by a test are gone after it (the registry is per process)."""
    from medmix.tasks import registry as reg
    before, sources = dict(reg._REGISTRY), dict(reg._SOURCES)
    yield
    reg._REGISTRY.clear()
    reg._REGISTRY.update(before)
    reg._SOURCES.clear()
    reg._SOURCES.update(sources)


def test_a_toml_file_defines_tasks_that_round_trip_as_data():
    fundus, note = tasks_from_toml(FUNDUS, "fundus.toml")
    assert fundus.name == "fundus_dr" and fundus.modality == "fundus" and fundus.has_options and fundus.has_image
    assert fundus.options[2] == "moderate" and fundus.context_fields == (("age", "Age"),)
    assert fundus.exemplar.num_images == 1 and not note.has_image and note.question == ""
    assert spec_from_dict(json.loads(json.dumps(spec_to_dict(fundus)))) == fundus


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('kind = "classify"', 'kind = "segment"'), "task 1 ('fundus_dr'): task fundus_dr: kind 'segment'"),
    (lambda t: t.replace('metrics = ["rougeL"]', 'metrics = ["rouge"]'), "task 2 ('triage_note'): task triage_note: unknown metric 'rouge'"),
    (lambda t: t.replace('metrics = ["rougeL"]', 'metrics = ["macro_f1"]'), "metric 'macro_f1' needs answer options"),
    (lambda t: t.replace('name = "triage_note"', 'name = "medqa"'), "'medqa' is a built-in task"),
    (lambda t: t.replace('name = "triage_note"', 'name = "fundus_dr"'), "name 'fundus_dr' is defined twice"),
    (lambda t: t.replace('name = "triage_note"', 'name = "Triage Note"'), "must be a lowercase identifier"),
    (lambda t: t.replace('instruction = "Summarise', 'instructions = "Summarise'), "missing key 'instruction'"),
    (lambda t: t.replace('source = "a clinic', 'sauce = "a clinic'), "unknown key 'sauce'"),
    (lambda t: t.replace('modality = "fundus"', 'modality = "Fundus photo"'), "modality 'Fundus photo' must be one lowercase word"),
    (lambda t: t.replace('options = ["none", "mild", "moderate", "severe", "proliferative"]', 'options = ["none"]'),
     "a classify task needs at least two options"),
    (lambda t: t.replace("[[task]]", "[task]", 1), "not valid TOML"),
    (lambda t: "[[tasks]]\nname = 'x'\n", "unknown top-level key 'tasks'"),
])
def test_a_bad_task_file_names_file_task_and_key(edit, message):
    with pytest.raises(ConfigError) as err:
        tasks_from_toml(edit(FUNDUS), "fundus.toml")
    assert str(err.value).startswith("fundus.toml") and message in str(err.value), str(err.value)


def test_the_same_definition_registers_twice_a_different_one_is_refused():
    specs = tasks_from_toml(FUNDUS, "a.toml")
    register_specs(specs, "a.toml")
    register_specs(tasks_from_toml(FUNDUS, "b.toml"), "b.toml")       # a store re-registering: fine
    changed = tasks_from_toml(FUNDUS.replace("Grade the", "Please grade the"), "c.toml")
    with pytest.raises(ConfigError, match=r"c.toml: task 'fundus_dr' differs from the one already registered "
                                          r"from a.toml"):
        register_specs(changed, "c.toml")
    assert get_task("fundus_dr").instruction.startswith("Grade the")
    assert set(carried(["fundus_dr", "medqa", "triage_note"])) == {"fundus_dr", "triage_note"}


def test_medmix_tasks_checks_a_file_and_renders_its_prompt(tmp_path, capsys):
    path = tmp_path / "fundus.toml"
    path.write_text(FUNDUS)
    assert main(["tasks", "--task-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "fundus_dr" in out and "fundus" in out and "18 tasks" in out
    assert main(["tasks", "--task-file", str(path), "--prompt", "fundus_dr"]) == 0
    prompt = capsys.readouterr().out
    assert "Grade the diabetic retinopathy" in prompt and "Age: 61." in prompt and "moderate" in prompt
    path.write_text(FUNDUS.replace('kind = "classify"', 'kind = "segment"'))
    assert main(["tasks", "--task-file", str(path)]) != 0
    assert "kind 'segment'" in capsys.readouterr().err


def ingest_fundus(tmp_path: Path) -> Path:
    """`medmix ingest conversations --task-file` into a fresh store: 12 LLaVA records."""
    images = tmp_path / "images"
    images.mkdir()
    grades = ["none", "mild", "moderate", "severe", "proliferative"]
    records = []
    for i in range(12):
        Image.fromarray(np.full((20, 20, 3), 20 * i, np.uint8)).save(images / f"eye{i}.png")
        records.append({"id": f"eye-{i}", "image": f"eye{i}.png", "split": ["train", "val", "test"][i % 3],
                        "conversations": [{"from": "human", "value": "<image>\nWhat is the retinopathy grade?"},
                                          {"from": "gpt", "value": grades[i % 5]}]})
    (tmp_path / "fundus.json").write_text(json.dumps(records))
    (tmp_path / "fundus.toml").write_text(FUNDUS)
    root = tmp_path / "store"
    assert main(["ingest", "conversations", str(tmp_path / "fundus.json"), "--task", "fundus_dr",
                 "--task-file", str(tmp_path / "fundus.toml"), "--images-root", str(images), "--root", str(root),
                 "--no-progress", "--set", "data.image_size=32"]) == 0
    return root


FRESH_PROCESS = """
import json, sys
import medmix
from medmix.config import load_config
from medmix.data.store import ShardStore
from medmix.data.tokenizer import ensure_tokenizer, load_tokenizer
from medmix.tasks import task_names
root = sys.argv[1]
before = "fundus_dr" in task_names()
store = ShardStore(root)
counts = store.counts()                                  # opening the store registers its tasks
cfg = load_config("debug", [f'data.root="{root}"', 'mixture.tasks=["fundus_dr"]', "mixture.global_batch_size=4",
                            "model.image_size=32"])
ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
from medmix.data.stream import build_rank_stream
stream = build_rank_stream(cfg, tok, use_ray=False)
batch = next(iter(stream.batches(end_step=1)))
stream.close()
prompt = tok.decode([int(t) for t in batch["input_ids"][0] if int(t) != tok.pad_id])
print("RESULT " + json.dumps({"before": before, "counts": counts, "prompt": prompt,
                              "task_names": stream.task_names}))
"""


def test_the_store_carries_the_definition_to_a_process_without_the_file(tmp_path):
    root = ingest_fundus(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    assert list(manifest["tasks"]) == ["fundus_dr"] and manifest["tasks"]["fundus_dr"]["modality"] == "fundus"
    (tmp_path / "fundus.toml").unlink()          # nothing but the store from here on
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(root)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    got = json.loads(lines[-1][7:])
    assert got["before"] is False and got["counts"]["fundus_dr"] == {"train": 4, "val": 4, "test": 4}
    assert "Grade the diabetic retinopathy" in got["prompt"] and got["task_names"] == ["fundus_dr"]


def test_a_second_ingest_into_the_task_needs_no_file_and_keeps_the_definition(tmp_path):
    root = ingest_fundus(tmp_path)
    from medmix.tasks import registry as reg
    reg._REGISTRY.pop("fundus_dr")               # as in a new process: only the store knows the task
    more = [{"id": "eye-x", "image": "eye1.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is the retinopathy grade?"}, {"from": "gpt", "value": "mild"}]}]
    (tmp_path / "more.json").write_text(json.dumps(more))
    assert main(["ingest", "conversations", str(tmp_path / "more.json"), "--task", "fundus_dr", "--images-root",
                 str(tmp_path / "images"), "--root", str(root), "--no-progress", "--set", "data.image_size=32"]) == 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert "fundus_dr" in manifest["tasks"] and sum(s["rows"] for s in manifest["shards"]) == 13
    # a file that redefines the task differently is refused, naming both; the store is unchanged
    (tmp_path / "other.toml").write_text(FUNDUS.replace("Grade the", "Please grade the"))
    before = (root / "manifest.json").read_bytes()
    assert main(["ingest", "conversations", str(tmp_path / "more.json"), "--task", "fundus_dr", "--task-file",
                 str(tmp_path / "other.toml"), "--root", str(root), "--no-progress"]) != 0
    assert (root / "manifest.json").read_bytes() == before


def test_the_batch_spec_carries_the_definition_to_a_preprocessing_worker(tmp_path):
    """What a Ray Data task or actor gets is the pickled BatchSpec: a fresh process builds batches
    of the task from it alone."""
    from medmix.config import load_config
    from medmix.data.stream import build_rank_stream
    from medmix.data.tokenizer import ensure_tokenizer, load_tokenizer
    root = ingest_fundus(tmp_path)
    cfg = load_config("debug", [f'data.root="{root}"', 'mixture.tasks=["fundus_dr"]', "mixture.global_batch_size=4",
                                "model.image_size=32"])
    ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    tok = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    stream = build_rank_stream(cfg, tok, use_ray=False)
    spec = stream.spec
    refs = [list(dataclasses.astuple(r)) for r in stream.plan.batch()]
    assert set(spec.tasks) == {"fundus_dr"}
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(spec))
    code = ("import pickle, sys; import medmix; from medmix.data.collate import build_batch; "
            "from medmix.data.mixture import ExampleRef; "
            "spec = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "refs = [ExampleRef(*r) for r in __import__('json').loads(sys.argv[2])]; "
            "print('ROWS', len(build_batch(spec, refs)['input_ids']))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spec.pkl"), json.dumps(refs)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ROWS 4" in done.stdout, done.stderr[-4000:]


def test_unregistered_tasks_are_not_in_the_builtin_list():
    assert "fundus_dr" not in task_names()     # the autouse fixture put the registry back
