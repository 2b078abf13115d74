"""The PromQL lexer that names the dashboards' metrics, and how `medmix metrics` combines samples."""

from __future__ import annotations

import json
import math

import pytest

from medmix.cli import main
from medmix.observability.metrics import ALL_METRICS, BY_NAME, exported_series
from medmix.observability.promql import PromQLError, metric_names, render
from medmix.observability.query import Sample, discovery_targets, format_report, histogram_quantile, read_metrics, summarize


@pytest.mark.parametrize("expr, names", [
    ("ray_medmix_train_step", {"ray_medmix_train_step"}),
    ('max by (run, task) (ray_medmix_train_task_loss{run=~"$run", task=~"$task"})', {"ray_medmix_train_task_loss"}),
    ('sum(rate(a_total{x="by (y)"}[5m])) by (le) / ignoring (le) group_left (z) b', {"a_total", "b"}),
    ("histogram_quantile(0.95, sum without (WorkerId) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
    ("time() - min(ts and on (model_version) (v == 1))", {"ts", "v"}),
    ('(sum(rate(r_total{status!~"2.."}[1m])) or vector(0)) / sum(rate(r_total[1m] offset 5m))', {"r_total"}),
    ('{__name__="only_by_name", job="ray"}', {"only_by_name"}),
    ("topk(3, x) > bool 2 unless y", {"x", "y"}),
    ("1e3 * 0.5 + Inf", set()),
    ("max_over_time(g[10m:30s]) # a comment naming fake_metric\n + 1", {"g"}),
    ("sum by(le)(rate(x_bucket[${__rate_interval}]))", {"x_bucket"}),
])
def test_metric_names(expr, names):
    assert metric_names(expr) == names


def test_unreadable_queries_are_errors_not_silence():
    with pytest.raises(PromQLError, match="pattern"):
        metric_names('{__name__=~"ray_medmix_.+"}')
    with pytest.raises(PromQLError, match="unbalanced"):
        metric_names("sum(rate(x[5m])")
    with pytest.raises(PromQLError, match="unterminated"):
        metric_names('x{a="b}')


def test_render_fills_grafana_variables():
    expr = 'rate(x{run=~"$run", t=~"${task:regex}"}[$__rate_interval]) [[legacy]]'
    assert render(expr) == 'rate(x{run=~".*", t=~".*"}[1m]) .*'
    assert render(expr, {"run": "debug"}).startswith('rate(x{run=~"debug"')


def test_exported_names_follow_rays_exporter():
    series = exported_series()
    assert BY_NAME["medmix_serve_requests"].exported == "ray_medmix_serve_requests_total"
    assert {"ray_medmix_serve_batch_size_bucket", "ray_medmix_serve_batch_size_sum",
            "ray_medmix_serve_batch_size_count", "ray_medmix_train_loss"} <= set(series)
    assert all(m.name.startswith("medmix_") and not m.name.endswith("_total") for m in ALL_METRICS)
    assert [m.name for m in ALL_METRICS if m.gpu_only] == ["medmix_train_mfu"]


def test_histogram_quantile_interpolates_like_prometheus():
    # 10 observations: 4 in (0, 1], 4 in (1, 2], 2 in (2, +Inf)
    buckets = {1.0: 4.0, 2.0: 8.0, math.inf: 10.0}
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.6, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.95, buckets) == 2.0  # in the open top bucket: its lower edge
    assert histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None


def test_summarize_combines_processes_and_drops_rays_labels():
    ray_labels = {"Component": "core_worker", "SessionName": "s", "otel_scope_name": "x"}
    samples = [
        Sample("ray_medmix_serve_requests_total", {**ray_labels, "WorkerId": "a", "status": "200", "task": "t"}, 3),
        Sample("ray_medmix_serve_requests_total", {**ray_labels, "WorkerId": "b", "status": "200", "task": "t"}, 2),
        Sample("ray_medmix_serve_model_version", {**ray_labels, "WorkerId": "a", "model_version": "3"}, 1),
        Sample("ray_medmix_serve_model_version", {**ray_labels, "WorkerId": "b", "model_version": "3"}, 1),
        *[Sample("ray_medmix_serve_batch_size_bucket", {**ray_labels, "WorkerId": w, "le": le, "model_version": "3"}, c)
          for w in "ab" for le, c in (("1.0", 1), ("2.0", 2), ("+Inf", 2))],
        Sample("ray_medmix_serve_batch_size_count", {**ray_labels, "WorkerId": "a", "model_version": "3"}, 2),
        Sample("ray_medmix_serve_batch_size_count", {**ray_labels, "WorkerId": "b", "model_version": "3"}, 2),
        Sample("ray_medmix_serve_batch_size_sum", {**ray_labels, "WorkerId": "b", "model_version": "3"}, 2.5),
    ]
    rows = {r.metric: r for r in summarize(samples)}
    assert rows["ray_medmix_serve_requests_total"].value == 5 and rows["ray_medmix_serve_requests_total"].labels == {
        "status": "200", "task": "t"}
    assert rows["ray_medmix_serve_model_version"].value == 1 and rows["ray_medmix_serve_model_version"].sources == 2
    batch = rows["ray_medmix_serve_batch_size"]
    assert batch.count == 4 and batch.quantiles["p50"] == pytest.approx(1.0)
    text = format_report(type("R", (), {"source": "test", "rows": list(rows.values()), "warnings": []})())
    assert "ray_medmix_serve_batch_size" in text and "count=4 p50=1" in text and "(max of 2)" in text


def test_discovery_file_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "prom_metrics_service_discovery.json"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        discovery_targets(missing)
    assert main(["metrics", "--discovery-file", str(missing)]) == 1
    assert str(missing) in capsys.readouterr().err
    missing.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": ["127.0.0.1:9", "127.0.0.1:1"]}]))
    assert discovery_targets(missing) == ["127.0.0.1:9", "127.0.0.1:1"]
    # nothing listens on the discard/tcpmux ports: every endpoint fails, and the error says so
    assert main(["metrics", "--discovery-file", str(missing), "--timeout", "2"]) == 1
    assert "no metrics endpoint answered" in capsys.readouterr().err
    missing.write_text("{not json")
    with pytest.raises(Exception, match="file_sd"):
        read_metrics(discovery_file=missing)


def test_metrics_verb_is_listed_and_explains_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["metrics", "--help"])
    out = capsys.readouterr().out
    for option in ("--discovery-file", "--prometheus", "--window", "--match", "--timeout", "--json"):
        assert option in out
