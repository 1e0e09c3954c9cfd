"""Reading the monitoring files and the `/metrics` text for the observability tests.

- `metric_names(expr)`: the metric names a PromQL expression selects, found
  without a PromQL parser: strings, label matchers, ranges, grouping clauses
  and Grafana variables are removed, and what is left that is not a function,
  keyword or number is a metric name.
- `exported_names(text)`: every name a Prometheus server would store from an
  exposition: sample names, and for a declared family with no samples yet
  (a labelled metric before its first observation) the names its samples
  will have.
- The dashboard's and the rules' expressions, with where each comes from.
"""

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "k8s" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
PROMETHEUS_RULE = MONITORING / "prometheus-rule.yaml"
RULES = MONITORING / "rules" / "loraplex-rules.yaml"
RULES_TEST = MONITORING / "rules" / "loraplex-rules.test.yaml"

# Values for Grafana's variables, so a dashboard query is plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": "loraplex", "$adapter": ".*"}

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_VARIABLE = re.compile(r"\$\{?\w+\}?")
# An identifier not glued to a word character, a dot or a digit before it
# (so the `e9` of `1e9` and the digits of `0.95` are not names).
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*$")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects (the names as stored, e.g. `x_bucket`)."""
    if (match := _LABEL_VALUES.match(expr)) is not None:
        expr = match.group(1)  # Grafana's label_values(selector, label): only the selector
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call is None and name.lower() not in KEYWORDS:
            names.add(name)
    return names


_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{|\s)")
_TYPE = re.compile(r"^# TYPE ([A-Za-z_:][\w:]*) (\w+)")
_SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}


def exported_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if (declared := _TYPE.match(line)) is not None:
            family, kind = declared.groups()
            names.update(family + suffix for suffix in _SUFFIXES.get(kind, ("",)))
        elif (sample := _SAMPLE.match(line)) is not None:
            names.add(sample.group(1))
    return names


def loraplex_part(text: str) -> str:
    """The HELP, TYPE and sample lines of the `loraplex_*` metrics, in order."""
    keep = re.compile(r"^(# (HELP|TYPE) )?loraplex_")
    return "".join(line + "\n" for line in text.splitlines() if keep.match(line))


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(board: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included; rows themselves left out."""
    panels = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def dashboard_expressions() -> dict[str, str]:
    """Where -> expression, for every panel query and query variable."""
    board = dashboard()
    exprs = {}
    for panel in dashboard_panels(board):
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} query {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            exprs[f"variable ${variable['name']}"] = variable["query"]["query"]
    return exprs


def as_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def rule_expressions() -> dict[str, str]:
    return {
        f"rule {rule.get('alert') or rule.get('record')}": rule["expr"]
        for group in rule_groups()
        for rule in group["rules"]
    }
