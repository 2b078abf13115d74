"""Prometheus metrics for training and serving, and the readers behind `medmix metrics`.

- `metrics`: the medmix metric definitions (through `ray.util.metrics`) and the functions the
  train loop and the Serve app call to record them.
- `query`: read current values back, from the nodes' metrics endpoints or from Prometheus.
- `promql`: metric names named by the dashboards' PromQL (what the tests check is exported).
"""
