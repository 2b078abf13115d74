"""Run a mixture/scale sweep on Ray Tune: Optuna proposes, ASHA stops, Ray Train trains.

    from medmix.config import load_config
    from medmix.tune.sweep import run_sweep
    result = run_sweep(load_config("sweep_debug"))
    print(result.best.shares, result.champion)

Each trial is a function trainable that applies the sampled mixture/scale/lr to the base
config and fits the same `TorchTrainer` `medmix train` fits (the Ray Train V2 pattern:
`Tuner(TorchTrainer)` is not supported), with a `TuneReportCallback` that forwards every
validation report — plus the sweep's `objective` — to Tune. ASHA compares trials on that
objective at train steps (`time_attr = step`).

Under `<train.storage_path>/<name>/` — a local or shared path, or an `s3://` URI (Tune's
state, the trials' checkpoints and every file below go through the same storage layer):
  sweep.json          parent MLflow run id and the resolved search space
  tune/               Ray Tune's experiment state (what `Tuner.restore` resumes from)
  trials/<trial_id>/  each trial's Ray Train run: step-NNNNNN checkpoints, ledger, run info
  trials.csv          every evaluated (trial, step): shares, scale, lr, objective, val losses
  analysis/           the mixture-law report (`medmix sweep analyze`)
  champion/<trial>/   the exported best checkpoint

Re-running a sweep with the same name and storage resumes it: Tune restores its state
(finished trials stay finished, unfinished and errored ones continue — their Ray Train runs
resume from their latest checkpoints), and the same MLflow parent and child runs are re-opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import posixpath
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from medmix.config import config_from_dict, to_dict, to_toml
from medmix.lineage.tracker import build_tracker
from medmix.options import ConfigError
from medmix.runtime import ensure_ray, open_run
from medmix.storage import Location, local_copy, location
from medmix.train.callbacks import read_ledger
from medmix.train.checkpoint import find_latest_checkpoint, read_meta
from medmix.train.launcher import (RUN_INFO, absolutize, build_torch_trainer, checkpoint_location, commit_registered,
                                   prepare, train)
from medmix.train.launcher import use_gpu as launcher_use_gpu
from medmix.tune.champion import crown
from medmix.tune.law import TrialTable, normalise_records, write_trials
from medmix.tune.layout import (OBJECTIVE, SWEEP_INFO, TRIALS_CSV, TRIALS_DIR, TUNE_DIR, objective_interval,
                                objective_spec, objective_value, read_json, write_json)
from medmix.tune.report import analysis_dir, publish_analysis, train_rows
from medmix.tune.report import analyze as analyze_sweep
from medmix.tune.runs import OBJECTIVE_PARAM, child_runs, run_artifacts
from medmix.tune.space import (SearchSpace, apply_params, build_space, mixture_from_params, scale_key,
                               shared_points, trial_record, tune_space)

if TYPE_CHECKING:
    from medmix.config import MedmixConfig
    from medmix.lineage.tracker import Tracker

log = logging.getLogger(__name__)

# A trial actor only waits on its TorchTrainer (whose workers ask for their own CPUs); Tune
# cannot place a trial that asks for nothing, so it asks for a sliver.
TRIAL_ACTOR_CPUS = 0.01


# what a trial's summary keeps of its last report, and what the trial table keeps of every report
TRIAL_METRICS = ("val_loss", "loss", "val_score", "val_metric", "val_objective")
TABLE_METRICS = ("val_loss", "val_score", "val_objective")


# --- pieces the driver and the trials share ------------------------------------------------

class ObjectiveReportCallback(TuneReportCallback):
    """Forward validation reports to Tune with `objective` added; drop the others.

    Runs in the Ray Train controller. Training-only reports carry no objective, and Tune
    rejects results without the metric ASHA and Optuna judge, so only evaluated reports go on.
    Every report the Trainer makes carries `step`, ASHA's time attribute.
    """

    def __init__(self, spec: Mapping[str, Any]):
        super().__init__()
        self.spec = dict(spec)

    def after_report(self, run_context, metrics, checkpoint):
        report = dict(metrics[0])
        value = objective_value(report, self.spec)
        if value is None:
            return
        report[OBJECTIVE] = value
        super().after_report(run_context, [report], checkpoint)


def trial_concurrency(resources: Mapping[str, float], *, cpus_per_trial: float, gpus_per_trial: float,
                      num_samples: int, cap: int = 0) -> int:
    """How many trials fit on the cluster at once (at least 1, at most `num_samples` and `cap`)."""
    fits = math.floor(resources.get("CPU", 0) / cpus_per_trial + 1e-9) if cpus_per_trial > 0 else num_samples
    if gpus_per_trial > 0:
        fits = min(fits, math.floor(resources.get("GPU", 0) / gpus_per_trial + 1e-9))
    n = max(1, min(fits, num_samples))
    return min(n, cap) if cap else n


def mixture_tasks(cfg: MedmixConfig) -> list[str]:
    """Tasks the mixture may train on: `mixture.tasks`, else the store's tasks with train rows."""
    from medmix.data.store import ShardStore
    if cfg.mixture.tasks:
        tasks = list(cfg.mixture.tasks)
    else:
        counts = ShardStore(cfg.data.root).counts()
        tasks = sorted(t for t, splits in counts.items() if splits.get("train", 0) > 0)
    return [t for t in tasks if t not in set(cfg.mixture.exclude)]


# --- one trial (runs in a Tune trial actor) ------------------------------------------------

def run_trial(params: dict, *, base: dict, space: dict, sweep: dict) -> None:
    """Tune trainable: train the base config with `params` applied, as one Ray Train run."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    space_ = SearchSpace.from_dict(space)
    cfg = apply_params(config_from_dict(base), space_, params)
    cfg.name = trial_id
    cfg.train.eval_scores = cfg.sweep.scored
    trials = location(sweep["dir"]).join(TRIALS_DIR)
    cfg.train.storage_path = trials.uri
    run_dir = trials.join(trial_id)
    run_dir.mkdirs()

    tracker = build_tracker(cfg.lineage)
    info = read_json(run_dir.join(RUN_INFO))
    tags = {"medmix.sweep": sweep["name"], "medmix.trial": trial_id, "medmix.run_dir": run_dir.uri}
    run_id, resumed = open_run(tracker, cfg, kind="sweep-trial", name=f"{sweep['name']}/{trial_id}", tags=tags,
                               resume_run_id=info.get("run_id"), parent_run_id=sweep["parent_run_id"])
    if not resumed:   # a resumed trial keeps its child run and its record
        if run_id:
            tracker.log_params(trial_record(cfg, space_, params))
        write_json(run_dir.join(RUN_INFO), {"run_id": run_id, "name": trial_id, "params": params})

    trainer = build_torch_trainer(cfg, tracker.run_id, run_dir, use_gpu=sweep["use_gpu"],
                                  callbacks=[ObjectiveReportCallback(sweep["objective"])])
    # The driver records the outcome on the child run (`_close_child_runs`): a trial that ASHA
    # stops never gets past fit().
    try:
        result = trainer.fit()
    except BaseException:
        tracker.end_run("FAILED")
        raise
    tracker.end_run("FINISHED" if result.error is None else "FAILED")
    if result.error is not None:
        raise RuntimeError(f"trial {trial_id} failed: {result.error}")


# --- the driver ----------------------------------------------------------------------------

@dataclass
class TrialSummary:
    """One trial as the sweep ended it."""

    trial_id: str
    params: dict[str, Any]
    shares: dict[str, float]
    scale: str
    lr: float
    status: str
    """complete (trained every step), stopped (by ASHA) or error."""
    step: int
    """The last step a validation result was reported at."""
    objective: float | None
    metrics: dict[str, float]
    """The last validation report's losses, per-task scores and their intervals."""
    checkpoint: str | None
    run_id: str | None
    run_dir: str
    trial_steps: int
    """Optimizer steps this trial actually trained (every attempt), from its rank-0 ledger."""
    error: str | None = None
    objective_ci: tuple[float, float] | None = None
    """The objective's confidence interval at `step` (scored objectives)."""


@dataclass
class SweepResult:
    name: str
    sweep_dir: str
    parent_run_id: str | None
    space: dict[str, Any]
    trials: list[TrialSummary]
    best: TrialSummary | None
    resumed: bool
    concurrency: int
    seconds: float
    trial_steps: int
    """Compute used: optimizer steps trained, summed over trials."""
    champion: Any = None
    analysis: Any = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["champion"] = self.champion.to_dict() if self.champion is not None else None
        out["analysis"] = self.analysis.to_dict() if self.analysis is not None else None
        return out


def run_sweep(cfg: MedmixConfig, *, analyze: bool = True) -> SweepResult:
    """Run (or resume) the sweep `cfg` describes; export and register its champion."""

    t0 = time.time()
    check_train_config(cfg)
    prepare(cfg)
    sweep_dir = absolutize(cfg)
    space = build_space(cfg.sweep, mixture_tasks(cfg))
    check_shared(cfg, space)
    tracker = build_tracker(cfg.lineage)
    parent_run_id, resumed_parent = _open_parent(tracker, cfg, sweep_dir, space)

    cpus_per_trial = (cfg.train.num_workers * cfg.train.cpus_per_worker + cfg.sweep.data_cpus_per_trial
                      + TRIAL_ACTOR_CPUS)
    ensure_ray(cpus_per_trial * max(cfg.sweep.max_concurrent, 1))
    use_gpu = launcher_use_gpu(cfg)
    concurrency = trial_concurrency(ray.cluster_resources(), cpus_per_trial=cpus_per_trial,
                                    gpus_per_trial=cfg.train.num_workers if use_gpu else 0,
                                    num_samples=cfg.sweep.num_samples, cap=cfg.sweep.max_concurrent)
    context = {"name": cfg.name, "dir": sweep_dir.uri, "parent_run_id": parent_run_id, "use_gpu": use_gpu,
               "objective": objective_spec(cfg.sweep)}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=to_dict(cfg), space=space.to_dict(), sweep=context),
        {"cpu": TRIAL_ACTOR_CPUS})

    # Tune reads and writes its state through the sweep directory's filesystem (pyarrow.fs):
    # the same calls for a local path and a bucket
    tune_dir = sweep_dir.join(TUNE_DIR)
    filesystem = None if sweep_dir.is_local else sweep_dir.fs
    resumed = tune.Tuner.can_restore(tune_dir.path, storage_filesystem=filesystem)
    if resumed:
        log.info("resuming sweep %s from %s", cfg.name, tune_dir.uri)
        tuner = tune.Tuner.restore(tune_dir.path, trainable=trainable, resume_errored=True,
                                   storage_filesystem=filesystem)
    else:
        tuner = tune.Tuner(
            trainable, param_space=tune_space(space),
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode=cfg.sweep.direction, num_samples=cfg.sweep.num_samples,
                                        search_alg=_searcher(cfg, space), scheduler=_scheduler(cfg),
                                        max_concurrent_trials=concurrency, trial_dirname_creator=trial_dirname,
                                        trial_name_creator=trial_dirname),
            run_config=tune.RunConfig(name=TUNE_DIR, storage_path=sweep_dir.path, storage_filesystem=filesystem,
                                      verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_trial_failures)))
    tracker.set_tags({"medmix.sweep.concurrency": concurrency, "medmix.sweep.resumed": str(resumed).lower()})
    try:
        grid = tuner.fit()
    except BaseException:
        tracker.end_run("KILLED")
        raise

    trials = [summarise_trial(r, cfg, space, sweep_dir) for r in grid]
    trials.sort(key=lambda t: t.trial_id)
    _close_child_runs(cfg, trials, parent_run_id)
    table = trial_table(grid, space, cfg)
    write_trials(table, sweep_dir.join(TRIALS_CSV))
    best = best_trial(trials, cfg.sweep.direction)
    result = SweepResult(name=cfg.name, sweep_dir=sweep_dir.uri, parent_run_id=parent_run_id,
                         space=space.to_dict(), trials=trials, best=best, resumed=resumed or resumed_parent,
                         concurrency=concurrency, seconds=time.time() - t0,
                         trial_steps=sum(t.trial_steps for t in trials))
    _log_outcome(tracker, cfg, result, sweep_dir)
    if cfg.sweep.champion and best is not None:
        result.champion = crown(cfg, best, tracker, sweep_dir)
    elif best is None:
        result.notes.append("no trial trained every step: no best trial, no champion")
    if analyze:
        result.analysis = _analyze(cfg, table, space, sweep_dir, tracker, result)
    if cfg.sweep.confirm and result.analysis is not None:
        confirm(cfg, result.analysis, sweep_dir, tracker, parent_run_id)
    if result.analysis is not None and result.champion is not None:
        result.analysis.add_champion(result.champion.to_dict())
        publish_analysis(result.analysis, sweep_dir)
        tracker.log_artifact(result.analysis.out_dir, "analysis")
    tracker.end_run("FINISHED")
    write_json(sweep_dir.join("result.json"), json.loads(json.dumps(result.to_dict(), default=str)))
    return result


def check_train_config(cfg: MedmixConfig) -> None:
    """What a sweep needs of `[train]`: intermediate validation results for ASHA to stop trials on."""
    if cfg.sweep.scheduler != "asha":
        return
    if not cfg.train.eval_every:
        raise ConfigError("train.eval_every = 0 gives ASHA no intermediate validation results to stop "
                          "trials on; set train.eval_every (e.g. = sweep.grace_period) or sweep.scheduler=fifo")


def trial_dirname(trial: Any) -> str:
    """Tune trial directories (and names) are the bare trial id, like the trials' Train runs."""
    return trial.trial_id


def _searcher(cfg: MedmixConfig, space: SearchSpace):
    import optuna
    from ray.tune.search.optuna import OptunaSearch
    seed = cfg.seed
    sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
               "random": lambda: optuna.samplers.RandomSampler(seed=seed),
               "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, scramble=True)}[cfg.sweep.search]()
    # the shared mixtures at every scale first, then what Optuna proposes
    return OptunaSearch(sampler=sampler, points_to_evaluate=shared_points(space, cfg.sweep.shared_mixtures, seed)
                        or None)


def check_shared(cfg: MedmixConfig, space: SearchSpace) -> None:
    """The shared mixtures at every scale must fit in `sweep.num_samples`."""
    n = len(shared_points(space, cfg.sweep.shared_mixtures, cfg.seed))
    if n > cfg.sweep.num_samples:
        raise ConfigError(f"sweep.shared_mixtures = {cfg.sweep.shared_mixtures} at "
                          f"{n // max(cfg.sweep.shared_mixtures, 1)} scales is {n} trials, more than "
                          f"sweep.num_samples = {cfg.sweep.num_samples}; raise num_samples or lower shared_mixtures")


def _scheduler(cfg: MedmixConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    if cfg.sweep.scheduler == "fifo":
        return FIFOScheduler()
    # max_t one past the last step, so a trial that trains every step ends by returning rather
    # than being stopped on its final checkpoint report — unless a rung falls on the last step
    # (`_ensure_checkpoint_record` covers that case).
    return ASHAScheduler(time_attr="step", max_t=cfg.train.steps + 1,
                         grace_period=min(cfg.sweep.grace_period, cfg.train.steps),
                         reduction_factor=cfg.sweep.reduction_factor)


def _open_parent(tracker: Tracker, cfg: MedmixConfig, sweep_dir: Location,
                 space: SearchSpace) -> tuple[str | None, bool]:
    """Re-open the sweep's parent run (a re-run of the same sweep) or start it."""
    info = read_json(sweep_dir.join(SWEEP_INFO))
    if info.get("parent_run_id") and info.get("space") and info["space"] != json.loads(json.dumps(space.to_dict())):
        raise ValueError(f"sweep {cfg.name!r} at {sweep_dir.uri} was started with another search space; "
                         f"resume it with the same config or choose a new name (--set name=...)")
    run_id, resumed = open_run(tracker, cfg, kind="sweep", name=cfg.name,
                               tags={"medmix.sweep": cfg.name, "medmix.sweep_dir": sweep_dir.uri},
                               resume_run_id=info.get("parent_run_id"))
    if resumed:
        return run_id, True
    if run_id:
        tracker.log_params({"sweep.space.tasks": space.tasks, "sweep.space.params": space.param_names(),
                            OBJECTIVE_PARAM: json.dumps(objective_spec(cfg.sweep), sort_keys=True)})
        tracker.log_dict(space.to_dict(), "sweep/space.json")
    write_json(sweep_dir.join(SWEEP_INFO), {"name": cfg.name, "parent_run_id": run_id,
                                         "space": space.to_dict(), "mode": cfg.sweep.direction,
                                         "objective": objective_spec(cfg.sweep), "created": time.time()})
    return run_id, False


def summarise_trial(result: Any, cfg: MedmixConfig, space: SearchSpace, sweep_dir: Location) -> TrialSummary:
    """A Tune `Result` (plus the trial's run dir in storage) -> `TrialSummary`."""
    metrics = dict(result.metrics or {})
    trial_id = _trial_id(result)
    params = {k: v for k, v in (result.config or {}).items()}
    trial_cfg = apply_params(cfg, space, params)
    run_dir = sweep_dir.join(TRIALS_DIR, trial_id)
    step = int(metrics.get("step", 0))
    # Ray Train reports a checkpoint as a path on the run's filesystem ("bucket/key" on S3)
    checkpoint = checkpoint_location(run_dir, str(metrics["checkpoint_path"])) if metrics.get("checkpoint_path") else None
    if checkpoint:   # registered by Ray Train, so whole, even if ASHA stopped it before its commit
        commit_registered(run_dir, [checkpoint])
    if result.error is not None:
        status = "error"
    elif step >= cfg.train.steps:
        status = "complete"
    else:
        status = "stopped"
    return TrialSummary(
        trial_id=trial_id, params=params, shares=mixture_from_params(space, params), scale=scale_key(trial_cfg.model),
        lr=trial_cfg.train.lr, status=status, step=step,
        objective=float(metrics[OBJECTIVE]) if metrics.get(OBJECTIVE) is not None else None,
        metrics={k: float(v) for k, v in metrics.items() if k.startswith(TRIAL_METRICS) or k == OBJECTIVE},
        objective_ci=objective_interval(metrics, objective_spec(cfg.sweep)),
        checkpoint=checkpoint if checkpoint and status == "complete" else None,
        run_id=read_json(run_dir.join(RUN_INFO)).get("run_id"), run_dir=run_dir.uri,
        trial_steps=_ledger_steps(run_dir) or step, error=str(result.error) if result.error else None)


def _trial_id(result: Any) -> str:
    """The trial id of a Tune `Result`: trial_dirname() names trial dirs by trial id (its path
    is a local path or "bucket/key" on object storage)."""
    return posixpath.basename(str(result.path).rstrip("/"))


def _ledger_steps(run_dir: Location) -> int:
    """Steps rank 0 trained, over every attempt (one ledger line per step)."""
    return sum(len(lines) for lines in read_ledger(run_dir, rank=0).values())


def best_trial(trials: list[TrialSummary], mode: str) -> TrialSummary | None:
    """The best trial that trained every step (ASHA-stopped trials are judged at fewer steps)."""
    done = [t for t in trials if t.status == "complete" and t.objective is not None and t.checkpoint]
    if not done:
        return None
    return min(done, key=lambda t: (t.objective if mode == "min" else -t.objective, t.trial_id))


def trial_table(grid: Any, space: SearchSpace, cfg: MedmixConfig):
    """Every evaluated (trial, step) of the sweep, as the mixture law reads it."""
    records = []
    for result in grid:
        params = dict(result.config or {})
        trial_cfg = apply_params(cfg, space, params)
        shares = {f"share.{t}": v for t, v in mixture_from_params(space, params).items()}
        frame = result.metrics_dataframe
        rows = frame.to_dict("records") if frame is not None else ([result.metrics] if result.metrics else [])
        for row in rows:
            if row.get(OBJECTIVE) is None or (isinstance(row[OBJECTIVE], float) and math.isnan(row[OBJECTIVE])):
                continue
            rec = {"trial": _trial_id(result), "step": int(row["step"]), "scale": scale_key(trial_cfg.model),
                   "lr": trial_cfg.train.lr, **shares, OBJECTIVE: float(row[OBJECTIVE])}
            rec.update({k: float(v) for k, v in row.items() if isinstance(k, str) and k.startswith(TABLE_METRICS)
                        and v is not None and not (isinstance(v, float) and math.isnan(v))})
            records.append(rec)
    return TrialTable(normalise_records(records) if records else [])


def _close_child_runs(cfg: MedmixConfig, trials: list[TrialSummary], parent_run_id: str | None) -> None:
    """Record each trial's outcome on its child run and close it.

    A trial ASHA stops (or that fails) dies with its actor before its own code can end the
    run, so the driver closes every child run: FINISHED, KILLED (stopped early) or FAILED.
    A trial the driver started just before it died, after Tune last saved its state, is not
    part of the resumed sweep: its child run is closed as KILLED and tagged `orphaned`.
    """
    tracker = build_tracker(cfg.lineage)
    if parent_run_id and cfg.lineage.enabled:
        ours = {t.run_id for t in trials}
        for child in child_runs(cfg.lineage, parent_run_id):
            if child["run_id"] not in ours and child["status"] == "RUNNING":
                tracker.start_run(child["trial"], run_id=child["run_id"])
                tracker.set_tags({"medmix.sweep.status": "orphaned"})
                tracker.end_run("KILLED")
    for t in trials:
        if t.run_id is None:
            continue
        tracker.start_run(t.trial_id, run_id=t.run_id)
        tags = {"medmix.sweep.status": t.status, "medmix.sweep.last_step": t.step}
        if t.checkpoint:
            tags["medmix.final_checkpoint"] = t.checkpoint
            _ensure_checkpoint_record(cfg, tracker, t)
        tracker.set_tags(tags)
        tracker.end_run({"complete": "FINISHED", "stopped": "KILLED"}.get(t.status, "FAILED"))


def _ensure_checkpoint_record(cfg: MedmixConfig, tracker: Any, trial: TrialSummary) -> None:
    """Record the final checkpoint on the child run if the trial died before rank 0 did.

    Rank 0 records a checkpoint in MLflow right after reporting it; ASHA can stop the trial
    on that very report (a rung at the last step), so the record may be missing. The
    checkpoint's own medmix.json holds everything the record needs.
    """
    step = int(Path(trial.checkpoint).name.split("-")[-1])
    if f"checkpoints/step-{step:06d}.json" in run_artifacts(cfg.lineage, trial.run_id, "checkpoints"):
        return
    meta = read_meta(trial.checkpoint)
    tracker.log_metrics({k: v for k, v in meta.get("metrics", {}).items() if k != "step"}, step=meta["step"])
    tracker.record_checkpoint(path=trial.checkpoint, step=meta["step"], metrics=meta.get("metrics"),
                              data_state=meta.get("data_state"), parent_checkpoint=meta.get("parent_checkpoint"))


def _log_outcome(tracker: Any, cfg: MedmixConfig, result: SweepResult, sweep_dir: Location) -> None:
    """On the parent run: the trials, the best trial and its whole config, compute used."""
    counts = {s: sum(1 for t in result.trials if t.status == s) for s in ("complete", "stopped", "error")}
    metrics = {"trials": len(result.trials), **{f"trials_{k}": v for k, v in counts.items()},
               "trial_steps": result.trial_steps, "sweep_seconds": result.seconds}
    best = result.best
    if best is not None:
        metrics["best_objective"] = best.objective
        metrics.update({f"best/{k}": v for k, v in best.metrics.items() if k.startswith("val_loss")})
        best_cfg = apply_params(cfg, SearchSpace.from_dict(result.space), best.params)
        tracker.log_dict({"trial": best.trial_id, "run_id": best.run_id, "objective": best.objective,
                          "shares": best.shares, "scale": best.scale, "lr": best.lr,
                          "checkpoint": best.checkpoint, "params": best.params}, "sweep/best.json")
        best_toml = sweep_dir.join("best_config.toml")
        best_toml.write_text(to_toml(best_cfg))
        with local_copy(best_toml) as path:
            tracker.log_artifact(path, "sweep")
        tracker.set_tags({"medmix.sweep.best_trial": best.trial_id, "medmix.sweep.best_run_id": best.run_id or "",
                          "medmix.sweep.best_checkpoint": best.checkpoint or ""})
    tracker.log_metrics(metrics, step=0)
    tracker.log_dict({"trials": [asdict(t) for t in result.trials]}, "sweep/trials.json")
    if sweep_dir.join(TRIALS_CSV).is_file():
        with local_copy(sweep_dir.join(TRIALS_CSV)) as path:
            tracker.log_artifact(path, "sweep")


def confirm(cfg: MedmixConfig, report: Any, sweep_dir: Location, tracker: Any, parent_run_id: str | None) -> dict:
    """Train the law's pick at its scale for the step count the law compared trials at, and
    record its observed objective beside the prediction (report, analysis.json, MLflow).

    The run lives under `<sweep_dir>/confirm/` and resumes like any run: a re-run of the sweep
    finds it finished and only reads its result.
    """
    p = report.prediction
    vision, language = p["scale"].split("/")
    # one run per (mixture, scale, steps): a re-run of the sweep finds its own, a changed pick trains anew
    digest = hashlib.sha256(json.dumps([p["mixture"], p["scale"], int(report.step)], sort_keys=True).encode())
    data = to_dict(cfg)
    data["name"] = f"confirm-{digest.hexdigest()[:8]}"
    data["mixture"].update(strategy="explicit", weights=dict(p["mixture"]), tasks=sorted(p["mixture"]),
                           floor=0.0, cap=1.0)
    data["model"].update(vision_scale=vision, language_scale=language)
    data["train"].update(steps=int(report.step), storage_path=sweep_dir.join("confirm").uri,
                         checkpoint_every=int(report.step), eval_scores=cfg.sweep.scored)
    run_cfg = config_from_dict(data)
    done = _finished_confirmation(sweep_dir.join("confirm", data["name"]), int(report.step))
    if done is not None:   # a re-run of the sweep: the confirmation already trained
        metrics, run_id, checkpoint, error = done["metrics"], done.get("run_id"), done["checkpoint"], None
    else:
        log.info("confirmation run: the law's pick at %s, %d steps", p["scale"], report.step)
        outcome = train(run_cfg)
        metrics, run_id, checkpoint, error = outcome.metrics, outcome.run_id, outcome.checkpoint, outcome.error
    spec = objective_spec(cfg.sweep)
    observed = objective_value(metrics, spec) if error is None else None
    ci = objective_interval(metrics, spec) if error is None else None
    record = {"scale": p["scale"], "step": int(report.step), "mixture": p["mixture"], "predicted": p["predicted"],
              "observed": observed, "observed_ci": list(ci) if ci else None, "run_id": run_id,
              "checkpoint": checkpoint, "error": error}
    report.add_confirmation(record)
    publish_analysis(report, sweep_dir)
    if run_id:
        tracker.set_tags({"medmix.sweep.confirm_run_id": run_id})
    if observed is not None:
        tracker.log_metrics({"confirm/predicted": float(p["predicted"]), "confirm/observed": float(observed)}, step=0)
    tracker.log_artifact(report.out_dir, "analysis")
    return record


def _finished_confirmation(run_dir: Location, steps: int) -> dict | None:
    """The confirmation run's final checkpoint (metrics, run id) if it trained all `steps`."""
    found = find_latest_checkpoint(run_dir.uri) if run_dir.exists() else None
    if found is None:
        return None
    meta = read_meta(found)
    if meta.get("step") != steps:
        return None
    return {"metrics": meta.get("metrics") or {}, "run_id": meta.get("run_id"), "checkpoint": str(found)}


def _analyze(cfg: MedmixConfig, table: Any, space: SearchSpace, sweep_dir: Location, tracker: Any,
             result: SweepResult):
    """The mixture-law report at the end of a sweep; a sweep too small for a law is not an error."""
    n_trials = len({r["trial"] for r in table.records})
    if n_trials < 3:
        result.notes.append(f"analysis skipped: {n_trials} trials with validation results (need 3)")
        return None
    try:
        report = analyze_sweep(table, analysis_dir(sweep_dir), space=space, target_scale=cfg.sweep.target_scale,
                               model=cfg.sweep.law_model, mode=cfg.sweep.direction, min_trials=cfg.sweep.law_min_trials,
                               samples=cfg.sweep.law_samples, seed=cfg.seed, title=cfg.name,
                               sizes=train_rows(cfg), min_r2=cfg.sweep.law_min_r2)
    except ValueError as exc:
        result.notes.append(f"analysis skipped: {exc}")
        return None
    publish_analysis(report, sweep_dir)
    tracker.log_artifact(report.out_dir, "analysis")
    return report

