"""The sweep's search space: every sample is a valid mixture with floors and fixed tasks held."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medmix.config import ConfigError, load_config
from medmix.tune.space import (LANGUAGE_KEY, LR_KEY, MIX_PREFIX, SearchSpace, apply_params, build_space,
                               mixture_from_params, sample_mixtures, tune_space)

TASKS = ["medqa", "pubmedqa", "cxr_classify", "derm_pad", "mimic3_summary"]


def sweep_cfg(*overrides: str):
    return load_config("debug", list(overrides)).sweep


@st.composite
def spaces(draw):
    """A random space: 1-5 searched tasks, 0-2 fixed, floors that leave room."""
    k = draw(st.integers(1, 5))
    names = [f"t{i}" for i in range(k + 2)]
    searched, rest = names[:k], names[k:]
    n_fixed = draw(st.integers(0, 2))
    fixed_total = draw(st.floats(0.0, 0.6)) if n_fixed else 0.0
    fixed = {t: fixed_total / n_fixed for t in rest[:n_fixed]}
    floor_budget = draw(st.floats(0.0, 0.99)) * (1 - fixed_total)
    raw = draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k))
    total = sum(raw) or 1.0
    floors = {t: floor_budget * r / total for t, r in zip(searched, raw) if r > 0}
    simplex = draw(st.sampled_from(["exp", "softmax"]))
    return SearchSpace(tasks=searched, fixed=fixed, floors=floors, simplex=simplex)


def raw_params(space: SearchSpace, values: list[float]) -> dict[str, float]:
    lo, hi = (1e-6, 1.0) if space.simplex == "exp" else (-space.logit_range, space.logit_range)
    return {MIX_PREFIX + t: lo + (hi - lo) * v for t, v in zip(space.tasks, values)}


@settings(max_examples=300, deadline=None)
@given(space=spaces(), values=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5))
def test_every_sample_is_a_mixture_with_floors_and_fixed_shares(space, values):
    shares = mixture_from_params(space, raw_params(space, values))
    assert set(shares) == set(space.tasks) | set(space.fixed)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(v >= 0 for v in shares.values())
    for t in space.tasks:
        assert shares[t] >= space.floors.get(t, 0.0) - 1e-12
    for t, v in space.fixed.items():
        assert shares[t] == v


@settings(max_examples=100, deadline=None)
@given(space=spaces(), values=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5))
def test_mapping_is_deterministic_and_scale_free(space, values):
    params = raw_params(space, values)
    shares = mixture_from_params(space, params)
    assert mixture_from_params(space, dict(params)) == shares
    if len(space.tasks) > 1 and space.simplex == "softmax":   # softmax ignores a common shift
        shifted = {k: v - 0.5 for k, v in params.items()}
        assert mixture_from_params(space, shifted) == pytest.approx(shares)


def test_uniform_params_give_dirichlet_1_shares():
    """exp spacing of uniform params = Dirichlet(1): mean share 1/k, variance (k-1)/(k^2 (k+1))."""
    space = SearchSpace(tasks=["a", "b", "c", "d"])
    x = sample_mixtures(space, 40000, seed=1)
    k = 4
    assert x.mean(axis=0) == pytest.approx([1 / k] * k, abs=0.01)
    assert x.var(axis=0) == pytest.approx([(k - 1) / (k * k * (k + 1))] * k, rel=0.05)


def test_sample_mixtures_respects_floors_and_fixed():
    space = SearchSpace(tasks=["a", "b"], fixed={"c": 0.2}, floors={"a": 0.3})
    x = sample_mixtures(space, 1000, seed=0)
    assert space.all_tasks == ["a", "b", "c"]
    assert np.allclose(x.sum(axis=1), 1.0)
    assert (x[:, 0] >= 0.3 - 1e-12).all()
    assert np.allclose(x[:, 2], 0.2)


def test_build_space_resolves_tasks_floors_and_dimensions():
    space = build_space(sweep_cfg('sweep.fixed={mimic3_summary=0.1}', "sweep.floor=0.05",
                                  'sweep.floors={medqa=0.2}', 'sweep.language_scales=["debug","tiny"]',
                                  "sweep.lr_min=1e-4", "sweep.lr_max=1e-2"), TASKS)
    assert space.tasks == ["medqa", "pubmedqa", "cxr_classify", "derm_pad"]
    assert space.floors == {"medqa": 0.2, "pubmedqa": 0.05, "cxr_classify": 0.05, "derm_pad": 0.05}
    assert space.free == pytest.approx(1 - 0.1 - 0.35)
    assert space.param_names() == [MIX_PREFIX + t for t in space.tasks] + [LANGUAGE_KEY, LR_KEY]
    assert set(tune_space(space)) == set(space.param_names())
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_build_space_rejects_what_cannot_be_searched():
    with pytest.raises(ConfigError, match="not in the mixture"):
        build_space(sweep_cfg('sweep.tasks=["nope", "medqa"]'), TASKS)
    with pytest.raises(ConfigError, match="exceed 1"):
        build_space(sweep_cfg('sweep.tasks=["medqa", "pubmedqa"]', "sweep.floor=0.6"), TASKS)
    with pytest.raises(ConfigError, match="nothing to search"):
        build_space(sweep_cfg('sweep.tasks=["medqa"]'), TASKS)
    with pytest.raises(ConfigError, match="both searched"):
        sweep_cfg('sweep.tasks=["medqa"]', "sweep.fixed={medqa=0.1}")
    with pytest.raises(ConfigError, match="lr_min"):
        sweep_cfg("sweep.lr_min=1e-3")


def test_apply_params_writes_an_explicit_mixture_scales_and_lr(tmp_path):
    base = load_config("debug", [f'data.root="{tmp_path}"'])
    space = build_space(sweep_cfg('sweep.tasks=["medqa","cxr_classify"]', "sweep.fixed={pubmedqa=0.2}",
                                  'sweep.vision_scales=["debug"]', 'sweep.language_scales=["debug","tiny"]',
                                  "sweep.lr_min=1e-4", "sweep.lr_max=1e-2"), TASKS)
    params = {"mix.medqa": 0.5, "mix.cxr_classify": 0.25, LANGUAGE_KEY: "tiny", LR_KEY: 3e-3}
    cfg = apply_params(base, space, params)
    assert cfg.mixture.strategy == "explicit"
    assert cfg.mixture.tasks == ["cxr_classify", "medqa", "pubmedqa"]
    assert cfg.mixture.weights == mixture_from_params(space, params)
    assert cfg.mixture.weights["pubmedqa"] == 0.2
    # -log(0.5) : -log(0.25) = 1 : 2 of the free 0.8
    assert cfg.mixture.weights["medqa"] == pytest.approx(0.8 / 3)
    assert cfg.mixture.floor == 0.0 and cfg.mixture.cap == 1.0
    assert (cfg.model.vision_scale, cfg.model.language_scale, cfg.train.lr) == ("debug", "tiny", 3e-3)
    assert base.mixture.strategy == "medpalm"   # the base config is untouched


def test_shared_points_train_the_same_mixtures_at_every_scale():
    from medmix.tune.space import VISION_KEY, shared_points
    for simplex in ("exp", "softmax"):
        space = SearchSpace(tasks=["a", "b", "c"], fixed={"d": 0.1}, floors={"a": 0.05}, simplex=simplex,
                            vision_scales=["debug", "tiny"], language_scales=["debug", "tiny"], lr_range=(1e-4, 1e-2))
        points = shared_points(space, 3, seed=0)
        assert len(points) == 3 * 4
        assert {(p[VISION_KEY], p[LANGUAGE_KEY]) for p in points} == {(v, w) for v in ("debug", "tiny")
                                                                    for w in ("debug", "tiny")}
        assert all(p[LR_KEY] == pytest.approx(1e-3) for p in points)
        mixes = [mixture_from_params(space, p) for p in points]
        # four scales per mixture, each with exactly the same shares
        by_mix = {tuple(round(m[t], 9) for t in sorted(m)) for m in mixes}
        assert len(by_mix) == 3
        first = mixes[0]   # the stratified mixture: the free share split equally
        free = 1 - 0.1 - 0.05
        assert first["a"] == pytest.approx(0.05 + free / 3) and first["b"] == pytest.approx(free / 3)
        assert first["d"] == pytest.approx(0.1)
    assert shared_points(space, 3, seed=0) == shared_points(space, 3, seed=0)
    assert shared_points(space, 0) == [] and shared_points(SearchSpace(tasks=["a"], vision_scales=["debug", "tiny"]), 2) == []


def test_shared_mixtures_must_fit_in_the_trial_budget():
    from medmix.tune.sweep import check_shared
    cfg = load_config("sweep_debug", ["sweep.shared_mixtures=3", 'sweep.vision_scales=["debug", "tiny"]',
                                      "sweep.num_samples=5"])
    space = build_space(cfg.sweep, TASKS)
    with pytest.raises(ConfigError, match="shared_mixtures = 3 at 2 scales is 6 trials"):
        check_shared(cfg, space)
    cfg.sweep.num_samples = 6
    check_shared(cfg, space)
