"""One sizing rule for a local Ray: never fewer logical CPUs than asked for + 2, at least 4."""

from __future__ import annotations

import os

from medmix.runtime import local_num_cpus


def test_local_cluster_leaves_two_slots_beside_what_was_asked_for():
    cores = os.cpu_count() or 1
    assert local_num_cpus(0) == max(cores, 4)
    assert local_num_cpus(2) == max(cores, 4)           # 2 train workers + 2 for Ray Data
    assert local_num_cpus(2.5) == max(cores, 5)         # fractions round up
    assert local_num_cpus(64) == max(cores, 66)
