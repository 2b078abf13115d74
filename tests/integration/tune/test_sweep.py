"""A real debug sweep on object storage: Ray Tune + Optuna + ASHA over Ray Train runs, MLflow,
export, registry — with the sweep's directory in a bucket of a local S3 server, as on a
cluster whose nodes share no disk.

One sweep, run the way a user's would be interrupted: a `medmix sweep` driver, joined to a
running Ray cluster (RAY_ADDRESS) from an empty working directory, is killed mid-sweep — one
trial finished, the next one training, the last not begun — the
same command is run again and resumes from Tune's state in the bucket (same Tune trials, same
MLflow parent run, the last trial started from the restored search), finishes, exports its champion into the bucket, registers
it and writes its mixture-law report there. A third run of the same name finds everything
done and trains nothing. The drivers reach the bucket through the standard AWS variables of
their own environment, which they hand to their jobs' workers; the working directory is left
as it was.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from medmix.config import load_config
from medmix.storage import Location, location

pytestmark = pytest.mark.slow(minutes=3.5)

# Three trials (the fewest a mixture-law analysis takes), one at a time: the driver is killed once
# the first has finished (recorded in Tune's saved state) and the second trains, so the resumed
# sweep must leave a finished trial alone, rerun an interrupted one and start one never begun.
TRIALS = 3
OVERRIDES = [f"sweep.num_samples={TRIALS}", "train.steps=8", "train.eval_every=4", "train.log_every=4", "train.checkpoint_every=8",
             "mixture.global_batch_size=8", "sweep.grace_period=4", "sweep.max_concurrent=1",
             "sweep.eval_rows=8", "sweep.bootstrap=200"]   # trials are compared, not measured finely


def sweep_overrides(tmp: Path, suite: str, bucket: str) -> list[str]:
    return [f'data.root="{suite}"', f'train.storage_path="s3://{bucket}/runs/checkpoints"',
            f'lineage.root="{tmp}/runs"', *OVERRIDES]


def ledger_lines(sweep_dir: Location) -> dict[str, int]:
    """Ledger lines per trial and file (parts of an attempt counted together)."""
    out: dict[str, int] = {}
    for f in sweep_dir.join("trials").files():
        parts = f.relative_to(sweep_dir.join("trials")).split("/")
        if len(parts) == 3 and parts[1] == "ledger" and f.name.endswith(".jsonl"):
            key = parts[0] + "/" + f.name.split("-part")[0]
            out[key] = out.get(key, 0) + len(f.read_text().splitlines())
    return out


def saved_trials(tune_dir: Location) -> dict[str, str]:
    """Trial id -> status in Tune's latest saved experiment state (what a restore starts from)."""
    states = [f for f in tune_dir.files(recursive=False) if f.name.startswith("experiment_state-")]
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())["trial_data"]
    except (json.JSONDecodeError, KeyError, FileNotFoundError):   # being rewritten
        return {}
    trials = [json.loads(t[0] if isinstance(t, list) else t) for t in data]
    return {t["trial_id"]: t.get("status", "") for t in trials}


def training_trials(sweep_dir: Location) -> set[str]:
    """Trials whose Ray Train run has started its rank 0 (it records where it runs first)."""
    return {f.relative_to(sweep_dir.join("trials")).split("/")[0] for f in sweep_dir.join("trials").files()
            if f.name == "rank-00000.json"}


def as_result(data: dict) -> SimpleNamespace:
    """result.json (SweepResult.to_dict) read back with a SweepResult's attributes."""
    result = SimpleNamespace(**data)
    result.trials = [SimpleNamespace(**t) for t in data["trials"]]
    result.best = SimpleNamespace(**data["best"]) if data["best"] else None
    result.champion = SimpleNamespace(**data["champion"]) if data["champion"] else None
    return result


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_suite, ray_local, s3_server):
    """Kill a sweep's driver mid-sweep, then run the same sweep to the end, then once more."""
    tmp = tmp_path_factory.mktemp("sweep")
    bucket = s3_server.bucket("sweep")
    overrides = sweep_overrides(tmp, tiny_suite, bucket)
    workdir = tmp / "workdir"
    workdir.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in s3_server.env.items():   # this process reads the bucket too
            mp.setenv(k, v)
        cfg = load_config("sweep_debug", overrides)
        sweep_dir = location(f"s3://{bucket}/runs/checkpoints").join(cfg.name)
        env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1",
               "MEDMIX_CACHE_DIR": str(tmp / "driver-cache"),
               # Tune saves its state every 10-20 s by default; every 2 s here, so that the state
               # in the bucket catches the second trial while it trains
               "TUNE_GLOBAL_CHECKPOINT_S": "2"}
        cmd = [sys.executable, "-m", "medmix.cli", "sweep", "--preset", "sweep_debug"]
        for o in overrides:
            cmd += ["--set", o]

        def driver(log_name: str) -> subprocess.Popen:
            log = open(tmp / log_name, "w")
            return subprocess.Popen(cmd, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

        def run_to_end(log_name: str):
            proc = driver(log_name)
            assert proc.wait(timeout=600) == 0, (tmp / log_name).read_text()[-4000:]
            return as_result(json.loads(sweep_dir.join("result.json").read_text())), (tmp / log_name).read_text()

        # 1. a driver on the running Ray cluster, killed as soon as Tune's state in the bucket
        #    records the first trial as finished and the second one as started, and the second trains
        proc = driver("killed-driver.log")
        deadline = time.time() + 420

        def one_finished_one_training() -> bool:
            state = saved_trials(sweep_dir.join("tune"))
            done = {t for t, status in state.items() if status == "TERMINATED"}
            return len(done) == 1 and bool((training_trials(sweep_dir) & set(state)) - done)

        try:
            while not one_finished_one_training():
                assert proc.poll() is None, (tmp / "killed-driver.log").read_text()[-3000:]
                assert time.time() < deadline, "the first driver never finished one trial and started the next"
                time.sleep(0.5)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)   # the driver dies; Ray reaps the actors it owned
            proc.wait()
        first = json.loads(sweep_dir.join("sweep.json").read_text())
        saved_state = saved_trials(sweep_dir.join("tune"))
        saved = set(saved_state)
        # finished = what the saved Tune state says. A trial whose last checkpoint reached the
        # bucket but whose end Tune had not yet recorded is rerun from its last *registered*
        # checkpoint (Ray Train's contract); only recorded ends are promised never to train again.
        finished_at_kill = {t for t, status in saved_state.items() if status == "TERMINATED"}
        lines_at_kill = ledger_lines(sweep_dir)
        time.sleep(5)

        # 2. the same sweep again: resumes and finishes
        resumed, printed = run_to_end("resumed-driver.log")
        lines = ledger_lines(sweep_dir)
        # 3. and once more: everything is done
        again, _ = run_to_end("again-driver.log")
        yield {"cfg": cfg, "sweep_dir": sweep_dir, "first": first, "saved": saved, "finished_at_kill":
               finished_at_kill, "lines_at_kill": lines_at_kill, "resumed": resumed, "again": again, "lines": lines,
               "printed": printed, "workdir": workdir, "tmp": tmp, "overrides": overrides}


def test_killed_sweep_resumes_with_the_same_trials_and_parent_run(sweep):
    resumed = sweep["resumed"]
    assert len(sweep["finished_at_kill"]) == 1, "the driver was not killed between the two trials"
    assert resumed.resumed
    assert resumed.parent_run_id == sweep["first"]["parent_run_id"]
    ids = {t.trial_id for t in resumed.trials}
    assert len(ids) == TRIALS
    assert sweep["saved"] <= ids, "the resumed sweep started new trials instead of its own"
    assert all(t.status in ("complete", "stopped") for t in resumed.trials), [t.error for t in resumed.trials]
    assert any(t.status == "complete" for t in resumed.trials)
    # a trial that had finished before the kill is not trained again
    for trial in sweep["finished_at_kill"]:
        before = {k: v for k, v in sweep["lines_at_kill"].items() if k.startswith(trial + "/")}
        after = {k: v for k, v in sweep["lines"].items() if k.startswith(trial + "/")}
        assert sum(after.values()) == sum(before.values()), (trial, before, after)


def test_rerunning_a_finished_sweep_trains_nothing(sweep):
    again, resumed = sweep["again"], sweep["resumed"]
    assert again.resumed and again.parent_run_id == resumed.parent_run_id
    assert {t.trial_id: t.status for t in again.trials} == {t.trial_id: t.status for t in resumed.trials}
    assert ledger_lines(sweep["sweep_dir"]) == sweep["lines"]
    assert f"{TRIALS} trials" in sweep["printed"] and "resumed" in sweep["printed"]
    assert again.best.trial_id == resumed.best.trial_id
    assert again.champion.version == resumed.champion.version and not again.champion.promoted


def test_parent_and_child_runs_record_the_sweep(sweep):
    from medmix.lineage.backend import client
    cfg, result = sweep["cfg"], sweep["again"]
    mlflow = client(cfg.lineage)
    parent = mlflow.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["medmix.kind"] == "sweep"
    artifacts = {a.path for a in mlflow.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/space.json", "sweep/best.json", "sweep/best_config.toml", "sweep/trials.csv"} <= artifacts
    assert parent.data.metrics["best_objective"] == pytest.approx(result.best.objective)
    children = mlflow.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    # a trial started after Tune's last save before the kill is not in the resumed sweep
    orphans = [c for c in children if c.data.tags.get("medmix.sweep.status") == "orphaned"]
    assert all(c.info.status == "KILLED" for c in orphans)
    children = [c for c in children if c not in orphans]
    assert sorted(c.data.tags["medmix.trial"] for c in children) == sorted(t.trial_id for t in result.trials)
    by_trial = {t.trial_id: t for t in result.trials}
    for child in children:
        trial = by_trial[child.data.tags["medmix.trial"]]
        assert child.info.status == ("FINISHED" if trial.status == "complete" else "KILLED")
        shares = {k[len("sweep.share."):]: float(v) for k, v in child.data.params.items()
                  if k.startswith("sweep.share.")}
        assert shares == pytest.approx(trial.shares, abs=1e-6)
        assert set(shares) == {"medqa", "pubmedqa", "cxr_classify", "mimic3_summary"}
        assert shares["mimic3_summary"] == pytest.approx(0.1)
        assert child.data.params["mixture.strategy"] == "explicit"
        assert child.data.params["sweep.scale"] == "debug/debug"
        history = mlflow.get_metric_history(child.info.run_id, "val_loss")
        assert history and history[0].step == 4
    best_child = next(c for c in children if c.data.tags["medmix.trial"] == result.best.trial_id)
    records = [a.path for a in mlflow.list_artifacts(best_child.info.run_id, "checkpoints")]
    assert records == ["checkpoints/step-000008.json"]   # the checkpoint is linked to its trial's run


def test_champion_is_exported_registered_and_aliased(sweep):
    from medmix.lineage.backend import client
    from medmix.lineage.registry import get_version
    cfg, result = sweep["cfg"], sweep["resumed"]
    champion = result.champion
    assert champion.promoted and champion.reason.startswith("no medmix@champion")
    # the export is in the bucket beside the sweep, whole (config.json is written last)
    published = sweep["sweep_dir"].join("champion", result.best.trial_id)
    assert {f.name for f in published.files()} >= {"model.safetensors", "config.json", "tokenizer.json", "medmix.json"}
    assert result.best.checkpoint.startswith(sweep["sweep_dir"].uri + "/trials/")
    version = get_version(cfg.lineage, "medmix", "champion")
    assert version.version == champion.version
    assert version.run_id == result.best.run_id
    assert version.tags["checkpoint"] == result.best.checkpoint
    assert float(version.tags["medmix.objective"]) == pytest.approx(result.best.objective)
    parent = client(cfg.lineage).get_run(result.parent_run_id)
    assert parent.data.tags["medmix.champion.version"] == champion.version
    comparison = {a.path for a in client(cfg.lineage).list_artifacts(result.parent_run_id, "champion")}
    assert comparison == {"champion/comparison.json"}


def test_analysis_report_from_the_mlflow_child_runs(sweep, capsys, s3_env):
    from medmix.cli import main
    from medmix.lineage.backend import client
    cfg, sweep_dir = sweep["cfg"], sweep["sweep_dir"]
    assert sweep_dir.join("analysis", "summary.md").is_file()   # written at the end of the sweep, into the bucket
    out = sweep["tmp"] / "analysis-cli"
    rc = main(["sweep", "analyze", cfg.name, "--preset", "sweep_debug", "--out", str(out),
               *[a for o in sweep["overrides"] for a in ("--set", o)]])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Predicted best mixture" in text and "debug/debug" in text
    for name in ("metric_vs_weight.png", "loss_vs_scale.png", "predicted_vs_observed.png", "summary.md"):
        assert (out / name).is_file()
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 1 + TRIALS and rows[0].startswith("trial,step,scale,share.")   # every trial at step 4
    logged = {a.path for a in client(cfg.lineage).list_artifacts(sweep["again"].parent_run_id, "analysis")}
    assert "analysis/summary.md" in logged and "analysis/loss_vs_scale.png" in logged


def test_drivers_leave_their_working_directory_as_they_found_it(sweep):
    assert list(sweep["workdir"].iterdir()) == []
