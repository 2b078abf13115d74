"""CI's property tests are reproducible: the `ci` Hypothesis profile is active under CI=true."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings


@pytest.mark.skipif(not os.environ.get("CI") or os.environ.get("HYPOTHESIS_PROFILE"),
                    reason="only CI=true (without an explicit HYPOTHESIS_PROFILE) selects the ci profile")
def test_ci_draws_the_same_examples_every_run_and_keeps_no_database():
    assert settings.default.derandomize is True
    assert settings.default.database is None


def test_ci_profile_is_registered_reproducible():
    ci = settings.get_profile("ci")
    assert ci.derandomize is True and ci.database is None
