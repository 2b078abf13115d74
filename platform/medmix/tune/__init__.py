"""medmix.tune: sweep task-mixture ratios and model scales, and learn mixture laws from the sweep.

  config.py    `[sweep]`: what is searched (simplex of shares, floors, fixed tasks, scales, lr), how
               (Optuna sampler, ASHA), the objective, the champion alias, the law
  space.py     the search space and the deterministic map from sampled params to a trial's config
  sweep.py     `run_sweep(cfg)`: Ray Tune over Ray Train runs, MLflow parent/child runs, resume
  champion.py  export + register the best trial; move `champion` only if it wins
  law.py       RegMix-style regression mixture -> loss per scale, rank invariance across scales
  report.py    `medmix sweep analyze`: plots, summary.md, predicted best mixture
  runs.py      a sweep read back from MLflow (child runs, validation histories)
"""
