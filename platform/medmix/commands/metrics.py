"""`medmix metrics`: print the current values of medmix's metrics from a running cluster.

    medmix metrics                                  # the Ray head on this machine
    medmix metrics --discovery-file /tmp/ray/session_latest/prom_metrics_service_discovery.json
    medmix metrics --prometheus http://prometheus:9090 --window 15m --match serve
"""

from __future__ import annotations

import argparse
import json
import sys

from medmix.observability.query import MetricsReadError, format_report, read_metrics


def add_parser(sub) -> None:
    p = sub.add_parser(
        "metrics", help="print current medmix training and serving metrics (no Grafana needed)",
        description="Print the current value of every medmix metric (training: loss per task, "
                    "tokens/s, MFU, mixture, data wait, checkpoints; serving: requests, latency, "
                    "batch size, model version). By default it reads the metrics endpoints of every "
                    "Ray node listed in the service-discovery file the Ray head on this machine "
                    "writes; with --prometheus it asks a Prometheus server instead, which also "
                    "remembers processes that have finished (e.g. a completed training run).")
    src = p.add_argument_group("source (one of)")
    src.add_argument("--discovery-file", metavar="PATH",
                     help="Ray's Prometheus service-discovery JSON (default: "
                          "$RAY_TMPDIR or /tmp, then ray/prom_metrics_service_discovery.json)")
    src.add_argument("--prometheus", metavar="URL",
                     help="read from this Prometheus server (e.g. http://127.0.0.1:9090) instead of the nodes")
    p.add_argument("--window", default="5m", metavar="DURATION",
                   help="with --prometheus: show the last sample within this PromQL duration (default: 5m)")
    p.add_argument("--match", metavar="TEXT", default="",
                   help="only metrics whose name contains TEXT (e.g. serve, task_loss)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per-endpoint HTTP timeout (default: 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:

    if args.discovery_file and args.prometheus:
        raise ValueError("give either --discovery-file or --prometheus, not both")
    try:
        report = read_metrics(discovery_file=args.discovery_file, prometheus=args.prometheus,
                              window=args.window, timeout=args.timeout)
    except MetricsReadError as exc:
        print(f"medmix: error: {exc}", file=sys.stderr)
        return 1
    if args.match:
        report.rows = [r for r in report.rows if args.match in r.metric]
    print(json.dumps(report.to_json(), indent=1) if args.json else format_report(report))
    return 0
