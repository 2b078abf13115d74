"""The Grafana dashboards: valid against Grafana's classic dashboard model, wired to a
Prometheus datasource variable, and querying only metrics medmix exports.

The JSON schema beside this file is written from Grafana's dashboard kind; the checks after
it are what the schema cannot say (variables used are defined, panels do not overlap, uids
do not collide with Ray's own dashboards, PromQL names exported metrics only).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from medmix.observability.metrics import ALL_METRICS, exported_series
from medmix.observability.promql import dashboard_queries, dashboard_variable_queries, metric_names

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((ROOT / "dashboards").glob("medmix-*.json"))
SCHEMA = json.loads((Path(__file__).with_name("grafana_dashboard.schema.json")).read_text())
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
                    "__from", "__to", "__dashboard", "__name", "__org", "__user", "timeFilter"}
VARIABLE_USE = re.compile(r"\$\{([a-zA-Z0-9_]+)(?::[^}]*)?\}|\$([a-zA-Z0-9_]+)|\[\[([a-zA-Z0-9_]+)\]\]")


def problems(board: dict) -> list[str]:
    """Everything wrong with one dashboard, schema first; empty when it is good."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    found = [f"schema: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(board)]
    if found:
        return found
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables.get("datasource")
    if not ds or ds["type"] != "datasource" or ds["query"] != "prometheus":
        found.append("no Prometheus datasource variable named 'datasource'")
    panels = [p for p in board["panels"]] + [c for p in board["panels"] for c in p.get("panels", [])]
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        found.append(f"panel ids repeat: {sorted(ids)}")
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        if g["x"] + g["w"] > 24:
            found.append(f"panel {p['title']!r} runs past column 24")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    found.append(f"panel {p['title']!r} overlaps {cells[(x, y)]!r}")
                    break
                cells[(x, y)] = p["title"]
            else:
                continue
            break
        if p["type"] == "row":
            continue
        if p["datasource"] != DATASOURCE:
            found.append(f"panel {p['title']!r} datasource is {p['datasource']}, not the $datasource variable")
        refs = [t["refId"] for t in p["targets"]]
        if len(refs) != len(set(refs)):
            found.append(f"panel {p['title']!r} repeats refIds {refs}")
        for t in p["targets"]:
            if t["datasource"] != DATASOURCE:
                found.append(f"panel {p['title']!r} target {t['refId']} datasource is {t['datasource']}")
            for m in VARIABLE_USE.finditer(t["expr"]):
                name = next(g for g in m.groups() if g)
                if name not in variables and name not in GRAFANA_BUILTINS:
                    found.append(f"panel {p['title']!r} target {t['refId']} uses undefined variable ${name}")
    for v in variables.values():
        if v["type"] == "query" and v["datasource"] != DATASOURCE:
            found.append(f"variable {v['name']!r} does not query the $datasource variable")
    return found


def unexported_metrics(path: Path) -> dict[str, str]:
    """Metrics the dashboard's PromQL names that medmix never exports -> where."""
    exported = exported_series()
    out = {}
    for q in dashboard_queries(path) + dashboard_variable_queries(path):
        names = metric_names(q.expr)
        if not names:
            out[f"(nothing) in {q.expr!r}"] = q.panel
        for name in names - set(exported):
            out[name] = q.panel
    return out


def test_both_dashboards_ship():
    assert [p.name for p in DASHBOARDS] == ["medmix-serving.json", "medmix-training.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_grafana_json_with_datasource_variable(path):
    board = json.loads(path.read_text())
    assert problems(board) == []
    assert sum(len(p.get("targets", [])) for p in board["panels"]) >= 8


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_only_metrics_medmix_exports(path):
    assert unexported_metrics(path) == {}


def test_every_medmix_metric_is_on_a_dashboard():
    named = set().union(*(metric_names(q.expr) for p in DASHBOARDS for q in dashboard_queries(p)))
    for spec in ALL_METRICS:
        shown = spec.series[0] if spec.kind != "histogram" else f"ray_{spec.name}_bucket"
        assert shown in named, f"{spec.name} is exported but no panel shows it"


def test_uids_do_not_collide_with_rays_dashboards():
    import ray.dashboard.modules.metrics.dashboards as ray_dashboards
    ray_uids = {json.loads(p.read_text()).get("uid") for p in Path(ray_dashboards.__file__).parent.glob("*.json")}
    assert "rayTrainDashboard" in ray_uids  # the set is real
    ours = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(ours)) == len(ours) and not set(ours) & ray_uids


def test_schema_and_checks_reject_broken_dashboards():
    good = json.loads(DASHBOARDS[0].read_text())

    def broken(edit) -> list[str]:
        board = copy.deepcopy(good)
        edit(board)
        return problems(board)

    first = next(i for i, p in enumerate(good["panels"]) if p["type"] != "row")
    assert any("targets" in p for p in broken(lambda b: b["panels"][first].pop("targets")))
    assert any("refId" in p for p in broken(lambda b: b["panels"][first]["targets"][0].pop("refId")))
    assert any("gridPos/w" in p for p in broken(lambda b: b["panels"][first]["gridPos"].update(w=30)))
    assert any("not the $datasource" in p
               for p in broken(lambda b: b["panels"][first].update(datasource={"type": "prometheus", "uid": "prom1"})))
    assert any("datasource variable" in p for p in broken(
        lambda b: b["templating"].update(list=[v for v in b["templating"]["list"] if v["name"] != "datasource"])))
    assert any("overlaps" in p for p in broken(
        lambda b: b["panels"][first + 1]["gridPos"].update(b["panels"][first]["gridPos"])))
    assert any("undefined variable $nosuch" in p for p in broken(
        lambda b: b["panels"][first]["targets"][0].update(expr='ray_medmix_train_step{run=~"$nosuch"}')))
    assert any("schemaVersion" in p for p in broken(lambda b: b.pop("schemaVersion")))


def test_a_query_naming_an_unexported_metric_is_caught(tmp_path):
    board = json.loads(DASHBOARDS[1].read_text())
    panel = next(p for p in board["panels"] if p["type"] != "row")
    panel["targets"].append({"refId": "Z", "datasource": DATASOURCE, "expr":
                             'sum by (run) (rate(ray_medmix_train_tokens_total{run=~"$run"}[$__rate_interval]))'})
    path = tmp_path / "medmix-training.json"
    path.write_text(json.dumps(board))
    assert unexported_metrics(path) == {"ray_medmix_train_tokens_total": panel["title"]}


def test_prometheus_config_scrapes_rays_service_discovery_file():
    config = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ray"]
    assert job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE
    assert job["file_sd_configs"][0]["files"][0].endswith("/" + PROMETHEUS_SERVICE_DISCOVERY_FILE)
