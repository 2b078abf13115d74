"""The PromQL in medmix's Grafana dashboards: list the queries, name the metrics they read.

The tests use this to hold the dashboards to what medmix exports: every metric a panel names
must be one `medmix.observability.metrics` defines, and must have samples in a real
Prometheus after a training run and a few serve requests.

    for q in dashboard_queries("dashboards/medmix-training.json"):
        print(q.panel, q.expr, metric_names(q.expr))
    render(q.expr)   # Grafana's $variables replaced, ready for Prometheus' HTTP API

`metric_names` is a small lexer, not a full PromQL parser: it knows strings, label matchers
`{...}`, ranges `[...]`, functions and aggregations `f(...)`, the grouping and matching
modifiers (`by (...)`, `on (...)`, `group_left (...)`, ...), `offset`, `@` and numbers, which
is all PromQL has that could look like a metric name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LIST_MODIFIERS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?(?:[smhdwy]|ms)?")
VARIABLE = re.compile(r"\$\{[^}]*\}|\$[a-zA-Z0-9_]+|\[\[[^\]]*\]\]")

# what `render` puts in place of Grafana's variables when a query goes to Prometheus directly
DEFAULT_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "interval": "1m",
                     "window": "1m"}


class PromQLError(ValueError):
    """A query this lexer cannot read (unterminated string or bracket, a __name__ regex)."""


@dataclass(frozen=True)
class DashboardQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    names: set[str] = set()
    text = VARIABLE.sub(" ", expr)
    i, n, depth = 0, len(text), 0
    while i < n:
        c = text[i]
        if c in "()":
            depth += 1 if c == "(" else -1
            if depth < 0:
                raise PromQLError(f"unbalanced ')' at {i} in {expr!r}")
            i += 1
        elif c.isspace() or c in "+-*/%^=!<>,@":
            i += 1
        elif c == "#":
            i = text.find("\n", i) if "\n" in text[i:] else n
        elif c in "\"'`":
            i = _skip_string(text, i)
        elif c == "{":
            end = _close(text, i, "{", "}")
            names |= _names_in_matchers(text[i + 1:end], expr)
            i = end + 1
        elif c == "[":
            i = _close(text, i, "[", "]") + 1
        elif c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = NUMBER.match(text, i)
            i = m.end() if m else i + 1
        else:
            m = IDENT.match(text, i)
            if not m:
                raise PromQLError(f"unexpected {c!r} at {i} in {expr!r}")
            word, i = m.group(0), m.end()
            j = _skip_space(text, i)
            if word.lower() in LABEL_LIST_MODIFIERS:
                if j < n and text[j] == "(":
                    i = _close(text, j, "(", ")") + 1
            elif word.lower() == "offset":
                m = NUMBER.match(text, j)
                i = m.end() if m else j
            elif word.lower() in KEYWORDS:
                pass
            elif j < n and text[j] == "(":
                pass  # a function or an aggregation operator
            elif word.lower() in AGGREGATIONS and IDENT.match(text, j) and \
                    IDENT.match(text, j).group(0).lower() in ("by", "without"):
                pass  # `sum by (le) (...)`: the grouping comes before the parenthesis
            else:
                names.add(word)
    if depth:
        raise PromQLError(f"unbalanced '(' in {expr!r}")
    return names


def _names_in_matchers(body: str, expr: str) -> set[str]:
    """A bare `{__name__="x"}` selects x; label names inside braces are not metrics."""
    out = set()
    for m in re.finditer(r"__name__\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`)", body):
        op, value = m.group(1), m.group(2)[1:-1]
        if op != "=":
            raise PromQLError(f"__name__{op} selects metrics by pattern; name them in {expr!r}")
        out.add(value)
    return out


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _skip_string(text: str, i: int) -> int:
    quote, j = text[i], i + 1
    while j < len(text):
        if text[j] == "\\" and quote != "`":
            j += 2
            continue
        if text[j] == quote:
            return j + 1
        j += 1
    raise PromQLError(f"unterminated string at {i} in {text!r}")


def _close(text: str, i: int, opening: str, closing: str) -> int:
    """Index of the bracket closing the one at i (strings inside are skipped)."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c in "\"'`":
            j = _skip_string(text, j)
            continue
        if c == opening:
            depth += 1
        elif c == closing:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise PromQLError(f"unbalanced {opening!r} at {i} in {text!r}")


def render(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace Grafana's `$x`, `${x}`, `${x:fmt}` and `[[x]]` so Prometheus can run the query.

    Unknown variables (dashboard filters such as `$run`) become `.*`, which is what Grafana
    sends for "All" in a regex matcher.
    """
    values = {**DEFAULT_VARIABLES, **(variables or {})}

    def sub(m: re.Match) -> str:
        token = m.group(0)
        name = token.strip("${}[]").split(":")[0]
        return values.get(name, ".*")

    return VARIABLE.sub(sub, expr)


def dashboard_queries(path: str | Path) -> list[DashboardQuery]:
    """Every Prometheus target of every panel (rows' nested panels included)."""
    path = Path(path)
    board = json.loads(path.read_text())
    out: list[DashboardQuery] = []
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" not in target:
                raise PromQLError(f"{path.name}: panel {panel.get('title')!r} target "
                                  f"{target.get('refId')!r} has no 'expr'")
            out.append(DashboardQuery(path.name, panel.get("title", ""), target.get("refId", ""), target["expr"]))
    return out


def dashboard_variable_queries(path: str | Path) -> list[DashboardQuery]:
    """The PromQL inside query variables (`label_values(metric, label)` and `query_result(...)`)."""
    path = Path(path)
    board = json.loads(path.read_text())
    out = []
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*(?:label_values|query_result)\((.*)\)\s*", q, re.S)
        if not m:
            raise PromQLError(f"{path.name}: variable {var.get('name')!r} query {q!r} is not "
                              "label_values(...) or query_result(...)")
        inner = m.group(1)
        if q.strip().startswith("label_values"):
            inner = inner.rsplit(",", 1)[0] if "," in inner else inner
        out.append(DashboardQuery(path.name, f"variable {var.get('name')}", "", inner))
    return out


def _panels(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(_panels(p.get("panels", [])))
    return out
