"""Where each stage runs on a cluster: one rule, read from the node label `medmix-role`.

    from medmix.placement import DATA, TRAIN, place
    p = place(DATA, "stream rank 0 preprocessing")   # logs one line: where the stage runs
    ds.map_batches(..., label_selector=p.selector)    # None: anywhere

cluster.yaml labels its node types `medmix-role: train` (GPU workers) and `medmix-role: data`
(CPU workers for Ray Data). The rule: a stage of role R runs only on nodes labelled
`medmix-role=R` when the cluster has at least one such node alive at the moment the stage
starts, else anywhere — so a local Ray, or a cluster without labels, behaves as if the labels
did not exist. The rule is read once per stage start (one `ray.nodes()` call), not per task:
a labelled node that joins later is used by the next stage that starts, and a stage whose
labelled nodes all die keeps its tasks pending until one is alive again rather than spilling
onto the other nodes. (An autoscaler does not start a labelled node for a stage that found
none: the stage then runs anywhere. Keep `min_workers` >= 1 for a role that must be honoured.)

The line `place(..., stage)` logs goes to the `medmix.placement` logger at INFO. What ran
where is also recorded: the run info (`medmix-run.json`) lists each train rank's node, and a
stream's `stats()["built_on"]` counts its batches per node.

Who asks: the per-rank stream's preprocessing tasks (`data/stream.py`) and ingest's Ray
tasks (`data/ingest/common.py`) ask for DATA; Ray Train's workers (`train/launcher.py`,
through `ScalingConfig(label_selector=...)`) ask for TRAIN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["DATA", "ROLE_LABEL", "TRAIN", "Placement", "place", "place_on", "role_selector"]

ROLE_LABEL = "medmix-role"
DATA = "data"
TRAIN = "train"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where one stage's tasks or actors go: `selector` for Ray (None = anywhere)."""

    role: str
    selector: dict[str, str] | None
    nodes: list[str] = field(default_factory=list)
    """Node ids of the alive nodes labelled with the role (empty: none, the stage runs anywhere)."""
    cpus: float = 0.0
    """Logical CPUs of those nodes (or of every alive node, when the stage runs anywhere)."""

    def describe(self) -> str:
        if self.selector is None:
            return f"any node (no alive node labelled {ROLE_LABEL}={self.role}; {self.cpus:g} CPUs in all)"
        return (f"nodes labelled {ROLE_LABEL}={self.role} ({len(self.nodes)} alive, "
                f"{self.cpus:g} CPUs)")


def place_on(role: str, nodes: Iterable[Mapping[str, Any]]) -> Placement:
    """The rule, on `ray.nodes()`-shaped records (`Alive`, `NodeID`, `Labels`, `Resources`)."""
    alive = [n for n in nodes if n.get("Alive")]
    labelled = [n for n in alive if (n.get("Labels") or {}).get(ROLE_LABEL) == role]
    chosen = labelled or alive
    cpus = float(sum((n.get("Resources") or {}).get("CPU", 0.0) for n in chosen))
    if not labelled:
        return Placement(role, None, [], cpus)
    return Placement(role, {ROLE_LABEL: role}, [str(n.get("NodeID", "")) for n in labelled], cpus)


def place(role: str, stage: str | None = None) -> Placement:
    """The placement of a stage of `role` on the connected Ray cluster; with `stage`, log it.

    Needs a connected Ray (`ray.init()`, a Ray worker, a Ray Train worker).
    """
    import ray  # start-up time: only stages that already run on Ray ask
    placement = place_on(role, ray.nodes())
    if stage:
        log.info("placement: %s -> %s", stage, placement.describe())
    return placement


def role_selector(role: str, stage: str | None = None) -> dict[str, str] | None:
    """`{"medmix-role": role}` when an alive node carries that label, else None (anywhere)."""
    return place(role, stage).selector
