"""Read the current values of medmix's metrics back, for `medmix metrics` (no Grafana needed).

Two sources:

- the Ray nodes' metrics endpoints, listed in the service-discovery file Ray's head writes
  (`/tmp/ray/prom_metrics_service_discovery.json`, a link to the one in the session dir):
  what every live Ray process reports right now;
- a Prometheus server (`--prometheus http://host:9090`): the last sample of every medmix
  series within a window, so a run that finished a minute ago still shows.

    report = read_metrics(discovery_file="/tmp/ray/prom_metrics_service_discovery.json")
    print(format_report(report))

Values are combined over the processes that report them: counters and histogram buckets are
summed, gauges show the largest value and how many processes reported one.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medmix.observability.metrics import PREFIX, exported_series

DISCOVERY_FILE = "prom_metrics_service_discovery.json"
MEDMIX_PREFIX = PREFIX + "medmix_"
# labels Ray, OpenTelemetry and Prometheus add; medmix's own tags are what a reader wants
BOOKKEEPING_LABELS = {"Component", "WorkerId", "NodeAddress", "SessionName", "Version", "JobId",
                      "otel_scope_name", "otel_scope_schema_url", "otel_scope_version", "instance", "job"}


class MetricsReadError(RuntimeError):
    """No source could be read (missing discovery file, no endpoint answering, bad Prometheus)."""


@dataclass
class Sample:
    name: str  # series name as Prometheus sees it, e.g. ray_medmix_serve_batch_size_bucket
    labels: dict[str, str]
    value: float


@dataclass
class Row:
    """One medmix metric with one set of medmix tags, combined over the processes reporting it."""

    metric: str
    kind: str
    labels: dict[str, str]
    value: float | None = None  # gauge / counter
    count: float | None = None  # histogram
    quantiles: dict[str, float] = field(default_factory=dict)  # histogram: p50, p95
    sources: int = 1

    def value_text(self) -> str:
        if self.kind == "histogram":
            qs = " ".join(f"{k}={_fmt(v)}" for k, v in self.quantiles.items())
            return f"count={_fmt(self.count or 0)}" + (f" {qs}" if qs else "")
        text = _fmt(self.value if self.value is not None else float("nan"))
        if self.metric.endswith("_timestamp_seconds") and self.value:
            text += f" ({_fmt(time.time() - self.value)} s ago)"
        return text + (f"  (max of {self.sources})" if self.kind == "gauge" and self.sources > 1 else "")


@dataclass
class Report:
    source: str
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"source": self.source, "warnings": self.warnings, "metrics": [asdict(r) for r in self.rows]}


# --- sources ------------------------------------------------------------------------------

def default_discovery_file() -> Path:
    """Where a Ray head on this machine writes its service-discovery file."""
    temp = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray"
    link = temp / DISCOVERY_FILE
    return link if link.exists() else temp / "session_latest" / DISCOVERY_FILE


def discovery_targets(path: str | Path) -> list[str]:
    """host:port of every metrics endpoint in a Prometheus file_sd JSON file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no Ray service-discovery file (is a Ray head running on this "
                                "machine with its dashboard? pass --discovery-file PATH or --prometheus URL)")
    try:
        groups = json.loads(path.read_text())
        return [t for g in groups for t in g.get("targets", [])]
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        raise MetricsReadError(f"{path}: not a Prometheus file_sd list of {{'targets': [...]}}: {exc}") from exc


def scrape(targets: list[str], timeout: float = 5.0) -> tuple[list[Sample], list[str]]:
    """medmix samples from each endpoint's /metrics; also the endpoints that did not answer."""
    from prometheus_client.parser import text_string_to_metric_families
    samples, failed = [], []
    for target in targets:
        url = target if "://" in target else f"http://{target}"
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as resp:
                text = resp.read().decode("utf-8", "replace")
        except OSError as exc:
            failed.append(f"{target}: {exc}")
            continue
        # parse only medmix's lines: the rest of Ray's page is large and irrelevant here
        mine = "\n".join(line for line in text.splitlines() if MEDMIX_PREFIX in line) + "\n"
        for family in text_string_to_metric_families(mine):
            for s in family.samples:
                if s.name.startswith(MEDMIX_PREFIX):
                    samples.append(Sample(s.name, dict(s.labels), float(s.value)))
    return samples, failed


def query_prometheus(url: str, window: str = "5m", timeout: float = 15.0) -> list[Sample]:
    """The last sample within `window` of every medmix series Prometheus holds."""
    query = f'{{__name__=~"{MEDMIX_PREFIX}.+"}}[{window}]'
    data = prometheus_api(url, "query", {"query": query}, timeout=timeout)
    out = []
    for series in data["result"]:
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        if series.get("values"):
            out.append(Sample(name, labels, float(series["values"][-1][1])))
    return out


def prometheus_api(url: str, endpoint: str, params: dict[str, str], timeout: float = 15.0) -> dict:
    """GET /api/v1/<endpoint> and return its `data`; errors name the query and the server's reason."""
    full = f"{url.rstrip('/')}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise MetricsReadError(f"{url}: /api/v1/{endpoint} {params} -> HTTP {exc.code}: {detail}") from exc
    except OSError as exc:
        raise MetricsReadError(f"{url}: Prometheus did not answer /api/v1/{endpoint}: {exc}") from exc
    if body.get("status") != "success":
        raise MetricsReadError(f"{url}: /api/v1/{endpoint} {params}: {body.get('error', body)}")
    return body["data"]


# --- combining ----------------------------------------------------------------------------

def summarize(samples: list[Sample]) -> list[Row]:
    """One row per (metric, medmix tags): counters summed, gauges max, histograms merged."""
    specs = exported_series()
    gauges: dict[tuple, list[float]] = defaultdict(list)
    sums: dict[tuple, float] = defaultdict(float)
    buckets: dict[tuple, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[tuple, float] = defaultdict(float)
    kinds: dict[str, str] = {}
    for s in samples:
        spec = specs.get(s.name)
        kind = spec.kind if spec else ("counter" if s.name.endswith("_total") else "gauge")
        family = spec.exported if spec else s.name
        if kind == "histogram" and not s.name.endswith(("_bucket", "_count")):
            continue  # `_sum` is rebuilt from bucket midpoints by Ray: not worth showing
        labels = {k: v for k, v in s.labels.items() if k not in BOOKKEEPING_LABELS and k != "le"}
        key = (family, tuple(sorted(labels.items())))
        kinds[family] = kind
        if kind == "gauge":
            gauges[key].append(s.value)
        elif kind == "counter":
            sums[key] += s.value
        elif s.name.endswith("_bucket"):
            buckets[key][float(s.labels["le"])] += s.value
        else:
            counts[key] += s.value
    rows = [Row(k[0], "gauge", dict(k[1]), value=max(v), sources=len(v)) for k, v in gauges.items()]
    rows += [Row(k[0], "counter", dict(k[1]), value=v) for k, v in sums.items()]
    for key in set(buckets) | set(counts):
        b = buckets.get(key, {})
        total = counts.get(key, b.get(math.inf, 0.0))
        qs = {f"p{int(q * 100)}": histogram_quantile(q, b) for q in (0.5, 0.95)} if total else {}
        rows.append(Row(key[0], "histogram", dict(key[1]), count=total,
                        quantiles={k: v for k, v in qs.items() if v is not None}))
    return sorted(rows, key=lambda r: (r.metric, sorted(r.labels.items())))


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' estimate: linear interpolation inside the bucket holding rank q * count."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):
                return lower  # the top bucket has no upper bound: report its lower edge
            inside = count - below
            return lower + (b - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = b, count
    return lower


def read_metrics(discovery_file: str | Path | None = None, prometheus: str | None = None,
                 window: str = "5m", timeout: float = 5.0) -> Report:
    """Current medmix metrics from Prometheus (when `prometheus` is given) or the Ray nodes."""
    if prometheus:
        samples = query_prometheus(prometheus, window=window, timeout=max(timeout, 15.0))
        return Report(f"Prometheus {prometheus} (last sample within {window})", summarize(samples))
    path = Path(discovery_file) if discovery_file else default_discovery_file()
    targets = discovery_targets(path)
    if not targets:
        raise MetricsReadError(f"{path}: lists no metrics endpoints (is the Ray head up?)")
    samples, failed = scrape(targets, timeout=timeout)
    if len(failed) == len(targets):
        raise MetricsReadError(f"{path}: no metrics endpoint answered: " + "; ".join(failed))
    return Report(f"{len(targets) - len(failed)} Ray metrics endpoints from {path}", summarize(samples),
                  warnings=[f"endpoint did not answer: {f}" for f in failed])


def format_report(report: Report) -> str:
    """An aligned table: metric, medmix tags, value."""
    lines = [f"medmix metrics from {report.source}"]
    lines += [f"warning: {w}" for w in report.warnings]
    if not report.rows:
        lines.append("no medmix metrics reported yet (nothing trained or served on this cluster "
                     "since its processes started?)")
        return "\n".join(lines)
    table = [(r.metric, " ".join(f"{k}={v}" for k, v in sorted(r.labels.items())), r.value_text())
             for r in report.rows]
    w0 = max(len("METRIC"), *(len(t[0]) for t in table))
    w1 = max(len("TAGS"), *(len(t[1]) for t in table))
    lines.append(f"{'METRIC':<{w0}}  {'TAGS':<{w1}}  VALUE")
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in table]
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.6g}"
