"""The sweep's search space: mixture shares on the simplex, model scales, learning rate.

Optuna samples box-shaped spaces well and simplices badly, so a mixture is sampled as one
independent number per searched task and mapped onto the simplex deterministically:

  exp:      u_t ~ U(0, 1),  e_t = -log u_t,  p = e / sum(e)     (Dirichlet(1) when u is uniform)
  softmax:  z_t ~ U(-R, R), p = softmax(z)

Each searched task then gets `floor_t + free * p_t`, where `free` is what the fixed tasks and
the floors leave (`1 - sum(fixed) - sum(floors)`), and every fixed task keeps its share. So every
sampled point is a valid mixture, and the same params always give the same mixture.

    space = build_space(cfg, store_tasks=["medqa", "cxr_classify", ...])
    params = {"mix.medqa": 0.3, "mix.cxr_classify": 0.8, "model.language_scale": "tiny"}
    trial_cfg = apply_params(cfg, space, params)    # explicit mixture + scale + lr overrides
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from medmix.config import config_from_dict, to_dict
from medmix.options import ConfigError

if TYPE_CHECKING:
    from medmix.config import MedmixConfig
    from medmix.model.config import ModelConfig

MIX_PREFIX = "mix."
VISION_KEY = "model.vision_scale"
LANGUAGE_KEY = "model.language_scale"
LR_KEY = "train.lr"
U_MIN = 1e-6          # -log(u) stays finite; the largest share ratio a sample can have is ~1e6
U_MAX = 1.0 - 1e-9    # -log(u) stays > 0, so the shares never all vanish


@dataclass
class SearchSpace:
    """A resolved search space: JSON-serialisable, logged on the sweep's parent run."""

    tasks: list[str]
    """Searched tasks, in a fixed order."""
    fixed: dict[str, float] = field(default_factory=dict)
    """Task -> share held fixed."""
    floors: dict[str, float] = field(default_factory=dict)
    """Searched task -> minimum share (0 when absent)."""
    simplex: str = "exp"
    logit_range: float = 3.0
    vision_scales: list[str] = field(default_factory=list)
    language_scales: list[str] = field(default_factory=list)
    lr_range: tuple[float, float] | None = None

    @property
    def free(self) -> float:
        """The share the searched tasks split among themselves beyond their floors."""
        return 1.0 - sum(self.fixed.values()) - sum(self.floors.get(t, 0.0) for t in self.tasks)

    @property
    def all_tasks(self) -> list[str]:
        return sorted(set(self.tasks) | set(self.fixed))

    def param_names(self) -> list[str]:
        names = [MIX_PREFIX + t for t in self.tasks] if len(self.tasks) > 1 else []
        if len(self.vision_scales) > 1:
            names.append(VISION_KEY)
        if len(self.language_scales) > 1:
            names.append(LANGUAGE_KEY)
        if self.lr_range:
            names.append(LR_KEY)
        return names

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lr_range"] = list(self.lr_range) if self.lr_range else None
        out["free"] = self.free
        out["params"] = self.param_names()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchSpace":
        data = {k: v for k, v in data.items() if k not in ("free", "params")}
        if data.get("lr_range"):
            data["lr_range"] = tuple(data["lr_range"])
        return cls(**data)


def build_space(sweep: Any, mixture_tasks: Sequence[str]) -> SearchSpace:
    """Resolve `[sweep]` against the tasks the mixture can use (the store's train tasks).

    Args:
        sweep: the `SweepConfig`.
        mixture_tasks: tasks the mixture may train on (`mixture.tasks`, else the store's tasks
            with train rows, minus `mixture.exclude`).
    """
    available = list(dict.fromkeys(mixture_tasks))
    for task in list(sweep.fixed) + list(sweep.tasks) + list(sweep.floors):
        if task not in available:
            raise ConfigError(f"sweep: task {task!r} is not in the mixture; available: {', '.join(available)}")
    searched = list(sweep.tasks) or [t for t in available if t not in sweep.fixed]
    if not searched:
        raise ConfigError("sweep: no task left to search (every task is held fixed)")
    floors = {t: float(sweep.floors.get(t, sweep.floor)) for t in searched}
    floors = {t: v for t, v in floors.items() if v > 0}
    lr = (float(sweep.lr_min), float(sweep.lr_max)) if sweep.lr_max > 0 else None
    if lr and lr[0] == lr[1]:
        lr = None
    space = SearchSpace(tasks=searched, fixed={t: float(v) for t, v in sweep.fixed.items()}, floors=floors,
                        simplex=sweep.simplex, logit_range=float(sweep.logit_range),
                        vision_scales=list(dict.fromkeys(sweep.vision_scales)),
                        language_scales=list(dict.fromkeys(sweep.language_scales)), lr_range=lr)
    if space.free < -1e-12:
        raise ConfigError(f"sweep: fixed shares ({sum(space.fixed.values()):g}) plus floors "
                          f"({sum(floors.values()):g}) exceed 1")
    if not space.param_names():
        raise ConfigError("sweep: nothing to search — give at least two searched tasks, two scales "
                          "or an lr range")
    return space


def tune_space(space: SearchSpace) -> dict[str, Any]:
    """The Ray Tune param_space (OptunaSearch converts it to Optuna distributions)."""
    from ray import tune
    out: dict[str, Any] = {}
    for name in space.param_names():
        if name.startswith(MIX_PREFIX):
            out[name] = (tune.uniform(U_MIN, 1.0) if space.simplex == "exp"
                         else tune.uniform(-space.logit_range, space.logit_range))
        elif name == VISION_KEY:
            out[name] = tune.choice(space.vision_scales)
        elif name == LANGUAGE_KEY:
            out[name] = tune.choice(space.language_scales)
        elif name == LR_KEY:
            out[name] = tune.loguniform(*space.lr_range)
    return out


def shared_mixtures(space: SearchSpace, n: int, seed: int = 0) -> list[np.ndarray]:
    """`n` mixtures of the searched tasks (each summing to 1 before floors and fixed shares):
    the stratified one (equal shares) first, then seeded Dirichlet(1) draws."""
    k = len(space.tasks)
    if n <= 0 or k < 2:
        return []
    rng = np.random.default_rng([seed, 7919])
    return [np.full(k, 1.0 / k), *rng.dirichlet(np.ones(k), size=n - 1)]


def shared_points(space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Params that train each of `shared_mixtures(space, n)` at every swept scale (and the
    geometric middle of a searched lr range): the sweep runs them first, so that rank
    invariance is measured on real runs of the same mixtures, not on fitted laws."""
    points = []
    for p in shared_mixtures(space, n, seed):
        if space.simplex == "exp":   # e = -log u = p: normalised, that is p itself
            raw = {MIX_PREFIX + t: float(np.exp(-v)) for t, v in zip(space.tasks, p)}
        else:                        # softmax(log p) = p
            raw = {MIX_PREFIX + t: float(np.clip(np.log(v), -space.logit_range, space.logit_range))
                   for t, v in zip(space.tasks, p)}
        for vision in (space.vision_scales if len(space.vision_scales) > 1 else [None]):
            for language in (space.language_scales if len(space.language_scales) > 1 else [None]):
                point = dict(raw)
                if vision is not None:
                    point[VISION_KEY] = vision
                if language is not None:
                    point[LANGUAGE_KEY] = language
                if space.lr_range:
                    point[LR_KEY] = float(np.sqrt(space.lr_range[0] * space.lr_range[1]))
                points.append(point)
    return points


def mixture_from_params(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, float]:
    """Sampled params -> task shares summing to 1 (floors and fixed shares respected)."""
    tasks = space.tasks
    if len(tasks) == 1:
        p = np.ones(1)
    else:
        raw = np.array([float(params[MIX_PREFIX + t]) for t in tasks], dtype=np.float64)
        p = simplex_point(raw, space.simplex)
    free = max(space.free, 0.0)
    shares = {t: space.floors.get(t, 0.0) + free * float(p[i]) for i, t in enumerate(tasks)}
    shares.update(space.fixed)
    return {t: shares[t] for t in sorted(shares)}


def simplex_point(raw: np.ndarray, simplex: str) -> np.ndarray:
    """Map independent coordinates onto the probability simplex (rows if 2-D)."""
    raw = np.asarray(raw, dtype=np.float64)
    if simplex == "exp":
        e = -np.log(np.clip(raw, U_MIN, U_MAX))
    elif simplex == "softmax":
        e = np.exp(raw - raw.max(axis=-1, keepdims=True))
    else:
        raise ValueError(f"unknown simplex mapping {simplex!r}")
    return e / e.sum(axis=-1, keepdims=True)


def sample_mixtures(space: SearchSpace, n: int, seed: int = 0) -> np.ndarray:
    """`n` mixtures drawn like the sweep draws them (uniform raw params) -> (n, len(all_tasks))."""
    rng = np.random.default_rng(seed)
    k = len(space.tasks)
    if space.simplex == "exp":
        raw = rng.uniform(U_MIN, 1.0, size=(n, k))
    else:
        raw = rng.uniform(-space.logit_range, space.logit_range, size=(n, k))
    p = simplex_point(raw, space.simplex) if k > 1 else np.ones((n, 1))
    floors = np.array([space.floors.get(t, 0.0) for t in space.tasks])
    searched = floors + max(space.free, 0.0) * p
    columns = space.all_tasks
    out = np.empty((n, len(columns)))
    for j, task in enumerate(columns):
        out[:, j] = searched[:, space.tasks.index(task)] if task in space.tasks else space.fixed[task]
    return out


def apply_params(base: Any, space: SearchSpace, params: Mapping[str, Any]) -> Any:
    """A trial's config: `base` with the sampled mixture, scales and lr written in.

    The mixture becomes `strategy = "explicit"` over exactly the searched + fixed tasks, with
    the mixture's own floor/cap turned off (the sweep's floors already hold), so the run
    trains on the mixture the sweep recorded.
    """
    data = to_dict(base)
    shares = mixture_from_params(space, params)
    data["mixture"].update(strategy="explicit", weights=shares, tasks=sorted(shares), floor=0.0, cap=1.0)
    if VISION_KEY in params:
        data["model"]["vision_scale"] = str(params[VISION_KEY])
    elif len(space.vision_scales) == 1:
        data["model"]["vision_scale"] = space.vision_scales[0]
    if LANGUAGE_KEY in params:
        data["model"]["language_scale"] = str(params[LANGUAGE_KEY])
    elif len(space.language_scales) == 1:
        data["model"]["language_scale"] = space.language_scales[0]
    if LR_KEY in params:
        data["train"]["lr"] = float(params[LR_KEY])
    return config_from_dict(data)


def scale_key(model_cfg: ModelConfig) -> str:
    """'vision/language' scale of a model config (empty per-half scales fall back to `scale`)."""
    return f"{model_cfg.vision_scale or model_cfg.scale}/{model_cfg.language_scale or model_cfg.scale}"


def trial_record(cfg: MedmixConfig, space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a child run records as params: shares, scales, lr and the raw sampled values."""
    shares = mixture_from_params(space, params)
    out: dict[str, Any] = {f"sweep.share.{t}": round(v, 6) for t, v in shares.items()}
    out["sweep.scale"] = scale_key(cfg.model)
    out["sweep.vision_scale"] = cfg.model.vision_scale or cfg.model.scale
    out["sweep.language_scale"] = cfg.model.language_scale or cfg.model.scale
    out["sweep.lr"] = cfg.train.lr
    out.update({f"sweep.param.{k}": v for k, v in params.items()})
    return out
