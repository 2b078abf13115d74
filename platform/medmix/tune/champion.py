"""The sweep's champion: export the best trial, register it, and move `champion` only if it wins.

    decision = crown(cfg, best_trial, parent_tracker, sweep_dir)
    decision.promoted, decision.version, decision.reason

The best trial's final checkpoint is exported (`medmix.train.export.export_checkpoint`) and
registered as a version of `lineage.registered_model` (re-running a sweep reuses the version
registered from the same checkpoint). The alias (`sweep.champion_alias`) then moves to it
only if it beats the version the alias points at *on the same evaluation set*:

  - with a scored objective (`sweep.objective` = mean_normalised, worst_task or weighted) the
    versions are compared on the scores their trials measured on the fixed validation subset
    (recorded on the version with their confidence interval, `medmix.objective_ci`), and the
    candidate must win beyond both intervals; otherwise the decision reads "no significant
    winner" and the alias stays;
  - with the loss objective and `medmix.evaluate.runner.evaluate_export` available, both exports are evaluated on
    the validation split and compared on the sweep's objective computed from those metrics;
  - otherwise (or when the evaluator's metrics do not contain the objective's) the validation
    objective each was selected on is compared — recorded on every version this module
    registers, together with a fingerprint of the evaluation set (shard-store digest, the
    mixture's tasks, validation batches and their size, sequence length, tokenizer, objective). Versions
    whose fingerprints differ are not comparable, and the alias stays where it is unless
    there is no champion yet.

The comparison is logged on the sweep's parent run either way (`champion/comparison.json`
and `medmix.champion.*` tags).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from medmix.lineage import registry
from medmix.lineage.backend import LineageError
from medmix.lineage.registry import resolve_model_uri
from medmix.model.export_meta import CONFIG_FILE
from medmix.storage import Location, local_dir, location, upload
from medmix.tune.layout import SWEEP_INFO, objective_spec, objective_value, read_json
from medmix.tune.objective import significantly_better
from medmix.tune.space import SearchSpace

if TYPE_CHECKING:
    from medmix.config import MedmixConfig

log = logging.getLogger(__name__)

TAG_OBJECTIVE = "medmix.objective"
TAG_OBJECTIVE_DEF = "medmix.objective_def"
TAG_EVAL_SET = "medmix.eval_set"
TAG_OBJECTIVE_CI = "medmix.objective_ci"
NO_WINNER = "no significant winner"
TAG_SWEEP = "medmix.sweep"
TAG_TRIAL = "medmix.trial"


@dataclass
class ChampionDecision:
    """What happened to the alias, and why."""

    version: str | None
    """The registered version of the best trial (None when it could not be exported)."""
    promoted: bool
    reason: str
    basis: str
    """evaluate_export, recorded (validation objective at selection) or none."""
    candidate: float | None
    incumbent: float | None
    incumbent_version: str | None
    export_dir: str | None
    model_uri: str | None = None
    candidate_ci: tuple[float, float] | None = None
    incumbent_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def eval_set_fingerprint(cfg: MedmixConfig, tasks: list[str]) -> str:
    """Identify what a validation objective was measured on; equal only if comparable."""
    from medmix.data.store import ShardStore
    store = ShardStore(cfg.data.root)
    key: dict[str, Any] = {"store": store.digest(), "tasks": sorted(tasks), "eval_batches": cfg.train.eval_batches,
                           "val_rows_per_batch": cfg.mixture.global_batch_size,
                           "max_seq_len": cfg.stream.max_seq_len, "tokenizer": asdict(cfg.tokenizer),
                           "objective": objective_definition(cfg)}
    sw = cfg.sweep
    if sw.scored:   # the fixed subset per task, how each task is scored, the bootstrap
        key.update(eval_rows=sw.eval_rows, score_by=sw.score_by, task_metric=sw.task_metric,
                   reference=sw.reference, task_weights=sw.task_weights, bootstrap=sw.bootstrap,
                   ci_level=sw.ci_level, seed=cfg.seed, exemplar=cfg.stream.exemplar)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def objective_definition(cfg: MedmixConfig) -> str:
    if not cfg.sweep.scored:   # the loss objective is written as it always was: old versions stay comparable
        return json.dumps({"weights": dict(cfg.sweep.objective_metrics) or {"val_loss": 1.0},
                           "mode": cfg.sweep.direction}, sort_keys=True)
    return json.dumps({"kind": cfg.sweep.objective, "mode": cfg.sweep.direction}, sort_keys=True)


def _exporter() -> Callable | None:
    try:
        from medmix.train.export import export_checkpoint
    except ImportError:
        return None
    return export_checkpoint


def _evaluator() -> Callable | None:
    try:
        from medmix.evaluate.runner import evaluate_export
    except ImportError:
        return None
    return evaluate_export


def better(candidate: float, incumbent: float, mode: str) -> bool:
    return candidate < incumbent if mode == "min" else candidate > incumbent


def crown(cfg: MedmixConfig, best: Any, tracker: Any, sweep_dir: str | Path | Location) -> ChampionDecision:
    """Export + register `best` (a TrialSummary) and decide whether it becomes the champion.

    `tracker` has the sweep's parent run open; the decision is logged there. The export lands
    in `<sweep_dir>/champion/<trial>/`; for a sweep on object storage it is built in a local
    cache folder (registration and evaluation read local files) and uploaded there, config.json
    last.
    """
    from medmix.train.checkpoint import read_meta

    export = _exporter()
    if export is None or not cfg.lineage.enabled or best.run_id is None:
        why = ("medmix.train.export is not available: nothing exported" if export is None
               else "lineage is disabled: nothing registered")
        decision = ChampionDecision(None, False, why, "none", best.objective, None, None, None)
        _log_decision(tracker, decision)
        return decision

    sweep_dir = location(sweep_dir)
    published = sweep_dir.join("champion", best.trial_id)
    export_dir = published.local_path() if sweep_dir.is_local else local_dir(published.uri)
    if not (export_dir.is_dir() and any(export_dir.iterdir())):   # a re-run reuses its export
        export(best.checkpoint, export_dir)
    if not sweep_dir.is_local and not published.join(CONFIG_FILE).is_file():
        upload(export_dir, published, last=(CONFIG_FILE,))
    fingerprint = eval_set_fingerprint(cfg, SearchSpace.from_dict(_sweep_space(sweep_dir)).all_tasks)
    name = cfg.lineage.registered_model
    existing = registry.find_versions(cfg.lineage, registry.TAG_CHECKPOINT, str(best.checkpoint), name=name)
    if existing:
        version = existing[0].version
    else:
        meta = read_meta(best.checkpoint)
        version = registry.register_export(cfg.lineage, export_dir, meta.get("run_id") or best.run_id, name=name,
                                           tags={registry.TAG_CHECKPOINT: str(best.checkpoint),
                                                 registry.TAG_STEP: meta["step"],
                                                 registry.TAG_STORE_DIGEST: meta.get("store_digest", ""),
                                                 TAG_SWEEP: cfg.name, TAG_TRIAL: best.trial_id,
                                                 **objective_tags(cfg, best.objective, fingerprint,
                                                                  best.objective_ci)})
    decision = decide_and_promote(cfg, version, float(best.objective), fingerprint, export_dir,
                                  candidate_ci=best.objective_ci)
    _log_decision(tracker, decision)
    return decision


def objective_tags(cfg: MedmixConfig, value: float, fingerprint: str,
                   ci: tuple[float, float] | None = None) -> dict[str, str]:
    """Version tags that let a later sweep compare against this version."""
    tags = {TAG_OBJECTIVE: repr(float(value)), TAG_OBJECTIVE_DEF: objective_definition(cfg),
            TAG_EVAL_SET: fingerprint}
    if ci is not None:
        tags[TAG_OBJECTIVE_CI] = json.dumps([float(ci[0]), float(ci[1])])
    return tags


def decide_and_promote(cfg: MedmixConfig, version: str, candidate_value: float, fingerprint: str,
                       export_dir: str | Path, candidate_ci: tuple[float, float] | None = None) -> ChampionDecision:
    """Move `name@alias` to `version` if it beats the version the alias points at now.

    With a scored objective (`sweep.objective` other than loss) the candidate must win beyond
    both confidence intervals on the same evaluation set — the whole of its interval past the
    whole of the incumbent's; otherwise the decision is "no significant winner" and the alias
    stays. The loss objective (no intervals) compares the values, as it always did.

    Args:
        version: the registered candidate.
        candidate_value: its validation objective (what the sweep selected it on).
        fingerprint: `eval_set_fingerprint` of what that objective was measured on.
        export_dir: the candidate's export (what `evaluate_export` scores, when available).
        candidate_ci: the objective's confidence interval (scored objectives).
    """

    name, alias, mode = cfg.lineage.registered_model, cfg.sweep.champion_alias, cfg.sweep.direction
    incumbent_ci = None
    try:
        incumbent = registry.get_version(cfg.lineage, name, alias)
    except LineageError:
        incumbent = None
    incumbent_value, basis = None, "recorded"
    if incumbent is None:
        promoted, reason = True, f"no {name}@{alias} yet"
    elif incumbent.version == str(version):
        promoted, reason = False, f"{name}/{version} already is {name}@{alias}"
        incumbent_value = _recorded(incumbent)
    elif cfg.sweep.scored:
        # the in-trial scores are the evaluation: the same fixed subset for every version
        incumbent_value, incumbent_ci = _recorded(incumbent), _recorded_ci(incumbent)
        if incumbent.tags.get(TAG_EVAL_SET) != fingerprint or incumbent_value is None:
            promoted = False
            reason = (f"{name}/{incumbent.version} (the current {alias}) was measured on another evaluation "
                      f"set or objective; it stays {alias} (evaluate both with medmix evaluate to compare)")
        elif candidate_ci is None or incumbent_ci is None:
            promoted = False
            which = "the candidate" if candidate_ci is None else f"{name}/{incumbent.version}"
            reason = f"{NO_WINNER}: {which} has no confidence interval to compare beyond; {alias} stays"
        else:
            promoted = significantly_better((candidate_value, *candidate_ci), (incumbent_value, *incumbent_ci), mode)
            pair = (f"{candidate_value:.4f} [{candidate_ci[0]:.4f}, {candidate_ci[1]:.4f}] vs {name}/"
                    f"{incumbent.version}'s {incumbent_value:.4f} [{incumbent_ci[0]:.4f}, {incumbent_ci[1]:.4f}]")
            level = f"{100 * cfg.sweep.ci_level:g}%"
            reason = (f"{pair}: better beyond both {level} intervals ({mode})" if promoted
                      else f"{NO_WINNER}: {pair} — the {level} intervals do not separate them in the "
                           f"candidate's favour; {alias} stays")
    else:
        evaluated = _evaluate_both(cfg, Path(export_dir), name, alias, objective_value)
        if evaluated is not None:
            (candidate_value, incumbent_value), basis, comparable = evaluated, "evaluate_export", True
        else:
            incumbent_value = _recorded(incumbent)
            comparable = incumbent.tags.get(TAG_EVAL_SET) == fingerprint and incumbent_value is not None
        if not comparable:
            promoted = False
            reason = (f"{name}/{incumbent.version} (the current {alias}) was measured on another evaluation "
                      f"set or objective; it stays {alias} (evaluate both with medmix evaluate to compare)")
        elif better(candidate_value, incumbent_value, mode):
            promoted, reason = True, f"{candidate_value:.5f} beats {incumbent_value:.5f} ({mode})"
        else:
            promoted, reason = False, f"{candidate_value:.5f} does not beat {incumbent_value:.5f} ({mode})"
    if promoted:
        registry.set_alias(cfg.lineage, name, alias, version)
    return ChampionDecision(version=str(version), promoted=promoted, reason=reason, basis=basis,
                            candidate=candidate_value, incumbent=incumbent_value,
                            incumbent_version=incumbent.version if incumbent else None,
                            export_dir=str(export_dir), model_uri=f"{name}/{version}",
                            candidate_ci=tuple(candidate_ci) if candidate_ci else None,
                            incumbent_ci=incumbent_ci)


def _evaluate_both(cfg: MedmixConfig, export_dir: Path, name: str, alias: str,
                   objective_value: Callable) -> tuple[float, float] | None:
    """Both exports scored by the evaluator on the validation split; None if it cannot be done."""
    evaluate = _evaluator()
    if evaluate is None:
        return None
    incumbent_dir = resolve_model_uri(f"{name}@{alias}", cfg.lineage)
    spec = objective_spec(cfg.sweep)
    cand = objective_value(evaluate(str(export_dir), cfg, split="val"), spec)
    inc = objective_value(evaluate(str(incumbent_dir), cfg, split="val"), spec)
    if cand is None or inc is None:
        log.warning("evaluate_export's metrics do not contain the sweep objective's; comparing the "
                    "recorded validation objectives instead")
        return None
    return float(cand), float(inc)


def _recorded(version: Any) -> float | None:
    try:
        return float(version.tags[TAG_OBJECTIVE])
    except (KeyError, ValueError):
        return None


def _recorded_ci(version: Any) -> tuple[float, float] | None:
    try:
        lo, hi = json.loads(version.tags[TAG_OBJECTIVE_CI])
        return float(lo), float(hi)
    except (KeyError, ValueError, TypeError):
        return None


def _sweep_space(sweep_dir: Location) -> dict:
    return read_json(sweep_dir.join(SWEEP_INFO))["space"]


def _log_decision(tracker: Any, decision: ChampionDecision) -> None:
    tracker.log_dict(decision.to_dict(), "champion/comparison.json")
    tags = {"medmix.champion.promoted": str(decision.promoted).lower(), "medmix.champion.reason": decision.reason,
            "medmix.champion.basis": decision.basis}
    if decision.version:
        tags["medmix.champion.version"] = decision.version
    tracker.set_tags(tags)
    metrics = {k: v for k, v in (("champion/candidate", decision.candidate),
                                 ("champion/incumbent", decision.incumbent)) if v is not None}
    if metrics:
        tracker.log_metrics(metrics, step=0)
