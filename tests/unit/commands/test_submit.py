"""`medmix submit` retries only while a fresh cluster has no job agent, and never submits twice."""

from __future__ import annotations

import io

import pytest

from medmix.commands import submit as submit_mod


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
