"""Lineage on a real MLflow sqlite store: runs, inputs, checkpoints, registry, the chain back.

One store for the whole module (creating a sqlite store's tables takes ~8 s).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from medmix.config import config_from_toml_text, flatten, load_config
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.lineage import backend
from medmix.lineage.backend import LineageError
from medmix.lineage.config import TrackerConfig
from medmix.lineage.query import format_chain, trace
from medmix.lineage.registry import (get_version, parse_model_ref, register_export, resolve_model_uri,
                                     set_alias)
from medmix.lineage.tracker import (MLflowTracker, NullTracker, build_tracker, checkpoint_artifact,
                                    store_datasets)


def _example(task: str, i: int, split: str = "train") -> Example:
    return Example(example_id=f"{task}-{i}", task=task, split=split, context={"question": f"q{i}"},
                   target="yes", source=f"test.jsonl:{i}")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A shard store with two ingest sources, a tracker on a fresh store, the debug config."""
    tmp = tmp_path_factory.mktemp("lineage")
    store = ShardStore(tmp / "data")
    with store.transaction(source={"kind": "synth", "path": "bundled-suite"}) as tx:
        for i in range(6):
            tx.add(_example("medqa", i))
        tx.add(_example("medqa", 99, split="test"))
    with store.transaction(source={"kind": "jsonl", "path": "/raw/pubmedqa.jsonl"}) as tx:
        for i in range(4):
            tx.add(_example("pubmedqa", i))
    root = tmp / "runs"
    cfg = TrackerConfig(root=str(root), tracking_uri=f"sqlite:///{root}/mlflow.db")
    train_cfg = load_config("debug", [f'data.root="{store.root}"', f'lineage.root="{root}"',
                                      f'lineage.tracking_uri="{cfg.tracking_uri}"'])
    return {"tmp": tmp, "store": store, "cfg": cfg, "train_cfg": train_cfg,
            "tracker": build_tracker(cfg), "client": backend.client(cfg)}


@pytest.fixture(scope="module")
def trained(env):
    """A training run as the trainer records it, with two checkpoints (the second a child of the first)."""
    tracker, store, cfg = env["tracker"], env["store"], env["train_cfg"]
    ckpts = env["tmp"] / "checkpoints"
    with tracker.start_run("debug", tags={"medmix.kind": "train"}) as run:
        tracker.log_config(cfg)
        tracker.log_store(store.root)
        for step in (5, 10, 15, 20):
            tracker.log_metrics({"loss": 4.0 - step / 10, "loss/medqa": 3.5, "mix/medqa": 0.6,
                                 "mix/pubmedqa": 0.4, "note": "not a number"}, step=step)
        parent = None
        for step in (10, 20):
            path = ckpts / f"step-{step:06d}"
            path.mkdir(parents=True)
            state = {"cursors": {"medqa": step, "pubmedqa": step // 2}, "epochs": {"medqa": 0}}
            meta = {"step": step, "config": json.loads(json.dumps(_asdict(cfg))), "data_state": state,
                    "store_digest": store.digest(),
                    "task_digests": {t: store.task_digest(t) for t in store.tasks()},
                    "tokenizer_digest": "tok123", "parent_checkpoint": parent, "run_id": run.run_id,
                    "metrics": {"loss": 4.0 - step / 10}}
            (path / "medmix.json").write_text(json.dumps(meta))
            tracker.record_checkpoint(path, step, metrics=meta["metrics"], data_state=state,
                                      parent_checkpoint=parent)
            parent = str(path)
    return {"run_id": run.run_id, "checkpoints": [ckpts / "step-000010", ckpts / "step-000020"]}


def _asdict(cfg):
    import dataclasses
    return dataclasses.asdict(cfg)


def test_training_run_has_params_inputs_metrics_and_checkpoint_records(env, trained):
    client, store, cfg = env["client"], env["store"], env["train_cfg"]
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    flat = flatten(cfg)
    assert len(run.data.params) == len(flat)
    assert run.data.params["train.lr"] == str(flat["train.lr"])
    assert run.data.params["model.scale"] == "debug"
    assert run.data.params["mixture.weights"] == "{}"
    # one dataset input per task, carrying the store's per-task digest
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["medqa", "pubmedqa"]
    medqa = inputs["medqa"]
    assert medqa.dataset.digest == store.task_digest("medqa")[:32]
    assert json.loads(medqa.dataset.profile) == {"rows": 7, "splits": {"test": 1, "train": 6},
                                                  "digest": store.task_digest("medqa")}
    assert {t.key: t.value for t in medqa.tags}["mlflow.data.context"] == "training"
    assert json.loads(medqa.dataset.source)["uri"] == f"{Path(store.root).resolve()}/medqa"
    assert run.data.tags["medmix.store_digest"] == store.digest()
    # metrics per step; the non-numeric value was skipped
    history = client.get_metric_history(trained["run_id"], "loss")
    assert [(m.step, m.value) for m in history] == [(5, 3.5), (10, 3.0), (15, 2.5), (20, 2.0)]
    assert "note" not in run.data.metrics
    # checkpoint records: artifact per checkpoint + latest-checkpoint tags
    assert run.data.tags["medmix.checkpoint.latest"] == str(trained["checkpoints"][1])
    assert run.data.tags["medmix.checkpoint.latest_step"] == "20"
    local = client.download_artifacts(trained["run_id"], checkpoint_artifact(20), str(env["tmp"] / "dl"))
    record = json.loads(Path(local).read_text())
    assert record["path"] == str(trained["checkpoints"][1])
    assert record["parent_checkpoint"] == str(trained["checkpoints"][0])
    assert record["data_state"]["cursors"] == {"medqa": 20, "pubmedqa": 10}
    assert record["metrics"] == {"loss": 2.0} and record["step"] == 20
    # the full config rebuilds from the run, and the manifest (ingest sources) is recorded
    toml = client.download_artifacts(trained["run_id"], "config.toml", str(env["tmp"] / "dl"))
    assert flatten(config_from_toml_text(Path(toml).read_text())) == flat
    manifest = client.download_artifacts(trained["run_id"], "data/manifest.json", str(env["tmp"] / "dl"))
    assert json.loads(Path(manifest).read_text()) == store.manifest()


def test_store_datasets_matches_manifest(env):
    records = store_datasets(env["store"].root)
    assert [(r.name, r.rows, r.splits) for r in records] == [("medqa", 7, {"test": 1, "train": 6}),
                                                              ("pubmedqa", 4, {"train": 4})]


def test_resumed_run_keeps_its_params_and_records_changes(env, trained):
    tracker, client = env["tracker"], env["client"]
    with tracker.start_run("debug", tags={"medmix.resumed": "true"}, run_id=trained["run_id"]):
        assert client.get_run(trained["run_id"]).info.status == "RUNNING"
        tracker.log_params({"train.steps": 40, "train.lr": client.get_run(trained["run_id"]).data.params["train.lr"],
                            "extra.key": [1, 2], "long": "x" * 7000,
                            **{f"bulk.{i}": i for i in range(150)}})   # > 100: several batches
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "20"         # immutable in MLflow
    assert run.data.tags["medmix.changed.train.steps"] == "40"
    assert "medmix.changed.train.lr" not in run.data.tags  # same value: nothing to record
    assert run.data.params["extra.key"] == "[1, 2]" and run.data.params["bulk.149"] == "149"
    assert len(run.data.params["long"]) == 6000 and run.data.params["long"].endswith("[truncated]")
    assert run.data.tags["medmix.resumed"] == "true"


def test_parent_and_child_runs_and_failed_status(env):
    tracker, client = env["tracker"], env["client"]
    with tracker.start_run("sweep", tags={"medmix.kind": "sweep"}) as parent:
        with pytest.raises(RuntimeError):
            with tracker.start_run("trial-0", parent_run_id=parent.run_id) as child:
                assert tracker.run_id == child.run_id
                tracker.log_metrics({"val_loss": 1.5}, step=1)
                raise RuntimeError("trial crashed")
        assert tracker.run_id == parent.run_id      # back to the parent after the child ends
        tracker.log_metrics({"best_val_loss": 1.5}, step=0)
    child_run = client.get_run(child.run_id)
    assert child_run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert child_run.info.status == "FAILED"
    assert client.get_run(parent.run_id).info.status == "FINISHED"
    assert client.get_run(parent.run_id).data.metrics == {"best_val_loss": 1.5}
    with pytest.raises(RuntimeError, match="no open MLflow run"):
        tracker.log_metrics({"x": 1}, step=0)


def test_disabled_lineage_is_a_null_tracker(tmp_path):
    tracker = build_tracker(TrackerConfig(enabled=False, root=str(tmp_path / "runs")))
    assert isinstance(tracker, NullTracker)
    with tracker.start_run("x") as run:
        tracker.log_params({"a": 1})
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.record_checkpoint(tmp_path, 1)
        tracker.log_config(load_config("debug"))
        assert tracker.log_store(tmp_path / "no-store") == []
    assert run.run_id is None and not (tmp_path / "runs").exists()


def test_tracking_uri_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackerConfig(root=str(tmp_path / "r"))
    assert backend.tracking_uri(cfg) == f"sqlite:///{(tmp_path / 'r').resolve()}/mlflow.db"
    assert backend.artifact_location(cfg, backend.tracking_uri(cfg)) == (tmp_path / "r" / "artifacts").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert backend.tracking_uri(cfg) == "http://127.0.0.1:5000"
    assert backend.artifact_location(cfg, "http://127.0.0.1:5000") is None  # the server decides
    assert backend.tracking_uri(replace(cfg, tracking_uri="sqlite:////x.db")) == "sqlite:////x.db"


def test_env_tracking_uri_is_honoured(env, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["cfg"].tracking_uri)
    tracker = build_tracker(TrackerConfig(root=str(tmp_path / "elsewhere")))
    assert isinstance(tracker, MLflowTracker)
    with tracker.start_run("from-env") as run:
        tracker.set_tags({"k": 1})
    assert env["client"].get_run(run.run_id).data.tags["k"] == "1"
    assert not (tmp_path / "elsewhere").exists()


def _export(tmp: Path, name: str) -> Path:
    out = tmp / name
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights-" + name.encode())
    (out / "config.json").write_text(json.dumps({"scale": "debug"}))
    (out / "tokenizer").mkdir()
    (out / "tokenizer" / "tokenizer.json").write_text("{}")
    return out


def test_register_alias_and_resolve(env, trained, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing may fall back to MLflow's global ./mlflow.db
    cfg = replace(env["cfg"], registered_model="regtest")
    tags = {"checkpoint": str(trained["checkpoints"][1]), "step": 20, "store_digest": env["store"].digest()}
    v1 = register_export(cfg, _export(tmp_path, "e1"), trained["run_id"], tags)
    v2 = register_export(cfg, _export(tmp_path, "e2"), trained["run_id"], tags)
    assert (v1, v2) == ("1", "2")
    set_alias(cfg, "regtest", "champion", v1)
    info = get_version(cfg, "regtest", "champion")
    assert info.version == "1" and info.aliases == ("champion",) and info.run_id == trained["run_id"]
    assert info.tags["run_id"] == trained["run_id"] and info.tags["step"] == "20"
    assert info.tags["checkpoint"] == str(trained["checkpoints"][1]) and info.tags["model_id"].startswith("m-")
    path = resolve_model_uri("regtest@champion", cfg)
    assert path == Path(cfg.root) / "models" / "regtest" / "1"
    assert (path / "model.safetensors").read_bytes() == b"weights-e1"
    assert (path / "tokenizer" / "tokenizer.json").is_file()
    assert (resolve_model_uri("models:/regtest/2", cfg) / "model.safetensors").read_bytes() == b"weights-e2"
    set_alias(cfg, "regtest", "champion", v2)   # moving the alias moves what resolves
    assert (resolve_model_uri("regtest@champion", cfg) / "model.safetensors").read_bytes() == b"weights-e2"
    assert resolve_model_uri(tmp_path / "e1") == tmp_path / "e1"   # a path is used as is
    with pytest.raises(LineageError, match="no model version regtest/9"):
        resolve_model_uri("regtest/9", cfg)
    with pytest.raises(LineageError, match="no model version regtest@nope"):
        get_version(cfg, "regtest", "nope")
    with pytest.raises(LineageError, match="neither"):
        resolve_model_uri("not a ref", cfg)
    with pytest.raises(LineageError, match="no MLflow run"):
        register_export(cfg, tmp_path / "e1", "0" * 32)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_parse_model_ref():
    assert str(parse_model_ref("medmix/3")) == "medmix/3"
    assert parse_model_ref("models:/medmix@champion").alias == "champion"
    assert parse_model_ref("medmix") is None and parse_model_ref("a/b/c") is None


def test_lineage_chain_from_version_and_checkpoint(env, trained, capsys):
    from medmix.cli import main
    cfg, store = env["cfg"], env["store"]
    ckpt = trained["checkpoints"][1]
    version = register_export(cfg, _export(env["tmp"], "chain-export"), trained["run_id"],
                              {"checkpoint": str(ckpt), "step": 20, "store_digest": store.digest()})
    set_alias(cfg, cfg.registered_model, "champion", version)
    chain = trace(f"medmix/{version}", cfg)
    assert chain.model["ref"] == f"medmix/{version}" and chain.model["aliases"] == ["champion"]
    assert chain.checkpoint["path"] == str(ckpt) and chain.checkpoint["step"] == 20
    assert chain.checkpoint["parent"] == str(trained["checkpoints"][0]) and chain.checkpoint["recorded"]
    assert chain.run["run_id"] == trained["run_id"] and chain.run["status"] == "FINISHED"
    assert chain.config["model.scale"] == "debug" and chain.mixture["strategy"] == "medpalm"
    assert chain.mixture["realised"] == {"medqa": 0.6, "pubmedqa": 0.4}
    assert [(d["task"], d["digest"], d["rows"]) for d in chain.datasets] == [
        ("medqa", store.task_digest("medqa"), 7), ("pubmedqa", store.task_digest("pubmedqa"), 4)]
    assert [s["sha256"] for s in chain.datasets[0]["shards"]] == [s.sha256 for s in store.shards("medqa")]
    assert [(s["kind"], s["path"], s["tasks"]) for s in chain.sources] == [
        ("synth", "bundled-suite", ["medqa"]), ("jsonl", "/raw/pubmedqa.jsonl", ["pubmedqa"])]
    assert chain.store_digest == store.digest() and chain.warnings == []

    # the verb prints the whole chain, in order, for the alias and for the checkpoint path
    common = ["--set", f'lineage.root="{cfg.root}"', "--set", f'lineage.tracking_uri="{cfg.tracking_uri}"']
    assert main(["lineage", "medmix@champion", "--shards", *common]) == 0
    text = capsys.readouterr().out
    heads = [line.split()[0] for line in text.splitlines() if not line.startswith(" ")]
    assert heads == ["model", "checkpoint", "run", "config", "mixture", "shards", "sources"]
    for needle in (f"medmix/{version}", "aliases: champion", str(ckpt), trained["run_id"], "model.scale=debug",
                   "realised: medqa=0.6 pubmedqa=0.4", store.task_digest("medqa")[:16],
                   store.shards("pubmedqa")[0].sha256[:16], "synth bundled-suite", "jsonl /raw/pubmedqa.jsonl"):
        assert needle in text, needle
    assert main(["lineage", str(ckpt), *common]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith(f"checkpoint  {ckpt}  step 20")
    assert f"registered as: medmix/{version}" in text and trained["run_id"] in text
    assert "data state: " in text and '"medqa": 20' in text and "tokenizer digest: tok123" in text
    assert main(["lineage", "medmix/77", *common]) == 1
    assert "no model version medmix/77" in capsys.readouterr().err


def test_lineage_when_the_checkpoint_directory_is_gone(env, trained, tmp_path):
    cfg = replace(env["cfg"], registered_model="gone")
    version = register_export(cfg, _export(tmp_path, "e"), trained["run_id"],
                              {"checkpoint": "/nowhere/step-000010", "step": 10})
    chain = trace(f"gone/{version}", cfg)
    assert chain.checkpoint["exists"] is False and chain.checkpoint["step"] == 10
    # read back from the run's checkpoint record
    assert chain.checkpoint["data_state"]["cursors"] == {"medqa": 10, "pubmedqa": 5}
    assert chain.checkpoint["metrics"] == {"loss": 3.0}
    assert "not readable here" in format_chain(chain)
    assert [d["task"] for d in chain.datasets] == ["medqa", "pubmedqa"]   # from the run's inputs
    assert chain.config["model.scale"] == "debug"                         # from the run's params


def test_checkpoint_without_medmix_json_is_a_clear_error(env, tmp_path):
    with pytest.raises(LineageError, match="medmix.json is missing"):
        trace(tmp_path, env["cfg"])


def test_lineage_without_a_store(trained, tmp_path):
    cfg = TrackerConfig(root=str(tmp_path / "empty"), tracking_uri=f"sqlite:///{tmp_path}/empty/mlflow.db")
    with pytest.raises(LineageError, match="no MLflow store at"):
        trace("medmix@champion", cfg)
    # a checkpoint still tells what its medmix.json holds
    chain = trace(trained["checkpoints"][0], cfg)
    assert chain.checkpoint["step"] == 10 and chain.config["model.scale"] == "debug"
    assert [d["task"] for d in chain.datasets] == ["medqa", "pubmedqa"] and chain.run is None
    assert any("no MLflow store" in w for w in chain.warnings)
    assert not (tmp_path / "empty").exists()          # looking never creates a store


def test_the_registry_records_each_versions_format(env, trained, tmp_path):
    from medmix.lineage.registry import TAG_FORMAT
    from medmix.model.resolve import resolve
    cfg = replace(env["cfg"], registered_model="formats")
    ckpt = trained["checkpoints"][1]
    tags = {"checkpoint": str(ckpt), "step": 20}
    hf = register_export(cfg, _export(tmp_path, "hf"), trained["run_id"], {**tags, TAG_FORMAT: "hf"})
    plain = register_export(cfg, _export(tmp_path, "plain"), trained["run_id"], tags)  # before formats: medmix's
    assert get_version(cfg, "formats", hf).tags[TAG_FORMAT] == "hf"
    assert "format hf" in format_chain(trace(f"formats/{hf}", cfg)).splitlines()[0]
    assert "format medmix-model" in format_chain(trace(f"formats/{plain}", cfg)).splitlines()[0]
    assert f"formats/{hf} (hf)" in trace(str(ckpt), cfg).checkpoint["registered_as"]
    with pytest.raises(FileNotFoundError, match=r"formats/1 is a 'hf' export .*medmix loads 'medmix-model'"):
        resolve(f"formats/{hf}", cfg)
