"""Fixtures of the genomics tests; file writers live in genomics_helpers.py."""

from __future__ import annotations

import numpy as np
import pytest

from genomics_helpers import LENGTH


@pytest.fixture
def reference_seq() -> str:
    rng = np.random.default_rng(7)
    return "".join(rng.choice(list("ACGT"), size=LENGTH))
