"""Configuration of a mixture/scale sweep (`[sweep]`): what is searched, how, and what wins.

The sweep trains one debug-sized Ray Train run per trial. The search space is the simplex of
task-mixture weights (with per-task floors and tasks held fixed), the vision and language
scales (categorical) and the learning rate (log-uniform); everything else comes from the rest
of the config. `medmix sweep --preset sweep_debug --dry-run` prints it resolved.
"""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import ConfigError, map_option, option
from medmix.model.config import SCALES

OBJECTIVES = ("mean_normalised", "worst_task", "weighted", "loss")
# metrics a trial can score from option probabilities alone (the rest need generated text)
OPTION_METRICS = ("accuracy", "macro_f1", "macro_auc", "auc")


def natural_mode(objective: str) -> str:
    """Scores are maximised, losses minimised."""
    return "min" if objective == "loss" else "max"


@dataclass
class SweepConfig:
    """Mixture/scale sweep: search space, Optuna search, ASHA early stopping, champion."""

    num_samples: int = option(8, "trials to run (each one a Ray Train run)", ge=1)
    tasks: list[str] = option(default_factory=list, help="tasks whose mixture shares are searched; empty = "
                              "every task of the mixture (mixture.tasks or the store's) not held fixed")
    fixed: dict[str, float] = map_option("task -> share of the whole mixture held fixed in every trial")
    floor: float = option(0.0, "minimum share of every searched task", ge=0, lt=1)
    floors: dict[str, float] = map_option("task -> minimum share, replacing `floor` for that task")
    simplex: str = option("exp", "how sampled params map onto the simplex: exp = normalised -log u "
                          "(Dirichlet(1) for uniform u), softmax = softmax of logits", choices=("exp", "softmax"))
    logit_range: float = option(3.0, "softmax: logits are sampled in [-logit_range, logit_range]", gt=0)
    vision_scales: list[str] = option(default_factory=list, help="vision scales searched (categorical); "
                                      "empty = keep the model config's", choices=SCALES)
    language_scales: list[str] = option(default_factory=list, help="language scales searched (categorical); "
                                        "empty = keep the model config's", choices=SCALES)
    lr_min: float = option(0.0, "lowest learning rate searched (log-uniform); 0 = keep train.lr", ge=0)
    lr_max: float = option(0.0, "highest learning rate searched (log-uniform); 0 = keep train.lr", ge=0)
    search: str = option("tpe", "Optuna sampler (seeded with `seed`): tpe, random or qmc",
                         choices=("tpe", "random", "qmc"))
    scheduler: str = option("asha", "asha: stop weak trials early; fifo: every trial runs all train.steps",
                            choices=("asha", "fifo"))
    grace_period: int = option(10, "ASHA: optimizer steps every trial trains before it may be stopped", ge=1)
    reduction_factor: float = option(2.0, "ASHA: keep the best 1/reduction_factor at each rung", gt=1)
    objective: str = option("mean_normalised", "what trials are judged on: mean_normalised (each task's score "
                            "scaled between its chance level and sweep.reference, averaged), worst_task (the "
                            "lowest of them), weighted (their sweep.task_weights mean) or loss (mean per-task "
                            "validation loss, or sweep.objective_metrics)", choices=OBJECTIVES)
    objective_metrics: dict[str, float] = map_option("objective = loss: report metric -> weight; the objective "
                                                     "is their weighted mean; empty = val_loss")
    task_weights: dict[str, float] = map_option("objective = weighted: task -> weight of its normalised score")
    reference: dict[str, float] = map_option("task -> the metric value that scores 1 (e.g. its specialist's); "
                                             "default the metric's best (1.0)")
    task_metric: dict[str, str] = map_option("task -> the registry metric it is scored by inside trials "
                                             "(accuracy, macro_f1, macro_auc, auc); default its first one")
    score_by: dict[str, str] = map_option("task -> metric or loss (validation loss normalised by the unigram "
                                          "loss); default metric for option tasks, loss for free-text ones")
    eval_rows: int = option(32, "rows per task of the fixed validation subset every evaluation scores "
                            "(the first rows of its val split)", ge=1)
    bootstrap: int = option(1000, "bootstrap replicates of every task score's confidence interval", ge=50)
    ci_level: float = option(0.95, "confidence level of the intervals", gt=0.5, lt=1)
    mode: str = option("auto", "auto (max for score objectives, min for loss), min or max",
                       choices=("auto", "min", "max"))
    max_concurrent: int = option(0, "trials at once; 0 = as many as the cluster's CPUs/GPUs hold", ge=0)
    data_cpus_per_trial: float = option(1.0, "logical CPUs each trial leaves free for its Ray Data reads", ge=0)
    max_trial_failures: int = option(1, "times Tune retries a trial that failed for good", ge=0)
    shared_mixtures: int = option(0, "mixtures trained at every swept scale before the search proposes any "
                                  "(the stratified one first, then seeded Dirichlet draws): rank invariance "
                                  "across scales is then measured on real runs; counts toward num_samples", ge=0)
    confirm: bool = option(False, "after the analysis, train the law's pick at the target scale for the "
                           "compared step count and put its observed objective beside the prediction")
    champion: bool = option(True, "export and register the best trial; move the alias if it wins")
    champion_alias: str = option("champion", "registry alias the winner of the comparison gets")
    target_scale: str = option("", "analyze: 'vision/language' scale to predict the best mixture at; "
                               "'' = the largest swept")
    law_model: str = option("ridge", "analyze: regression from mixture to loss: ridge (quadratic in shares "
                            "+ log shares) or gbm (gradient-boosted trees)", choices=("ridge", "gbm"))
    law_samples: int = option(20000, "analyze: Dirichlet samples the fitted law is minimised over", ge=100)
    law_min_trials: int = option(4, "analyze: the step used is the latest one at least this many trials reached", ge=2)
    law_min_r2: float = option(0.5, "analyze: below this held-out R² (at the target scale, or in the "
                               "leave-one-scale-out backtest when extrapolating) the report says the fit "
                               "cannot pick a mixture and shows the best observed trials instead", le=1)

    def validate(self) -> None:
        overlap = sorted(set(self.tasks) & set(self.fixed))
        if overlap:
            raise ConfigError(f"{overlap[0]} is both searched (tasks) and held fixed (fixed)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks lists a task twice: {self.tasks}")
        for name, table in (("fixed", self.fixed), ("floors", self.floors)):
            for task, share in table.items():
                if not 0 <= share < 1:
                    raise ConfigError(f"{name}.{task} = {share} must be a share in [0, 1)")
        if sum(self.fixed.values()) >= 1:
            raise ConfigError(f"fixed shares sum to {sum(self.fixed.values()):g}; they must leave room "
                              f"(< 1) for the searched tasks")
        if (self.lr_min == 0) != (self.lr_max == 0):
            raise ConfigError("set both lr_min and lr_max (log-uniform range) or neither")
        if self.lr_min > self.lr_max:
            raise ConfigError(f"lr_min = {self.lr_min} is above lr_max = {self.lr_max}")
        for name, table in (("objective_metrics", self.objective_metrics), ("task_weights", self.task_weights)):
            for key, weight in table.items():
                if weight <= 0:
                    raise ConfigError(f"{name}.{key} = {weight} must be > 0")
        if self.objective == "weighted" and not self.task_weights:
            raise ConfigError("objective = \"weighted\" needs task_weights (task -> weight)")
        if self.mode != "auto" and self.mode != natural_mode(self.objective):
            raise ConfigError(f"mode = {self.mode!r} with objective = {self.objective!r}: that objective is "
                              f"{'minimised' if self.objective == 'loss' else 'maximised'}; leave mode = \"auto\"")
        for task, metric in self.task_metric.items():
            if metric not in OPTION_METRICS:
                raise ConfigError(f"task_metric.{task} = {metric!r}: in-trial scores use {', '.join(OPTION_METRICS)} "
                                  f"(other metrics need generated text; use score_by.{task} = \"loss\")")
        for task, how in self.score_by.items():
            if how not in ("metric", "loss"):
                raise ConfigError(f"score_by.{task} = {how!r} must be \"metric\" or \"loss\"")
        if self.target_scale and not _is_scale_key(self.target_scale):
            raise ConfigError(f"target_scale = {self.target_scale!r} must look like 'vision/language' with "
                              f"scales from {', '.join(SCALES)}")


    @property
    def direction(self) -> str:
        """min or max: `mode`, with auto resolved from the objective."""
        return natural_mode(self.objective) if self.mode == "auto" else self.mode

    @property
    def scored(self) -> bool:
        """Whether trials score every task on the fixed validation subset (all but `loss`)."""
        return self.objective != "loss"


def _is_scale_key(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(p in SCALES for p in parts)
