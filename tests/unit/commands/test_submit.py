"""`medmix submit` builds one job (entrypoint, runtime_env, submission id) that never shows a
secret, refuses what cannot work on a cluster, retries only while a fresh cluster has no job
agent, and never submits twice."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from medmix.cli import main
from medmix.commands import submit as submit_mod

ROOT = Path(__file__).resolve().parents[3]


class FlakyJobs:
    """Answers submit_job like a Jobs API whose agent comes up after `not_ready` calls."""

    def __init__(self, not_ready: int, error: str = "Request failed with status code 500: "
                 "No available agent to submit job, please try again later.."):
        self.not_ready, self.error, self.ids = not_ready, error, []

    def submit_job(self, *, entrypoint, runtime_env, submission_id):
        self.ids.append(submission_id)
        if len(self.ids) <= self.not_ready:
            raise RuntimeError(self.error)
        return submission_id


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(submit_mod.time, "sleep", lambda s: None)


def test_no_agent_yet_is_retried_with_one_submission_id():
    jobs, out = FlakyJobs(not_ready=3), io.StringIO()
    job_id = submit_mod.submit_with_retry(jobs, "python jobs/train.py", {}, wait=60, out=out)
    assert job_id == jobs.ids[-1] and len(jobs.ids) == 4 and len(set(jobs.ids)) == 1
    assert out.getvalue().count("retrying") == 3


def test_other_errors_are_raised_at_once():
    jobs = FlakyJobs(not_ready=5, error="Request failed with status code 400: bad runtime_env")
    with pytest.raises(RuntimeError, match="bad runtime_env"):
        submit_mod.submit_with_retry(jobs, "python jobs/train.py", {}, wait=60, out=io.StringIO())
    assert len(jobs.ids) == 1


def test_gives_up_after_the_wait():
    jobs = FlakyJobs(not_ready=1000)
    with pytest.raises(RuntimeError, match="No available agent"):
        submit_mod.submit_with_retry(jobs, "python jobs/train.py", {}, wait=0.5, out=io.StringIO())


def test_an_attempt_that_got_through_is_not_resubmitted():
    jobs = FlakyJobs(not_ready=1, error="Job with submission_id medmix-x already exists.")
    job_id = submit_mod.submit_with_retry(jobs, "python jobs/train.py", {}, wait=60, out=io.StringIO())
    assert job_id == jobs.ids[0] and len(jobs.ids) == 1


# --- the job itself: build_job, --dry-run, what reaches Ray --------------------------------------

SECRET = "s3cr3t-value-never-printed"


def test_build_job_carries_working_dir_tracking_uri_and_copied_env():
    job = submit_mod.build_job("train", ["--preset", "base", "--set", "name=a b"], python="python3",
                               tracking_uri="http://mlflow:5000", env=["AWS_SECRET_ACCESS_KEY"],
                               environ={"AWS_SECRET_ACCESS_KEY": SECRET})
    assert job.entrypoint == "python3 jobs/train.py --preset base --set 'name=a b'"
    assert job.runtime_env == {"working_dir": ".", "excludes": submit_mod.EXCLUDES,
                               "env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow:5000",
                                            "AWS_SECRET_ACCESS_KEY": SECRET}}
    assert job.submission_id.startswith("medmix-") and SECRET not in repr(job)
    assert job.shown()["runtime_env"]["env_vars"]["AWS_SECRET_ACCESS_KEY"] == "***"


def test_every_job_has_an_entry_point_and_an_unknown_one_is_refused():
    for name, path in submit_mod.JOBS.items():
        assert (ROOT / path).is_file(), name
        assert submit_mod.build_job(name, [], environ={}).entrypoint == f"python {path}"
    with pytest.raises(ValueError, match="unknown job 'tune'.*evaluate, serve, sweep, train"):
        submit_mod.build_job("tune", [], environ={})


def test_tracking_uri_defaults_to_the_submitters_environment_and_empty_carries_none():
    env = {"MLFLOW_TRACKING_URI": "https://mlflow.example.org"}
    assert submit_mod.build_job("sweep", [], environ=env).runtime_env["env_vars"] == env
    assert "env_vars" not in submit_mod.build_job("sweep", [], tracking_uri="", environ=env).runtime_env
    assert "env_vars" not in submit_mod.build_job("sweep", [], environ={}).runtime_env


@pytest.mark.parametrize("uri", ["sqlite:///home/me/medmix-runs/mlflow.db", "file:///tmp/mlruns", "./mlruns"])
def test_a_tracking_store_on_the_submitting_machine_is_refused_naming_it(uri):
    with pytest.raises(ValueError, match=f"tracking URI {uri} \\(--tracking-uri\\).*http\\(s\\).*mlflow server"):
        submit_mod.build_job("train", [], tracking_uri=uri, environ={})
    with pytest.raises(ValueError, match=f"tracking URI {uri} \\(\\$MLFLOW_TRACKING_URI\\)"):
        submit_mod.build_job("train", [], environ={"MLFLOW_TRACKING_URI": uri})


def test_an_unset_env_variable_is_an_error_naming_it():
    with pytest.raises(ValueError, match="--env MISSING_ONE: not set"):
        submit_mod.build_job("train", [], env=["HOME", "MISSING_ONE"], environ={"HOME": "/root"})


def test_packages_and_image_follow_rays_runtime_env_rules():
    from ray.runtime_env import RuntimeEnv
    with pytest.raises(ValueError, match="--image-uri img:1 together with --pip/--uv"):
        submit_mod.build_job("train", [], image_uri="img:1", pip=["x"], environ={})
    with pytest.raises(ValueError, match="--pip and --uv together"):
        submit_mod.build_job("train", [], pip=["x"], uv=["y"], environ={})
    image = submit_mod.build_job("train", [], image_uri="img:1", tracking_uri="http://m:5000", environ={})
    assert image.runtime_env == {"env_vars": {"MLFLOW_TRACKING_URI": "http://m:5000"}, "image_uri": "img:1"}
    for job in (image, submit_mod.build_job("train", [], pip=["peft"], environ={}),
                submit_mod.build_job("train", [], uv=["peft"], environ={})):
        RuntimeEnv(**job.runtime_env)  # Ray's own validation accepts what we send


def test_dry_run_prints_the_job_as_json_with_secrets_hidden_and_contacts_nothing(monkeypatch, capsys):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(submit_mod, "submit", lambda *a, **k: pytest.fail("--dry-run submitted"))
    rc = main(["submit", "train", "--preset", "base", "--dry-run", "--env", "AWS_SECRET_ACCESS_KEY",
               "--pip", "peft", "--tracking-uri", "http://mlflow:5000"])
    out = capsys.readouterr().out
    assert rc == 0 and SECRET not in out
    job = json.loads(out)
    assert job["entrypoint"] == "python jobs/train.py --preset base"  # --dry-run did not reach the job
    assert job["runtime_env"]["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow:5000",
                                              "AWS_SECRET_ACCESS_KEY": "***"}
    assert job["runtime_env"]["pip"] == ["peft"] and job["submission_id"].startswith("medmix-")


def test_arguments_after_double_dash_go_to_the_job(capsys):
    assert main(["submit", "evaluate", "--tracking-uri", "", "--dry-run", "--", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["entrypoint"] == "python jobs/evaluate.py --dry-run"


def test_submit_sends_the_built_job_with_one_submission_id_and_never_logs_secrets(monkeypatch):
    import ray.job_submission as js
    sent = []

    class Client:
        def __init__(self, address, headers):
            pass

        def submit_job(self, *, entrypoint, runtime_env, submission_id):
            sent.append((entrypoint, runtime_env, submission_id))
            return submission_id

        def get_job_status(self, job_id):
            return js.JobStatus.SUCCEEDED

        def get_job_logs(self, job_id):
            return "done\n"

    monkeypatch.setattr(js, "JobSubmissionClient", Client)
    out = io.StringIO()
    job_id, status = submit_mod.submit("train", ["--preset", "debug"], address="http://head:8265", out=out,
                                       tracking_uri="http://mlflow:5000", env=["TOKEN"],
                                       environ={"TOKEN": SECRET})
    assert status == "SUCCEEDED" and [s[2] for s in sent] == [job_id]
    assert sent[0][1]["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "TOKEN": SECRET}
    assert SECRET not in out.getvalue()


def test_the_token_goes_in_a_header_unless_the_user_disabled_auth(tmp_path, monkeypatch):
    """Ray sets RAY_AUTH_MODE=token in any process whose `ray.init()` found a token: that must
    not stop plain HTTP calls to a token cluster from carrying it (they got 401 after a local
    Ray had started in the same process)."""
    from medmix.commands.submit import auth_headers
    token = tmp_path / "auth_token"
    token.write_text("abc123\n")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert auth_headers() == {"Authorization": "Bearer abc123"}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert auth_headers() == {"Authorization": "Bearer abc123"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers() == {}
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    token.unlink()
    assert auth_headers() == {}
